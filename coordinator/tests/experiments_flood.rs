//! An agent that floods the coordinator with FaultStatus messages about a fault it does not
//! hold (a buggy or compromised agent) cannot delay another agent's revert acknowledgement,
//! nor change the experiment's record: over real sessions and mutual TLS.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::TestAgent;
use common::experiments::*;
use common::*;
use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as AgentMsg;

#[tokio::test]
async fn a_flood_of_foreign_statuses_does_not_delay_the_abort() {
    let env = Env::new();
    let c = start_open(&env).await;
    let honest = TestAgent::connect(&env, &c, "node-a", &[("zone", "a")]).await;
    let (flooder, _welcome) = agent(&env, &c, "node-b").await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "flooded",
        "  duration: 60s\n  targets: {agents: {names: [node-a]}, mode: all}\n  faults: [{kind: cpu, load: 20}]\n",
    );
    create(&mut ops, &text, true).await.expect("started");
    let e = wait_applied(&mut ops, "flooded").await;
    let fault_id = e.targets[0].fault_id.clone();

    // node-b says node-a's fault is reverted, failed, applied, as fast as its stream goes.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let state = [
                    pb::FaultState::Reverted,
                    pb::FaultState::Failed,
                    pb::FaultState::Applied,
                ][i % 3];
                i += 1;
                let msg = pb::AgentMessage {
                    msg: Some(AgentMsg::FaultStatus(pb::FaultStatus {
                        fault_id: fault_id.clone(),
                        experiment_id: "flooded".into(),
                        state: state as i32,
                        at_unix_ms: now_ms(),
                        reason: pb::RevertReason::Lease as i32,
                        error: "forged".into(),
                        counters: Default::default(),
                    })),
                };
                if flooder.tx.send(msg).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            flooder
        }
    });
    eventually(
        Duration::from_secs(10),
        "20,000 forged statuses sent",
        || {
            let n = sent.load(Ordering::Relaxed);
            async move { (n >= 20_000).then_some(()) }
        },
    )
    .await;

    let aborted_at = Instant::now();
    ops.abort(pb::AbortExperimentRequest {
        name: "flooded".into(),
        reason: "stop".into(),
    })
    .await
    .expect("aborted");
    let e = eventually(
        Duration::from_secs(5),
        "node-a's revert acknowledged",
        || {
            let mut ops = ops.clone();
            async move {
                let e = get(&mut ops, "flooded").await;
                (e.targets[0].state == pb::FaultState::Reverted as i32).then_some(e)
            }
        },
    )
    .await;
    let seen = aborted_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let flooded = sent.load(Ordering::Relaxed);
    let _flooder = flood.await.expect("flood task");
    let latency = e.abort.as_ref().map_or(0, |a| a.latency_ms);
    eprintln!(
        "{flooded} forged statuses from node-b; node-a's revert acknowledged, seen by Get {seen:?} \
         after Abort (the coordinator's abort latency: {latency} ms)"
    );
    assert!(
        latency < 1_000,
        "abort latency {latency} ms under the flood"
    );
    // The record is node-a's alone: reverted by the abort, no forged reason or error.
    let t = &e.targets[0];
    assert_eq!(t.agent, "node-a");
    assert_eq!(t.revert_reason, pb::RevertReason::Abort as i32, "{t:?}");
    assert!(t.error.is_empty(), "{t:?}");
    assert_eq!(phase(&e), pb::ExperimentPhase::Aborted);
    assert!(
        honest.reverts().iter().any(|r| r.fault_id == t.fault_id),
        "node-a got the RevertFault"
    );
    c.shutdown().await;
}
