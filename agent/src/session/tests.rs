//! The session loop with paused time: fault orders, telemetry, refusals, timeouts, the lock.

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::coordinator_message::Msg as In;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fake::*;
use super::*;
use crate::agent::{Agent, AgentError};
use crate::faults::{Call, RecordingManager, RevertReason};
use crate::state_dir::StateDirError;

#[tokio::test(start_paused = true)]
async fn fault_orders_are_carried_out_and_reported() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    for id in ["f1", "f2"] {
        conn.send(In::Apply(pb::ApplyFault {
            fault_id: id.into(),
            experiment_id: "e1".into(),
            ..Default::default()
        }))
        .await;
        assert_eq!(conn.fault_status().await.fault_id, id);
    }
    conn.send(In::Revert(pb::RevertFault {
        fault_id: "f1".into(),
        reason: RevertReason::Deadline as i32,
    }))
    .await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.state, s.reason),
        (
            "f1",
            pb::FaultState::Reverted as i32,
            RevertReason::Deadline as i32
        )
    );
    conn.send(In::RevertAll(pb::RevertAll {
        reason: RevertReason::Unspecified as i32,
        message: "guard breached".into(),
    }))
    .await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.reason),
        ("f2", RevertReason::Abort as i32),
        "an unspecified reason from the coordinator counts as an abort"
    );
    assert_eq!(
        m.mutations()[1..],
        [
            Call::Apply {
                fault_id: "f1".into()
            },
            Call::Apply {
                fault_id: "f2".into()
            },
            Call::Revert {
                fault_id: "f1".into(),
                reason: RevertReason::Deadline
            },
            // RevertAll reverts each held fault on its own (at once, not one after another).
            Call::Revert {
                fault_id: "f2".into(),
                reason: RevertReason::Abort
            },
        ]
    );
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn telemetry_every_interval_with_live_values() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    let t0 = Instant::now();
    let mut at = Vec::new();
    while at.len() < 3 {
        match conn.next().await {
            Out::Telemetry(t) => {
                assert!(t.memory_total_bytes > 0, "{t:?}");
                assert!(t.interfaces.iter().any(|i| i.name == "lo"), "{t:?}");
                at.push(Instant::now() - t0);
                conn.renew(at.len() as u64).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The first sample goes out with the session, then one per interval.
    let secs = |n| Duration::from_secs(n);
    assert_eq!(at, [secs(0), secs(1), secs(2)]);
    let status = h.agent.status();
    assert!(status.borrow().telemetry_sent >= 3);
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn refusals_are_reported_and_retried_with_backoff() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let refusals = vec![
        tonic::Status::permission_denied(
            "identity agent/node-a may only open a session for node \"node-a\", not \"node-b\"",
        );
        3
    ];
    let t0 = Instant::now();
    let mut h = start_with(m.clone(), refusals).await;
    let mut status = h.agent.status();
    status
        .wait_for(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("PERMISSION_DENIED"))
        })
        .await
        .expect("status");
    let err = status.borrow().last_error.clone().unwrap_or_default();
    assert_eq!(
        err,
        "refused by the coordinator (PERMISSION_DENIED): identity agent/node-a may only open a session for node \"node-a\", not \"node-b\""
    );
    // Three refusals, then the fourth attempt gets through: at most 0.1 + 0.2 + 0.4 s of backoff.
    let mut conn = h.conn().await;
    assert!(
        Instant::now() - t0 <= Duration::from_millis(700),
        "{:?}",
        Instant::now() - t0
    );
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    status.wait_for(|s| s.connected).await.expect("status");
    assert_eq!(status.borrow().last_error, None);
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_welcome_within_ten_seconds_is_an_error() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    let t0 = Instant::now();
    let mut status = h.agent.status();
    status
        .wait_for(|s| s.last_error.is_some())
        .await
        .expect("status");
    assert_eq!(Instant::now() - t0, WELCOME_TIMEOUT);
    assert_eq!(
        status.borrow().last_error.as_deref(),
        Some("no Welcome from the coordinator within 10s of Hello")
    );
    // It tries again.
    let mut again = h.conn().await;
    again.hello().await;
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_agent_on_the_same_state_dir_is_refused() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let h = start(m.clone()).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let transport = Arc::new(FakeTransport {
        conns: tx,
        refusals: Arc::default(),
        vouched: Arc::default(),
    });
    let second = Arc::new(RecordingManager::new(&["test"]));
    let err = Agent::start_with(
        config(h.state.path()),
        second.clone(),
        None,
        transport,
        Backoff::seeded(Duration::from_secs(3), 2),
        None,
    )
    .await
    .expect_err("the state dir is locked");
    assert!(
        matches!(err, AgentError::StateDir(StateDirError::Locked { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("agent.lock"), "{err}");
    assert!(second.calls().is_empty(), "a refused agent reverts nothing");
    h.agent.shutdown().await;
}
