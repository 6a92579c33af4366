//! The lease contract with paused time: the agent holds a fault only while the coordinator
//! vouches for it (a Welcome or renewal that omits it reverts it at once, also mid-apply), and
//! a slow apply holds up neither renewals nor another fault's revert.

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as In;
use tokio::time::Instant;

use super::fake::*;
use crate::faults::{RecordingManager, RevertReason};

fn apply(id: &str) -> In {
    In::Apply(pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "e1".into(),
        remaining_ms: 300_000,
        ..Default::default()
    })
}

/// What the next coordinator vouches for (its resumed experiments).
fn conn_vouch_only(h: &Harness, ids: &[&str]) {
    let mut v = h.vouched.lock().expect("vouched");
    v.clear();
    v.extend(ids.iter().map(|s| s.to_string()));
}

fn held(m: &RecordingManager) -> Vec<String> {
    use crate::faults::FaultManager;
    m.held().into_iter().map(|h| h.fault_id).collect()
}

#[tokio::test(start_paused = true)]
async fn a_welcome_that_does_not_vouch_for_a_held_fault_reverts_it_at_once() {
    // The agent reconnects inside its lease to a coordinator that restarted without the
    // experiment (or with an empty store): its Welcome names nothing.
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(apply("kept")).await;
    conn.send(apply("orphan")).await;
    for _ in 0..2 {
        conn.fault_status().await;
    }
    // The coordinator dies (its stream breaks) and comes back 1.5 s later knowing only "kept".
    drop(conn);
    conn_vouch_only(&h, &["kept"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = h.conn().await;
    let hello = conn.hello().await;
    assert_eq!(hello.held_faults.len(), 2, "Hello reports what is held");
    let welcomed = Instant::now();
    conn.welcome("s2", LEASE).await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.state, s.reason),
        (
            "orphan",
            pb::FaultState::Reverted as i32,
            RevertReason::Unvouched as i32
        )
    );
    assert_eq!(
        Instant::now(),
        welcomed,
        "reverted at the Welcome, not later"
    );
    assert_eq!(held(&m), ["kept"], "the vouched fault stays");
    // Renewals that keep naming it keep it, well past one lease.
    for seq in 1..=12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        conn.renew(seq).await;
    }
    assert_eq!(held(&m), ["kept"]);
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_stops_naming_a_fault_reverts_it_while_the_session_stays_up() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(apply("f1")).await;
    conn.send(apply("f2")).await;
    for _ in 0..2 {
        assert_eq!(
            conn.fault_status().await.state,
            pb::FaultState::Applied as i32
        );
    }
    conn.renew(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The coordinator withdraws f1 without a RevertFault (the order was lost, or the
    // experiment ended while the message was in flight).
    conn.forget("f1");
    let t = Instant::now();
    conn.renew(2).await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.reason),
        ("f1", RevertReason::Unvouched as i32)
    );
    assert_eq!(Instant::now(), t);
    assert_eq!(held(&m), ["f2"]);
    assert!(
        h.agent.status().borrow().connected,
        "the session stays up; only the unvouched fault went"
    );
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_fault_withdrawn_while_it_is_being_applied_is_reverted_when_the_apply_ends() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    m.delay_apply(Duration::from_secs(3));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(apply("slow")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    conn.forget("slow");
    conn.renew(1).await;
    let applied = conn.fault_status().await;
    assert_eq!(
        (applied.fault_id.as_str(), applied.state),
        ("slow", pb::FaultState::Applied as i32)
    );
    let reverted = conn.fault_status().await;
    assert_eq!(
        (reverted.fault_id.as_str(), reverted.reason),
        ("slow", RevertReason::Unvouched as i32)
    );
    assert!(held(&m).is_empty());
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_apply_holds_up_neither_renewals_nor_another_faults_revert() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(apply("fast")).await;
    assert_eq!(conn.fault_status().await.fault_id, "fast");
    // The next apply hangs for two minutes, far past the lease.
    m.delay_apply(Duration::from_secs(120));
    conn.send(apply("hung")).await;
    let t = Instant::now();
    conn.send(In::Revert(pb::RevertFault {
        fault_id: "fast".into(),
        reason: RevertReason::Abort as i32,
    }))
    .await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.reason),
        ("fast", RevertReason::Abort as i32)
    );
    assert_eq!(Instant::now(), t, "the revert waited for the hung apply");
    // Renewals keep the lease meanwhile: no lapse in 20 s.
    for seq in 1..=20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        conn.renew(seq).await;
    }
    assert!(
        lease_reverts(&m).is_empty(),
        "the lease lapsed behind a slow apply"
    );
    assert!(h.agent.status().borrow().connected);
    h.agent.shutdown().await;
}
