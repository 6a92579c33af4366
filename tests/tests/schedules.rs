//! Schedules end to end with the real binaries (root: the agents run real cpu workers): a
//! `@every 5s` schedule fires on time, Forbid holds while a run outlasts the interval, suspend
//! stops it, a SIGKILLed coordinator keeps it and runs the fire it missed once; a scheduled
//! workflow waiting for approval forbids the next fire and is cancelled from that state;
//! Replace and Allow.

use std::time::{Duration, Instant};

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::continuous::*;
use faultline_tests::stack::Stack;
use faultline_tests::*;

/// The tests here stress the CPU and time runs; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn schedule_doc(name: &str, agent: &str, duration: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1
kind: Schedule
metadata: {{name: {name}}}
spec:
  schedule: '@every 5s'
  concurrencyPolicy: Forbid
  experiment:
    duration: {duration}
    targets: {{agents: {{names: [{agent}]}}, mode: all}}
    faults: [{{kind: cpu, load: 10, workers: 1}}]
"
    )
}

/// Start and end of experiment `name` (ended: when its last revert was acknowledged).
async fn span(stack: &Stack, name: &str) -> (i64, i64) {
    let e = stack.wait_all_reverted(name, Duration::from_secs(15)).await;
    let ended = e
        .targets
        .iter()
        .map(|t| t.reverted_unix_ms)
        .max()
        .unwrap_or(0);
    (e.started_unix_ms, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_5s_schedule_fires_forbids_overlap_suspends_and_survives_a_coordinator_sigkill() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["sch-a", "sch-b"], Duration::from_secs(5));
    stack.spawn_agent("sch-a", "");
    stack.spawn_agent("sch-b", "");
    // Two schedules in one file: `fast` runs 2 s of every 5 s; `slow` runs 7 s, longer than
    // its interval, so Forbid must skip every other fire.
    let file = write(
        &stack,
        "schedules.yaml",
        &format!(
            "{}---\n{}",
            schedule_doc("fast", "sch-a", "2s"),
            schedule_doc("slow", "sch-b", "7s")
        ),
    );
    let applied_at = Instant::now();
    let out = ctl_ok(&stack, &["apply", "-f", &file]);
    assert!(
        out.contains("schedule fast applied") && out.contains("schedule slow applied"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(18).saturating_sub(applied_at.elapsed())).await;

    // At least 3 runs of `fast` in 18 s, each started within a second of its fire time.
    let fast = schedule(&stack, "fast").await;
    assert!(
        fast.runs_total >= 3,
        "fast ran {} times: {:?}",
        fast.runs_total,
        fast.runs
    );
    for r in &fast.runs {
        let late = r.started_unix_ms - r.fire_unix_ms;
        eprintln!("fast: run {} started {late} ms after its fire time", r.name);
        assert!(
            (0..1000).contains(&late),
            "run {} started {late} ms late",
            r.name
        );
        assert!(
            r.name.starts_with("fast-") && r.name.ends_with('z'),
            "{}",
            r.name
        );
    }
    // `slow`: the fire during a run was skipped as forbidden and recorded; its runs never
    // overlapped.
    let slow = schedule(&stack, "slow").await;
    assert!(
        slow.skipped
            .iter()
            .any(|k| k.reason.contains("forbidden")
                && k.reason.contains("concurrencyPolicy: Forbid")),
        "no forbidden fire recorded: {:?}",
        slow.skipped
    );
    assert!(slow.runs.len() >= 2, "{:?}", slow.runs);
    let mut previous_end = 0;
    for r in &slow.runs {
        let (start, end) = span(&stack, &r.name).await;
        assert!(
            start >= previous_end,
            "run {} started before the previous run ended",
            r.name
        );
        previous_end = end;
    }
    let (ok, out) = ctl(&stack, "viewer", &["describe", "schedule", "slow"]);
    assert!(ok && out.contains("forbidden"), "{out}");

    // Suspend stops it.
    let out = ctl_ok(&stack, &["schedule", "suspend", "fast"]);
    assert!(out.contains("suspended"), "{out}");
    let before = schedule(&stack, "fast").await.runs_total;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let fast = schedule(&stack, "fast").await;
    assert_eq!(
        fast.runs_total, before,
        "a suspended schedule fired: {:?}",
        fast.runs
    );
    assert!(fast.suspended && fast.next_fire_unix_ms == 0);

    // A viewer may read but not change schedules.
    let (ok, out) = ctl(&stack, "viewer", &["schedule", "resume", "fast"]);
    assert!(!ok && out.contains("operator"), "{out}");

    // Restart: `slow` goes, `fast` resumes; right after one of its runs ends the coordinator
    // is SIGKILLed and stays down across a fire time.
    ctl_ok(&stack, &["delete", "schedule", "slow"]);
    ctl_ok(&stack, &["schedule", "resume", "fast"]);
    let last = wait_for(
        "a run of fast after the resume",
        Duration::from_secs(12),
        || async {
            let s = schedule(&stack, "fast").await;
            (s.runs_total > before)
                .then(|| s.runs.last().cloned())
                .flatten()
        },
    )
    .await;
    span(&stack, &last.name).await;
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    let killed_at = now_unix_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.start_coordinator();
    let restarted_at = now_unix_ms();
    let total = schedule(&stack, "fast").await.runs_total;
    let s = wait_for(
        "fast fires after the restart",
        Duration::from_secs(12),
        || async {
            let s = schedule(&stack, "fast").await;
            (s.runs_total > total
                && s.runs
                    .iter()
                    .any(|r| r.started_unix_ms > restarted_at + 3000))
            .then_some(s)
        },
    )
    .await;
    // The fire time missed while down ran once, late, right after the restart.
    let missed: Vec<&pb::ScheduleRun> = s
        .runs
        .iter()
        .filter(|r| r.fire_unix_ms > killed_at && r.fire_unix_ms < restarted_at)
        .collect();
    assert_eq!(
        missed.len(),
        1,
        "runs: {:?}, skipped: {:?}",
        s.runs,
        s.skipped
    );
    eprintln!(
        "fire missed while the coordinator was down: ran {} ms after its fire time",
        missed[0].started_unix_ms - missed[0].fire_unix_ms
    );
    assert!(!s.suspended);
    let (ok, out) = ctl(&stack, "viewer", &["get", "schedules"]);
    assert!(ok && out.contains("fast") && !out.contains("slow"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_workflow_waiting_for_approval_forbids_the_next_and_can_be_cancelled() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["sw-a", "sw-b"], Duration::from_secs(5));
    stack.spawn_agent("sw-a", "");
    stack.spawn_agent("sw-b", "");
    // Runs a workflow that waits for an approval; fires only when triggered by hand here.
    let doc = "apiVersion: faultline.dev/v1
kind: Schedule
metadata: {name: nightly}
spec:
  schedule: '0 3 * * *'
  timeZone: Europe/Berlin
  workflow:
    steps:
      - name: gate
        suspend: {approval: true}
      - name: load
        experiment: {duration: 30s, targets: {mode: all}, faults: [{kind: cpu, load: 10, workers: 1}]}
";
    let file = write(&stack, "nightly.yaml", doc);
    let out = ctl_ok(&stack, &["apply", "-f", &file]);
    assert!(out.contains("0 3 * * * (Europe/Berlin)"), "{out}");
    let out = ctl_ok(&stack, &["schedule", "trigger", "nightly"]);
    let run = out
        .split_whitespace()
        .find(|w| w.starts_with("nightly-"))
        .unwrap_or_else(|| panic!("no run named in {out}"))
        .to_string();
    let w = workflow(&stack, &run).await;
    assert_eq!(w.schedule, "nightly");
    assert_eq!(step(&w, "gate").state, "awaiting-approval");
    // A second trigger while the first run waits: Forbid skips it and says why.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = ctl_ok(&stack, &["schedule", "trigger", "nightly"]);
    assert!(
        out.contains("no run started") && out.contains(&run),
        "{out}"
    );
    // The run waiting for approval is cancelled; nothing was injected.
    let out = ctl_ok(&stack, &["abort", "workflow", &run]);
    assert!(out.contains("is aborted"), "{out}");
    let w = workflow(&stack, &run).await;
    assert_eq!(step(&w, "gate").state, "aborted");
    assert_eq!(step(&w, "load").state, "skipped");
    let s = schedule(&stack, "nightly").await;
    assert_eq!(s.runs.len(), 1);
    assert_eq!(s.runs[0].phase, "aborted");
    // Deleting the schedule keeps the run's record; approving an ended run is refused.
    let (ok, out) = ctl(&stack, "operator", &["workflow", "approve", &run, "gate"]);
    assert!(!ok && out.contains("ended"), "{out}");
    // Every mutation is in the audit log under the operator's identity, refusals included.
    let (ok, audit) = ctl(&stack, "viewer", &["-o", "json", "audit"]);
    assert!(ok, "{audit}");
    let entries: serde_json::Value = serde_json::from_str(&audit).expect("audit JSON");
    let has = |action: &str, allowed: bool| {
        entries.as_array().expect("array").iter().any(|e| {
            e["action"] == action
                && e["allowed"] == allowed
                && e["identity"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("operator/"))
        })
    };
    for action in [
        "Schedules.Apply",
        "Schedules.Trigger",
        "Workflows.Create",
        "Workflows.Abort",
    ] {
        assert!(has(action, true), "no {action} entry in {audit}");
    }
    assert!(
        has("Workflows.Approve", false),
        "no refused approval in {audit}"
    );

    // Parallel steps are planned together: each fits its blast radius alone, together they
    // do not, so neither starts and the refusal says why.
    let doc = "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {name: wide}
spec:
  steps:
    - name: both
      parallel:
        - name: one
          experiment: {duration: 30s, targets: {agents: {names: [sw-a]}, mode: all}, blastRadius: {maxTargets: 1}, faults: [{kind: cpu, load: 10, workers: 1}]}
        - name: two
          experiment: {duration: 30s, targets: {agents: {names: [sw-b]}, mode: all}, faults: [{kind: cpu, load: 10, workers: 1}]}
";
    let file = write(&stack, "wide.yaml", doc);
    ctl_ok(&stack, &["apply", "-f", &file]);
    let w = workflow(&stack, "wide").await;
    assert_eq!(w.phase, "failed", "{w:?}");
    let one = step(&w, "one");
    assert!(
        one.message.contains(
            "together its steps select 2 agent(s), more than step one's blastRadius.maxTargets 1"
        ),
        "{one:?}"
    );
    let mut client = stack.experiments("viewer").await;
    let listed = client
        .list(pb::ListExperimentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.experiments.is_empty(), "{:?}", listed.experiments);
    for (agent, workers) in all_workers(&stack) {
        assert!(workers.is_empty(), "{agent}: {workers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_aborts_the_run_in_progress_and_allow_runs_beside_it() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["rp-a", "rp-b"], Duration::from_secs(5));
    stack.spawn_agent("rp-a", "");
    stack.spawn_agent("rp-b", "");
    let doc = |policy: &str| {
        format!(
            "apiVersion: faultline.dev/v1
kind: Schedule
metadata: {{name: rp}}
spec:
  schedule: '@yearly'
  concurrencyPolicy: {policy}
  experiment: {{duration: 60s, targets: {{mode: one}}, faults: {CPU}}}
"
        )
    };
    let file = write(&stack, "rp.yaml", &doc("Replace"));
    ctl_ok(&stack, &["apply", "-f", &file]);
    let first = ctl_ok(&stack, &["schedule", "trigger", "rp"]);
    assert!(first.contains("run rp-"), "{first}");
    let first_run = schedule(&stack, "rp").await.runs[0].name.clone();
    stack
        .wait_phase(&first_run, Phase::Running, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ctl_ok(&stack, &["schedule", "trigger", "rp"]);
    let s = schedule(&stack, "rp").await;
    assert_eq!(s.runs.len(), 2, "{:?}", s.runs);
    let replaced = stack
        .wait_all_reverted(&first_run, Duration::from_secs(5))
        .await;
    assert_eq!(replaced.phase, Phase::Aborted as i32);
    assert!(
        replaced
            .verdict_reason
            .contains("replaced by the next run of schedule rp"),
        "{}",
        replaced.verdict_reason
    );
    let second = s.runs[1].name.clone();
    stack
        .wait_phase(&second, Phase::Running, Duration::from_secs(5))
        .await;
    // Allow: a third run beside the second, on the agent the second does not hold.
    std::fs::write(&file, doc("Allow")).expect("rewrite");
    ctl_ok(&stack, &["apply", "-f", &file]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ctl_ok(&stack, &["schedule", "trigger", "rp"]);
    let s = schedule(&stack, "rp").await;
    assert_eq!(s.runs.len(), 3, "{:?}", s.runs);
    assert_eq!(s.runs[1].phase, "running");
    ctl_ok(&stack, &["abort", &second]);
    ctl_ok(&stack, &["abort", "experiment", &s.runs[2].name]);
}
