//! The lease rules with paused time: start-up and shutdown reverts, lapse within lease + 1 s,
//! once per lapse, renewals, and faults surviving a reconnect inside the lease.

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as In;
use tokio::time::Instant;

use super::fake::*;
use super::*;
use crate::faults::{Call, RecordingManager, RevertReason};

#[tokio::test(start_paused = true)]
async fn startup_reverts_before_anything_else_and_shutdown_reverts_all() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    let hello = conn.hello().await;
    assert_eq!(hello.node_name, "node-a");
    assert_eq!(hello.capabilities, ["test"]);
    assert_eq!(hello.version, faultline_core::VERSION);
    assert_eq!(hello.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(hello.labels.len(), 2);
    let calls: Vec<Call> = m.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls.first(),
        Some(&Call::RevertAll {
            reason: RevertReason::Recovery
        }),
        "revert_all(Recovery) must come before anything else: {calls:?}"
    );
    assert!(calls.contains(&Call::Capabilities) && calls.contains(&Call::Held));
    conn.welcome("s1", LEASE).await;
    let mut status = h.agent.status();
    status
        .wait_for(|s| s.connected)
        .await
        .expect("status channel");
    assert_eq!(status.borrow().session_id, "s1");
    h.agent.shutdown().await;
    assert_eq!(
        m.mutations().last(),
        Some(&Call::RevertAll {
            reason: RevertReason::Shutdown
        })
    );
    assert_eq!(m.revert_alls(RevertReason::Shutdown).len(), 1);
    assert!(!status.borrow().connected, "disconnected after shutdown");
    assert!(
        lease_reverts(&m).is_empty(),
        "shutdown is not a lease lapse"
    );
}

/// Applies `id` on `conn` and waits for its status (skipping other faults' statuses).
async fn apply(conn: &mut Conn, id: &str) {
    conn.send(In::Apply(pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "e1".into(),
        ..Default::default()
    }))
    .await;
    let s = loop {
        let s = conn.fault_status().await;
        if s.fault_id == id {
            break s;
        }
    };
    assert_eq!(
        (s.fault_id.as_str(), s.state),
        (id, pb::FaultState::Applied as i32)
    );
}

#[tokio::test(start_paused = true)]
async fn lease_lapse_reverts_all_within_lease_plus_one_second_once() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    let welcomed = Instant::now();
    apply(&mut conn, "f1").await;
    // The coordinator goes silent: no renewals, the stream stays open.
    m.wait_for(|calls| {
        calls.iter().any(|(_, c)| {
            *c == Call::RevertAll {
                reason: RevertReason::Lease,
            }
        })
    })
    .await;
    let lapsed = lease_reverts(&m)[0] - welcomed;
    assert!(
        lapsed >= LEASE && lapsed <= LEASE + Duration::from_secs(1),
        "revert_all(Lease) after {lapsed:?}, want within {LEASE:?} + 1s"
    );
    let status = h.agent.status();
    assert!(!status.borrow().connected);
    assert_eq!(status.borrow().last_error.as_deref(), Some("lease lapsed"));
    // One call per lapse, however long the coordinator stays away (the agent keeps retrying).
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(lease_reverts(&m).len(), 1);
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_the_lease_and_each_lapse_is_counted_once() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    apply(&mut conn, "f1").await;
    for seq in 1..=30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        conn.renew(seq).await;
    }
    let last_renewal = Instant::now();
    let mut status = h.agent.status();
    status
        .wait_for(|s| s.lease_renewals == 30)
        .await
        .expect("status");
    assert!(
        lease_reverts(&m).is_empty(),
        "renewed every second: no lapse"
    );
    assert!(status.borrow().connected);
    // Renewals stop: exactly one lapse, within lease + 1 s of the last renewal.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let reverts = lease_reverts(&m);
    assert_eq!(reverts.len(), 1, "{reverts:?}");
    assert!(reverts[0] - last_renewal <= LEASE + Duration::from_secs(1));
    // The agent reconnects; a new Welcome re-arms the lease and, with a fault held again, the
    // next lapse counts again.
    let mut conn2 = h.conn().await;
    conn2.hello().await;
    conn2.welcome("s2", LEASE).await;
    apply(&mut conn2, "f2").await;
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert_eq!(lease_reverts(&m).len(), 2);
    assert_eq!(status.borrow().connects, 2);
    drop(conn);
    h.agent.shutdown().await;
}

