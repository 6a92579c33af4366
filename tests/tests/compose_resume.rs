//! Per-fault timing against a coordinator crash, with the real binaries: an experiment of
//! two cpu faults, the first with its own 4s, the second for the experiment's 14s. The
//! coordinator is SIGKILLed 2.5 s in and restarted about 5 s in (inside the agent's 5 s
//! lease): the first fault still ends at its own time, on the agent's clock, while nothing
//! coordinates; the resumed run does not vouch for it again, the second fault holds on to the
//! experiment's end, and the experiment completes with both reverted at their deadlines.

use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_tests::stack::{worker_faults, Stack};

const DOC: &str = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: timed}\nspec:\n  duration: 14s\n  targets: {agents: {names: [node-a]}, mode: all}\n  faults:\n    - {kind: cpu, load: 10, workers: 1, duration: 4s}\n    - {kind: cpu, load: 10, workers: 1}\n";

/// Whether fault `index` of the experiment has a live stress worker on the agent.
fn working(agent_pid: u32, index: usize) -> bool {
    let id = format!("timed-node-a-{index}");
    worker_faults(agent_pid).iter().any(|(_, f)| *f == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_ends_on_time_while_the_coordinator_is_down_and_the_resumed_run_goes_on() {
    let mut stack = Stack::start(&["node-a"], Duration::from_secs(5));
    stack.spawn_agent("node-a", "zone=a");
    let agent_pid = stack.agents[0].proc.pid();
    stack.run_experiment(DOC).await;
    let t0 = Instant::now();
    while !(working(agent_pid, 0) && working(agent_pid, 1)) {
        assert!(t0.elapsed() < Duration::from_secs(5), "both workers start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(t0.elapsed())).await;
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    let killed = t0.elapsed();

    // Nothing coordinates now: fault 0 ends at its own 4 s anyway; fault 1 holds.
    while working(agent_pid, 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "fault 0 still works {:?} after apply",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = t0.elapsed();
    println!(
        "coordinator SIGKILLed {:.2} s after apply; fault 0's worker gone {:.2} s after apply",
        killed.as_secs_f64(),
        ended.as_secs_f64()
    );
    assert!(
        ended >= Duration::from_millis(3500),
        "not before its own end"
    );
    assert!(
        working(agent_pid, 1),
        "fault 1 holds while the coordinator is down"
    );

    stack.start_coordinator();
    let restarted = t0.elapsed();
    println!(
        "coordinator back {:.2} s after apply",
        restarted.as_secs_f64()
    );
    assert!(
        restarted < Duration::from_millis(7000),
        "restarted inside the lease"
    );
    // The resumed run keeps fault 1 (its agent came back within the lease) and not fault 0.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mid = stack.get("timed").await;
    assert_eq!(
        mid.phase,
        pb::ExperimentPhase::Running as i32,
        "{}; log: {:?}",
        mid.verdict_reason,
        mid.log.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
    assert!(working(agent_pid, 1), "fault 1 holds after the resume");
    assert!(!working(agent_pid, 0), "fault 0 is not brought back");
    let resumed = mid
        .log
        .iter()
        .find(|l| l.message.starts_with("resumed:"))
        .map(|l| l.message.clone())
        .expect("a resumed line");
    println!("{resumed}");
    assert!(
        resumed.contains("1 fault(s) vouched for again"),
        "only fault 1 is vouched for again: {resumed}"
    );

    let done = stack
        .wait_phase(
            "timed",
            pb::ExperimentPhase::Completed,
            Duration::from_secs(15),
        )
        .await;
    let e = stack
        .wait_all_reverted("timed", Duration::from_secs(10))
        .await;
    println!(
        "completed {:.2} s after apply: {}",
        t0.elapsed().as_secs_f64(),
        done.verdict_reason
    );
    assert!(!working(agent_pid, 1), "fault 1 ends with the experiment");
    for t in &e.targets {
        assert_eq!(
            t.revert_reason,
            pb::RevertReason::Deadline as i32,
            "{}: {t:?}",
            t.fault_id
        );
    }
}
