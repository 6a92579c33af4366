//! Per-fault timing (issue 13, composition) against an in-process coordinator and an in-test
//! agent over real mutual TLS: a fault with its own `duration` gets that end as its ApplyFault
//! deadline and its RevertFault (reason deadline) at that time, while the experiment and its
//! other fault run on to the end; the plan carries each fault's own duration.

mod common;

use std::time::{Duration, Instant};

use common::agent::{Received, TestAgent};
use common::experiments::*;
use common::*;
use faultline_proto::pb;

const SPEC: &str = "  duration: 3s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 50, workers: 1, duration: 1s}, {kind: memory, size: 64Mi}]\n";

#[tokio::test]
async fn a_fault_with_its_own_duration_is_reverted_at_its_end_and_the_others_go_on() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[("zone", "a")]).await;
    let mut ops = experiments(&env, &c, "operator").await;

    let created = create(&mut ops, &doc("timed", SPEC), true)
        .await
        .expect("created and started");
    let plan = created.plan.expect("plan");
    assert_eq!(
        plan.fault_duration_ms,
        [1000, 0],
        "the plan carries each fault's own duration"
    );
    let running = wait_applied(&mut ops, "timed").await;
    let started = running.started_unix_ms;
    let applies = a.applies();
    assert_eq!(applies.len(), 2);
    assert_eq!(applies[0].deadline_unix_ms, started + 1000, "its own end");
    assert_eq!(
        applies[1].deadline_unix_ms,
        started + 3000,
        "the experiment's end"
    );

    // At its own end: fault 0 reverted, fault 1 still held, the experiment still running.
    let until = Instant::now() + Duration::from_secs(5);
    while a.reverts().is_empty() {
        assert!(Instant::now() < until, "no RevertFault for the 1s fault");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reverts = a.reverts();
    assert_eq!(reverts.len(), 1, "{reverts:?}");
    assert_eq!(reverts[0].fault_id, "timed-node-a-0");
    assert_eq!(reverts[0].reason, pb::RevertReason::Deadline as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mid = get(&mut ops, "timed").await;
    assert_eq!(
        phase(&mid),
        pb::ExperimentPhase::Running,
        "{}",
        mid.verdict_reason
    );
    assert_eq!(a.held(), ["timed-node-a-1"]);
    assert!(
        mid.log.iter().any(|l| l
            .message
            .starts_with("spec.faults[0] (1s): its own duration is over")),
        "{:?}",
        mid.log
    );

    // When the RevertFault came: about 1 s after the first ApplyFault.
    let received = a.received();
    let applied_at = received.iter().find_map(|r| match r {
        Received::Apply(_, t) => Some(*t),
        _ => None,
    });
    let reverted_at = received.iter().find_map(|r| match r {
        Received::Revert(_, t) => Some(*t),
        _ => None,
    });
    let took = reverted_at.expect("revert") - applied_at.expect("apply");
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(1500)).contains(&took),
        "reverted {took:?} after apply"
    );

    let events = watch_to_end(&mut ops, "timed", Duration::from_secs(10)).await;
    let last = events
        .last()
        .and_then(|e| e.experiment.clone())
        .expect("end");
    assert_eq!(
        phase(&last),
        pb::ExperimentPhase::Completed,
        "{}",
        last.verdict_reason
    );
    let ids: Vec<String> = a.reverts().into_iter().map(|r| r.fault_id).collect();
    assert_eq!(
        ids,
        ["timed-node-a-0", "timed-node-a-1"],
        "each reverted once"
    );
    assert!(a.held().is_empty());
}