/// A coordinator that restarts and refuses for a while (TLS up, not serving yet) must still find
/// the agent within its lease: the backoff (cap 3 s here, windows 0.1 .. 3 s) would otherwise
/// let five refusals run past a 5 s lease. Paced to a third of what is left, every attempt of
/// the streak falls inside the lease and the held fault is reported again, not reverted.
#[tokio::test(start_paused = true)]
async fn reconnects_are_paced_to_the_lease_still_held() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(In::Apply(pb::ApplyFault {
        fault_id: "f1".into(),
        experiment_id: "e1".into(),
        ..Default::default()
    }))
    .await;
    conn.fault_status().await;
    // Age the backoff as a flapping link would: its window is now the 3 s cap.
    {
        let mut q = h.refusals.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..8 {
            q.push_back(tonic::Status::unavailable("coordinator starting"));
        }
    }
    conn.inbound
        .send(Err(tonic::Status::unavailable("coordinator restarting")))
        .await
        .expect("send");
    let broke = Instant::now();
    let mut conn2 = h.conn().await;
    let hello = conn2.hello().await;
    let took = Instant::now() - broke;
    assert!(
        took < LEASE,
        "eight refusals, then connected after {took:?}: inside the {LEASE:?} lease"
    );
    assert_eq!(
        hello
            .held_faults
            .iter()
            .map(|f| f.fault_id.as_str())
            .collect::<Vec<_>>(),
        ["f1"]
    );
    assert!(
        lease_reverts(&m).is_empty(),
        "nothing reverted by the lease"
    );
    drop(conn2);
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_keeps_faults_until_the_lease_lapses() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(In::Apply(pb::ApplyFault {
        fault_id: "f1".into(),
        experiment_id: "e1".into(),
        ..Default::default()
    }))
    .await;
    let applied = conn.fault_status().await;
    assert_eq!(
        (applied.fault_id.as_str(), applied.state),
        ("f1", pb::FaultState::Applied as i32)
    );
    // The stream breaks (coordinator restart); the agent reconnects within the lease.
    conn.inbound
        .send(Err(tonic::Status::unavailable("coordinator restarting")))
        .await
        .expect("send");
    let broke = Instant::now();
    let mut conn2 = h.conn().await;
    let hello = conn2.hello().await;
    assert!(
        Instant::now() - broke < LEASE,
        "reconnected inside the lease"
    );
    assert_eq!(
        hello
            .held_faults
            .iter()
            .map(|f| f.fault_id.as_str())
            .collect::<Vec<_>>(),
        ["f1"],
        "the fault survived the reconnect and is reported in Hello"
    );
    assert!(
        lease_reverts(&m).is_empty(),
        "a broken stream reverts nothing"
    );
    let status = h.agent.status();
    assert!(
        status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("UNAVAILABLE") && e.contains("coordinator restarting")),
        "{:?}",
        status.borrow()
    );
    conn2.welcome("s2", LEASE).await;
    let welcomed = Instant::now();
    // Now the coordinator vanishes for good: streams close and no new one gets a Welcome.
    drop(conn2);
    let mut later = Vec::new();
    let deadline = welcomed + LEASE + Duration::from_secs(1);
    while Instant::now() < deadline {
        tokio::select! {
            c = h.conns.recv() => later.push(c.expect("transport")),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let reverts = lease_reverts(&m);
    assert_eq!(reverts.len(), 1, "lapse while disconnected reverts once");
    assert!(reverts[0] - welcomed <= LEASE + Duration::from_secs(1));
    assert!(m.held().is_empty());
    h.agent.shutdown().await;
}

/// Idle rule: with nothing held, a lease that runs out ends nothing; the session stays up and
/// telemetry flows. An ApplyFault arms the lease again for one lease from its arrival, and the
/// kernel-side bound with it before the apply starts, however long the agent was idle; without
/// renewals the fault then lapses on time.
#[tokio::test(start_paused = true)]
async fn an_idle_agent_keeps_its_session_and_an_apply_rearms_the_lease() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    let hello = conn.hello().await;
    assert!(
        hello.lease_while_holding,
        "the agent says it keeps the idle rule"
    );
    conn.welcome("s1", LEASE).await;
    // Three leases without a renewal, holding nothing.
    let idle_until = Instant::now() + LEASE * 3;
    let mut samples = 0;
    while Instant::now() < idle_until {
        if let Out::Telemetry(_) = conn.next().await {
            samples += 1;
        }
    }
    assert!(
        samples >= 14,
        "telemetry went on: {samples} samples in 15 s"
    );
    assert!(lease_reverts(&m).is_empty(), "nothing held, nothing lapsed");
    let status = h.agent.status();
    assert!(status.borrow().connected);
    assert_eq!(status.borrow().connects, 1, "the session was not ended");

    let before = std::time::SystemTime::now();
    apply(&mut conn, "f1").await;
    let applied = Instant::now();
    let bound = m.bounds_of("f1");
    assert!(
        bound.len() == 1 && bound[0].is_some_and(|u| u >= before + LEASE),
        "the apply ran under the lease it extended, not the Welcome's: {bound:?}"
    );
    // No renewal follows: the held fault lapses one lease after the order.
    m.wait_for(|calls| {
        calls.iter().any(|(_, c)| {
            *c == Call::RevertAll {
                reason: RevertReason::Lease,
            }
        })
    })
    .await;
    let lapsed = lease_reverts(&m)[0] - applied;
    assert!(
        lapsed <= LEASE + Duration::from_secs(1),
        "revert_all(Lease) {lapsed:?} after the apply"
    );
    assert!(m.held().is_empty());
    h.agent.shutdown().await;
}

/// An order that comes late in a lease holds it a whole lease from its arrival: the renewal
/// that follows it is not due yet when the previous lease would have run out.
#[tokio::test(start_paused = true)]
async fn an_apply_late_in_the_lease_holds_it_a_lease_from_the_order() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    tokio::time::sleep(LEASE - Duration::from_millis(300)).await;
    apply(&mut conn, "f1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(lease_reverts(&m).is_empty(), "the order held the lease");
    conn.renew(1).await;
    tokio::time::sleep(LEASE - Duration::from_millis(500)).await;
    assert!(lease_reverts(&m).is_empty(), "the renewal held it");
    assert_eq!(m.held().len(), 1);
    drop(conn);
    h.agent.shutdown().await;
}
