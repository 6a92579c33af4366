//! Workflows end to end with the real binaries (root: the agents run real cpu workers): serial,
//! parallel, suspend and approval steps run in order, an instant (kill) step does not stall, a
//! step deadline stops its experiment, aborting the workflow reverts everything within a
//! second, and a running workflow is resumed after a coordinator SIGKILL.

use std::time::{Duration, Instant};

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::continuous::*;
use faultline_tests::stack::Stack;
use faultline_tests::*;

/// The tests here stress the CPU and time runs; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn workflow_doc(victim: u32) -> String {
    format!(
        "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {{name: gd}}
spec:
  onStepFailure: continue
  steps:
    - name: warm
      experiment: {{duration: 2s, targets: {{agents: {{names: [wf-a]}}, mode: all}}, faults: {CPU}}}
    - name: both
      parallel:
        - name: pa
          experiment: {{duration: 2s, targets: {{agents: {{names: [wf-a]}}, mode: all}}, faults: {CPU}}}
        - name: pb
          experiment: {{duration: 2s, targets: {{agents: {{names: [wf-b]}}, mode: all}}, faults: {CPU}}}
    - name: kill
      experiment:
        duration: 60s
        targets: {{agents: {{names: [wf-a]}}, mode: all}}
        faults: [{{kind: process, action: kill, signal: SIGKILL, selector: {{pid: {victim}}}}}]
    - name: pause
      suspend: {{duration: 2s}}
    - name: gate
      suspend: {{approval: true}}
    - name: slow
      deadline: 3s
      experiment: {{duration: 60s, targets: {{mode: all}}, faults: {CPU}}}
    - name: hold
      suspend: {{approval: true}}
    - name: final
      experiment: {{duration: 60s, targets: {{mode: all}}, faults: {CPU}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_in_order_deadline_stops_a_step_and_abort_reverts_within_a_second() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["wf-a", "wf-b"], Duration::from_secs(5));
    stack.spawn_agent("wf-a", "");
    stack.spawn_agent("wf-b", "");
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let victim_pid = victim.id();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let file = write(&stack, "workflow.yaml", &workflow_doc(victim_pid));
    let out = ctl_ok(&stack, &["apply", "-f", &file]);
    assert!(out.contains("workflow gd is running"), "{out}");

    // Serial, parallel, an instant kill, a timed suspend, then the approval gate.
    let started = Instant::now();
    let w = loop {
        let w = workflow(&stack, "gd").await;
        if step(&w, "gate").state == "awaiting-approval" {
            break w;
        }
        if w.phase == "failed" || started.elapsed() > Duration::from_secs(40) {
            let kill = stack.get("gd-kill").await;
            panic!(
                "gd did not reach its gate: {:#?}\ngd-kill: {:?} {:?} {:?}",
                w.steps, kill.phase, kill.targets, kill.log
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The kill happened, and its step did not wait out the experiment's 60 s.
    let status = victim.try_wait().expect("wait sleep");
    assert!(
        status.is_some(),
        "the kill step did not kill pid {victim_pid}"
    );
    let _reap = Reap(victim);
    let (warm, pa, pb, both, kill, pause, gate) = (
        step(&w, "warm"),
        step(&w, "pa"),
        step(&w, "pb"),
        step(&w, "both"),
        step(&w, "kill"),
        step(&w, "pause"),
        step(&w, "gate"),
    );
    for s in [warm, pa, pb, both, kill, pause] {
        assert_eq!(s.state, "succeeded", "{s:?}");
    }
    assert!(warm.ended_unix_ms <= pa.started_unix_ms, "{warm:?} {pa:?}");
    assert!(
        (pa.started_unix_ms - pb.started_unix_ms).abs() < 500,
        "{pa:?} {pb:?}"
    );
    assert!(both.ended_unix_ms >= pa.ended_unix_ms.max(pb.ended_unix_ms));
    assert!(both.ended_unix_ms <= kill.started_unix_ms);
    let kill_took = kill.ended_unix_ms - kill.started_unix_ms;
    eprintln!("instant kill step took {kill_took} ms (its experiment's duration: 60 s)");
    assert!(kill_took < 5000, "{kill:?}");
    assert!(kill.ended_unix_ms <= pause.started_unix_ms);
    assert!(
        pause.ended_unix_ms - pause.started_unix_ms >= 2000,
        "{pause:?}"
    );
    assert!(pause.ended_unix_ms <= gate.started_unix_ms);
    let kill_exp = stack.get("gd-kill").await;
    assert_eq!(
        kill_exp.phase,
        Phase::Completed as i32,
        "{}",
        kill_exp.verdict_reason
    );
    // Approval needs an operator.
    let (ok, out) = ctl(&stack, "viewer", &["workflow", "approve", "gd", "gate"]);
    assert!(!ok, "{out}");
    ctl_ok(&stack, &["workflow", "approve", "gd", "gate"]);

    // The slow step's 3 s deadline stops its 60 s experiment: aborted, reverted, no worker.
    stack
        .wait_phase("gd-slow", Phase::Running, Duration::from_secs(10))
        .await;
    let slow = stack
        .wait_phase("gd-slow", Phase::Aborted, Duration::from_secs(10))
        .await;
    assert!(
        slow.verdict_reason.contains("deadline"),
        "{}",
        slow.verdict_reason
    );
    let ran = slow.ended_unix_ms - slow.started_unix_ms;
    assert!((2500..5000).contains(&ran), "gd-slow ran {ran} ms");
    stack
        .wait_all_reverted("gd-slow", Duration::from_secs(5))
        .await;
    let w = wait_for("gd waits at hold", Duration::from_secs(10), || async {
        let w = workflow(&stack, "gd").await;
        (step(&w, "hold").state == "awaiting-approval").then_some(w)
    })
    .await;
    assert_eq!(step(&w, "slow").state, "failed");
    assert!(
        step(&w, "slow").message.contains("deadline"),
        "{:?}",
        step(&w, "slow")
    );
    for (agent, workers) in all_workers(&stack) {
        assert!(workers.is_empty(), "{agent} still has workers {workers:?}");
    }

    // Deleting a running experiment is refused; deleting an ended one works.
    ctl_ok(&stack, &["workflow", "approve", "gd", "hold"]);
    stack
        .wait_phase("gd-final", Phase::Running, Duration::from_secs(10))
        .await;
    wait_for("workers on both agents", Duration::from_secs(5), || async {
        let w = all_workers(&stack);
        w.iter().all(|(_, w)| !w.is_empty()).then_some(())
    })
    .await;
    let (ok, out) = ctl(&stack, "operator", &["delete", "experiment", "gd-final"]);
    assert!(
        !ok && out.contains("only an experiment that has ended"),
        "{out}"
    );

    // Abort the workflow: every worker on every agent is gone within a second.
    let asked = Instant::now();
    let out = ctl_ok(
        &stack,
        &["abort", "workflow", "gd", "--reason", "game over"],
    );
    let answered = asked.elapsed();
    let gone = loop {
        if all_workers(&stack).iter().all(|(_, w)| w.is_empty()) {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "workers left 3 s after the abort: {:?}",
            all_workers(&stack)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "faultctl abort workflow: answered in {} ms, every worker gone {} ms after it was run",
        answered.as_millis(),
        gone.as_millis()
    );
    assert!(out.contains("workflow gd is aborted"), "{out}");
    assert!(
        gone <= Duration::from_secs(1),
        "workers gone after {gone:?}"
    );
    let fin = stack
        .wait_all_reverted("gd-final", Duration::from_secs(5))
        .await;
    assert_eq!(fin.phase, Phase::Aborted as i32);
    assert!(
        fin.verdict_reason.contains("game over"),
        "{}",
        fin.verdict_reason
    );
    let w = workflow(&stack, "gd").await;
    assert_eq!(w.phase, "aborted");
    assert_eq!(step(&w, "final").state, "aborted");
    assert!(workers_of_agent(&stack, "wf-a").is_empty());

    // An ended workflow can be deleted, with its experiments' records.
    ctl_ok(&stack, &["delete", "workflow", "gd"]);
    let mut client = stack.experiments("viewer").await;
    let gone = client
        .get(pb::GetExperimentRequest {
            name: "gd-warm".into(),
        })
        .await
        .expect_err("gd-warm deleted with its workflow");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_workflow_is_resumed_after_a_coordinator_sigkill() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["rs-a"], Duration::from_secs(5));
    stack.spawn_agent("rs-a", "");
    let doc = format!(
        "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {{name: resumed}}
spec:
  steps:
    - name: wait
      suspend: {{duration: 4s}}
    - name: after
      experiment: {{duration: 2s, targets: {{mode: all}}, faults: {CPU}}}
"
    );
    let file = write(&stack, "resumed.yaml", &doc);
    ctl_ok(&stack, &["apply", "-f", &file]);
    let before = workflow(&stack, "resumed").await;
    assert_eq!(step(&before, "wait").state, "running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.start_coordinator();
    let w = wait_for("resumed succeeds", Duration::from_secs(20), || async {
        let w = workflow(&stack, "resumed").await;
        assert!(w.phase != "failed" && w.phase != "aborted", "{w:#?}");
        (w.phase == "succeeded").then_some(w)
    })
    .await;
    // The suspend kept its start (it was not begun again) and lasted its 4 s of wall time.
    let wait = step(&w, "wait");
    assert_eq!(wait.started_unix_ms, step(&before, "wait").started_unix_ms);
    assert!(
        (4000..6000).contains(&(wait.ended_unix_ms - wait.started_unix_ms)),
        "{wait:?}"
    );
    assert!(
        w.log
            .iter()
            .any(|l| l.message.contains("resumed after a coordinator restart")),
        "{:?}",
        w.log
    );
    let after = stack.get("resumed-after").await;
    assert_eq!(
        after.phase,
        Phase::Completed as i32,
        "{}",
        after.verdict_reason
    );
}
