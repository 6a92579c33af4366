//! Routing statuses to runs: only the agent that holds a fault reaches the run with it, so an
//! agent flooding statuses for faults it does not hold fills no queue and delays nobody.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_core::Role;
use faultline_proto::pb;

use crate::experiments::ops;
use crate::experiments::record::TargetState;
use crate::test_support::{document, identity, until, Agent, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_flood_neither_queues_nor_delays_another_agents_revert_ack() {
    let rig = Rig::new().await;
    let state = rig.state.clone();
    let honest = Agent::connect(&state, "node-a");
    let flooder = Agent::connect(&state, "node-b");
    let operator = identity(Role::Operator);
    ops::create(&state, &operator, &document("x", "60s"), false, true)
        .await
        .expect("started");
    until("both faults applied", || {
        state.experiments.snapshot("x").is_some_and(|s| {
            s.record.targets.len() == 2
                && s.record
                    .targets
                    .iter()
                    .all(|t| t.state == TargetState::Applied)
        })
    })
    .await;
    let a_fault = state
        .experiments
        .snapshot("x")
        .and_then(|s| {
            s.record
                .targets
                .iter()
                .find(|t| t.agent == "node-a")
                .cloned()
        })
        .expect("node-a's target")
        .fault_id;

    // node-b reports node-a's fault as reverted, failed and applied, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn({
        let (state, stop, sent, fault) = (state.clone(), stop.clone(), sent.clone(), a_fault);
        async move {
            let mut worst_queue = 0;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..1_000u64 {
                    let st = [
                        pb::FaultState::Reverted,
                        pb::FaultState::Failed,
                        pb::FaultState::Applied,
                    ][i as usize % 3];
                    let status = pb::FaultStatus {
                        fault_id: fault.clone(),
                        experiment_id: "x".into(),
                        state: st as i32,
                        reason: pb::RevertReason::Lease as i32,
                        error: "forged".into(),
                        ..Default::default()
                    };
                    state.experiments.route(&state.store, "node-b", status);
                }
                sent.fetch_add(1_000, Ordering::Relaxed);
                worst_queue = worst_queue.max(state.experiments.queued("x").unwrap_or(0));
                tokio::task::yield_now().await;
            }
            worst_queue
        }
    });
    while sent.load(Ordering::Relaxed) < 200_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let aborted_at = Instant::now();
    ops::abort(&state, &operator, "x", "stop")
        .await
        .expect("aborted");
    until("node-a's revert acknowledged", || {
        state.experiments.snapshot("x").is_none_or(|s| {
            s.record
                .targets
                .iter()
                .any(|t| t.agent == "node-a" && t.state == TargetState::Reverted)
        })
    })
    .await;
    let ack = aborted_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst_queue = flood.await.expect("flood");
    let flooded = sent.load(Ordering::Relaxed);
    eprintln!(
        "{flooded} forged statuses; node-a's revert acknowledged {ack:?} after Abort; the run's queue held at most {worst_queue}"
    );
    // At most the two honest revert acks: no forged status was queued for the run.
    assert!(worst_queue <= 2, "the run's queue held {worst_queue}");
    assert!(ack < Duration::from_secs(1), "ack took {ack:?}");
    until("the run to finish", || {
        state.experiments.snapshot("x").is_none()
    })
    .await;
    let rec = state
        .store
        .experiment("x")
        .await
        .expect("read")
        .expect("stored");
    // The forged statuses changed nothing: both reverted by the abort, none failed.
    for t in &rec.targets {
        assert_eq!(
            (t.state, t.revert_reason.as_str(), t.error.as_str()),
            (TargetState::Reverted, "abort", ""),
            "{t:?}"
        );
    }
    honest.stop().await;
    flooder.stop().await;
}
