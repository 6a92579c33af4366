//! The step state machine: order, parallel, suspend, approval, cascading deadlines, failure
//! policy and abort from every state.

use std::time::Duration;

use super::progress::{Action, Progress, StepState, WorkflowPhase};
use super::{parse_workflow, WorkflowSpec};
use crate::experiment::Phase;

const EXP: &str = "{duration: 5s, targets: {mode: all}, faults: [{kind: cpu, load: 50}]}";

fn spec(on_failure: &str, deadline: &str) -> WorkflowSpec {
    let doc = format!(
        "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {{name: gd}}
spec:
  onStepFailure: {on_failure}
  {deadline}
  steps:
    - name: first
      experiment: {EXP}
      deadline: 20s
    - name: both
      parallel:
        - name: a
          experiment: {EXP}
        - name: b
          experiment: {EXP}
    - name: pause
      suspend: {{duration: 5s}}
    - name: gate
      suspend: {{approval: true}}
"
    );
    parse_workflow(&doc, Duration::from_secs(600)).expect("valid workflow")
}

fn started(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartExperiment { run, .. } => Some(run.clone()),
            _ => None,
        })
        .collect()
}

fn stopped(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StopExperiment { run, .. } => Some(run.clone()),
            _ => None,
        })
        .collect()
}

fn finished(actions: &[Action]) -> Option<WorkflowPhase> {
    actions.iter().find_map(|a| match a {
        Action::Finished { phase, .. } => Some(*phase),
        _ => None,
    })
}

fn state(p: &Progress, step: &str) -> StepState {
    p.step(step).expect("step").state
}

#[test]
fn steps_run_in_order_parallel_together_then_suspend_then_approval() {
    let s = spec("abort", "");
    let mut p = Progress::new(&s);
    let a = p.start(&s, 1_000);
    assert_eq!(started(&a), vec!["gd-first"]);
    // The step deadline is its own (20 s from its start).
    assert_eq!(p.step("first").expect("first").deadline_unix_ms, 21_000);
    assert_eq!(state(&p, "a"), StepState::Waiting);
    let a = p.experiment_ended(&s, "first", Phase::Completed, "done", 6_000);
    assert_eq!(started(&a), vec!["gd-a", "gd-b"]);
    // One parallel step done: the other still runs, nothing new starts.
    let a = p.experiment_ended(&s, "a", Phase::Completed, "done", 11_000);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(state(&p, "both"), StepState::Running);
    let a = p.experiment_ended(&s, "b", Phase::Completed, "done", 12_000);
    assert!(started(&a).is_empty());
    assert_eq!(state(&p, "both"), StepState::Succeeded);
    assert_eq!(state(&p, "pause"), StepState::Running);
    // The suspend holds until its 5 s are over.
    assert!(p.tick(&s, 16_999).is_empty());
    p.tick(&s, 17_000);
    assert_eq!(state(&p, "pause"), StepState::Succeeded);
    assert_eq!(state(&p, "gate"), StepState::AwaitingApproval);
    // Waiting for approval is not a deadline: ticks change nothing.
    assert!(p.tick(&s, 500_000).is_empty());
    assert!(p.approve(&s, "first", "operator/x", 500_001).is_err());
    let a = p
        .approve(&s, "gate", "operator/x", 500_001)
        .expect("approve");
    assert_eq!(finished(&a), Some(WorkflowPhase::Succeeded));
    assert_eq!(p.phase, WorkflowPhase::Succeeded);
    let starts: Vec<i64> = ["first", "a", "pause", "gate"]
        .iter()
        .map(|n| p.step(n).expect("step").started_unix_ms)
        .collect();
    assert_eq!(starts, vec![1_000, 6_000, 12_000, 17_000]);
}

#[test]
fn a_step_deadline_stops_its_experiment() {
    let s = spec("continue", "");
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    let a = p.tick(&s, 20_000);
    assert_eq!(stopped(&a), vec!["gd-first"]);
    assert_eq!(state(&p, "first"), StepState::Failed);
    assert!(p.step("first").expect("first").message.contains("deadline"));
    // onStepFailure: continue: the next step starts at once.
    assert_eq!(started(&a), vec!["gd-a", "gd-b"]);
    // The aborted experiment's end arrives later and changes nothing.
    let a = p.experiment_ended(&s, "first", Phase::Aborted, "deadline", 20_300);
    assert!(a.is_empty());
    assert_eq!(state(&p, "first"), StepState::Failed);
}

#[test]
fn the_workflow_deadline_cascades_to_steps_and_ends_it() {
    let s = spec("abort", "deadline: 8s");
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    // The step's own deadline (20 s) is later than the workflow's: the workflow's wins.
    assert_eq!(p.step("first").expect("first").deadline_unix_ms, 8_000);
    p.experiment_ended(&s, "first", Phase::Completed, "done", 5_000);
    assert_eq!(p.step("a").expect("a").deadline_unix_ms, 8_000);
    let a = p.tick(&s, 8_000);
    assert_eq!(stopped(&a), vec!["gd-a", "gd-b"]);
    assert_eq!(finished(&a), Some(WorkflowPhase::Failed));
    assert_eq!(state(&p, "pause"), StepState::Skipped);
    assert!(p.reason.contains("deadline"));
}

