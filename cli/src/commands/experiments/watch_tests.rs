//! The live view of `faultctl watch`, line by line.

use super::super::fixture::{self, T0};
use super::*;

#[test]
fn exit_codes_follow_the_phase() {
    use pb::ExperimentPhase as P;
    assert_eq!(exit_code(P::Completed as i32), 0);
    assert_eq!(exit_code(P::Aborted as i32), 3);
    assert_eq!(exit_code(P::Failed as i32), 4);
    assert_eq!(exit_code(P::Interrupted as i32), 4);
    let with = |phase: P, verdict: &str| pb::Experiment {
        phase: phase as i32,
        hypothesis: Some(pb::Hypothesis {
            verdict: verdict.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(exit_code_of(&with(P::Completed, "passed")), 0);
    assert_eq!(exit_code_of(&with(P::Completed, "failed")), 5);
    assert_eq!(exit_code_of(&with(P::Aborted, "failed")), 3);
    assert_eq!(exit_code_of(&with(P::Failed, "failed")), 4);
    assert!(hypothesis_pending(&with(P::Completed, "pending")));
}

#[test]
fn plain_lines_carry_phase_time_targets_and_guards() {
    let ev = fixture::event(fixture::running(), T0 + 3_500, "guard error-rate evaluated");
    assert_eq!(
        line(&ev).expect("line"),
        "22:13:23.500  running      elapsed 3s of 1m (56s left)  faults 4: 4 applied, \
         0 reverted, 0 failed  guards error-rate=0.0200 ok  | guard error-rate evaluated"
    );
    let text = line(&fixture::event(fixture::aborted(), T0 + 5_000, "")).expect("line");
    assert!(text.contains("aborted      ran 4s 83ms of 1m"), "{text}");
    assert!(text.contains("4 reverted"), "{text}");
    assert!(text.contains("error-rate=0.9000 BREACHED"), "{text}");
    assert!(!text.contains('|'), "{text}");
}

#[test]
fn block_lists_targets_and_guards() {
    let text = block(&fixture::event(
        fixture::running(),
        T0 + 3_000,
        "fault applied",
    ))
    .expect("block");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "experiment checkout-loss  RUNNING  elapsed 3s of 1m (57s left)"
    );
    assert_eq!(
        lines[1],
        "targets    2 agent(s), 4 fault(s): 4 applied, 0 reverted, 0 failed, 0 pending"
    );
    assert_eq!(lines.len(), 2 + 4 + 1 + 1, "{text}");
    assert!(lines[2].starts_with("  node-a "), "{text}");
    assert!(lines[2].ends_with(" applied"), "{text}");
    assert!(
        lines[6].starts_with("guard      error-rate           0.0200 ok"),
        "{text}"
    );
    assert_eq!(lines[7], "event      22:13:23.000  fault applied");
}

#[test]
fn block_names_pod_targets_with_their_node() {
    let text = block(&fixture::event(fixture::pods_running(), T0 + 3_000, "")).expect("block");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "targets    3 pod(s) on 2 node(s), 3 fault(s): 3 applied, 0 reverted, 0 failed, 0 \
         pending"
    );
    assert_eq!(
        lines[2],
        "  shop/checkout-abcde on node-a checkout-pods-shop-checkout-abcde-0      applied"
    );
    assert!(
        outcome(&fixture::pods_running()).contains("\ntargets: 3 pod(s) on 2 node(s), 3 fault(s)"),
        "{}",
        outcome(&fixture::pods_running())
    );
}

#[test]
fn outcome_gives_verdict_abort_latency_and_the_report_command() {
    let text = outcome(&fixture::aborted());
    assert_eq!(
        text,
        "experiment checkout-loss aborted after 4s 83ms: guard error-rate breached: 0.9 \
         above 0.05 for 2s\n\
         targets: 2 agent(s), 4 fault(s): 4 applied, 4 reverted, 0 failed, 0 pending\n\
         abort: guard breach at 22:13:24.000, last revert acknowledged at 22:13:24.083: \
         abort latency 83 ms\n\
         report: faultctl report checkout-loss\n"
    );
}

#[test]
fn event_fields_win_over_local_arithmetic() {
    let mut ev = fixture::event(fixture::running(), T0 + 3_000, "");
    ev.elapsed_ms = 10_000;
    ev.remaining_ms = 50_000;
    ev.latest_guards = vec![pb::GuardSample {
        guard: "error-rate".into(),
        at_unix_ms: T0 + 2_900,
        value: f64::NAN,
        outcome: "no_data".into(),
        detail: "no data: the query returned an empty vector".into(),
        ..Default::default()
    }];
    let text = line(&ev).expect("line");
    assert!(text.contains("elapsed 10s of 1m (50s left)"), "{text}");
    assert!(text.contains("guards error-rate=no data"), "{text}");
    assert!(line(&pb::ExperimentEvent::default()).is_none());
}

#[test]
fn abort_record_of_the_coordinator_is_preferred() {
    let mut e = fixture::aborted();
    e.abort = Some(pb::AbortInfo {
        trigger: "guard".into(),
        guard: "error-rate".into(),
        guard_type: "prometheus".into(),
        observed_value: 0.93,
        triggered_unix_ms: T0 + 4_000,
        sent_unix_ms: T0 + 4_002,
        last_revert_ack_unix_ms: T0 + 4_071,
        latency_ms: 71,
        ..Default::default()
    });
    let text = outcome(&e);
    assert!(
        text.contains(
            "abort: guard error-rate (prometheus) breached with 0.9300; triggered \
             22:13:24.000; reverts sent 22:13:24.002; last revert acknowledged \
             22:13:24.071; abort latency 71 ms\n"
        ),
        "{text}"
    );
    e.abort = Some(pb::AbortInfo {
        trigger: "api".into(),
        by: "operator/operator".into(),
        reason: "customer impact".into(),
        triggered_unix_ms: T0 + 4_000,
        unacknowledged: 1,
        ..Default::default()
    });
    let text = outcome(&e);
    assert!(
        text.contains(
            "abort: api by operator/operator (customer impact); triggered 22:13:24.000; \
             reverts outstanding; 1 revert(s) not acknowledged"
        ),
        "{text}"
    );
}

#[test]
fn style_follows_output_and_terminal() {
    assert_eq!(Style::pick(OutputFormat::Table, true), Style::Block);
    assert_eq!(Style::pick(OutputFormat::Table, false), Style::Lines);
    assert_eq!(Style::pick(OutputFormat::Json, true), Style::Json);
}