#[test]
fn a_failure_under_abort_stops_the_parallel_siblings() {
    let s = spec("abort", "");
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    p.experiment_ended(&s, "first", Phase::Completed, "done", 1_000);
    let a = p.experiment_ended(&s, "a", Phase::Failed, "target failed", 2_000);
    assert_eq!(stopped(&a), vec!["gd-b"]);
    assert_eq!(finished(&a), Some(WorkflowPhase::Failed));
    assert_eq!(state(&p, "gate"), StepState::Skipped);
    assert!(p.reason.contains("step a failed"), "{}", p.reason);
}

#[test]
fn a_failure_under_continue_goes_on_and_fails_at_the_end() {
    let s = spec("continue", "");
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    let a = p.start_failed(&s, "first", "refused by policy", 10);
    assert_eq!(started(&a), vec!["gd-a", "gd-b"]);
    p.experiment_ended(&s, "a", Phase::Completed, "", 20);
    p.experiment_ended(&s, "b", Phase::Completed, "", 20);
    p.tick(&s, 6_000);
    let a = p.approve(&s, "gate", "admin/x", 7_000).expect("approve");
    assert_eq!(finished(&a), Some(WorkflowPhase::Failed));
    assert!(p.reason.contains("first"), "{}", p.reason);
}

#[test]
fn abort_leaves_every_state() {
    let s = spec("abort", "");
    // While an experiment runs: it is stopped.
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    let a = p.abort("by operator", 1);
    assert_eq!(stopped(&a), vec!["gd-first"]);
    assert_eq!(finished(&a), Some(WorkflowPhase::Aborted));
    assert_eq!(state(&p, "first"), StepState::Aborted);
    assert_eq!(state(&p, "gate"), StepState::Skipped);
    assert!(p.abort("again", 2).is_empty());
    // While waiting for an approval.
    let mut p = Progress::new(&s);
    p.start(&s, 0);
    p.experiment_ended(&s, "first", Phase::Completed, "", 1);
    p.experiment_ended(&s, "a", Phase::Completed, "", 1);
    p.experiment_ended(&s, "b", Phase::Completed, "", 1);
    p.tick(&s, 10_000);
    assert_eq!(state(&p, "gate"), StepState::AwaitingApproval);
    let a = p.abort("no", 10_001);
    assert!(stopped(&a).is_empty());
    assert_eq!(state(&p, "gate"), StepState::Aborted);
    assert_eq!(p.phase, WorkflowPhase::Aborted);
    // Before it started.
    let mut p = Progress::new(&s);
    assert_eq!(finished(&p.abort("early", 0)), Some(WorkflowPhase::Aborted));
    assert!(p.start(&s, 1).is_empty());
}

#[test]
fn documents_are_checked_with_field_paths() {
    let max = Duration::from_secs(600);
    let doc = |steps: &str| {
        format!("apiVersion: faultline.dev/v1\nkind: Workflow\nmetadata: {{name: gd}}\nspec:\n  steps:\n{steps}")
    };
    let e = |steps: &str| {
        parse_workflow(&doc(steps), max)
            .expect_err(steps)
            .to_string()
    };
    assert_eq!(
        e("    - name: x\n"),
        "spec.steps[0]: give exactly one of experiment, parallel or suspend"
    );
    assert!(e(&format!(
        "    - name: x\n      experiment: {EXP}\n    - name: x\n      suspend: {{duration: 1s}}\n"
    ))
    .starts_with("spec.steps[1].name: \"x\" is already a step name"));
    assert!(
        e("    - name: p\n      parallel:\n        - name: q\n          parallel: []\n")
            .starts_with("spec.steps[0].parallel[0].parallel: parallel steps cannot be nested")
    );
    assert!(e(&format!(
        "    - name: x\n      experiment: {EXP}\n      deadline: 0s\n"
    ))
    .starts_with("spec.steps[0].deadline: 0s is outside the allowed range 1s..="));
    let bad = EXP.replace("load: 50", "load: 0");
    assert!(e(&format!("    - name: x\n      experiment: {bad}\n"))
        .starts_with("spec.steps[0].experiment.faults[0].load:"));
    assert!(e("    - name: x\n      suspend: {approval: false}\n")
        .starts_with("spec.steps[0].suspend: give either duration"));
    assert!(e("    - name: x\n      wait: 1s\n").contains("unknown field `wait`"));
}

#[test]
fn the_documented_examples_are_valid() {
    let max = Duration::from_secs(3600);
    let w = parse_workflow(
        include_str!("../../../docs/examples/workflow-gameday.yaml"),
        max,
    )
    .expect("docs/examples/workflow-gameday.yaml");
    assert_eq!(w.steps.len(), 6);
    let s = crate::schedule::parse_schedule(
        include_str!("../../../docs/examples/schedule-nightly.yaml"),
        max,
    )
    .expect("docs/examples/schedule-nightly.yaml");
    assert_eq!(s.time_zone.name(), "Europe/Berlin");
}
