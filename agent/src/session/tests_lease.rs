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

/// Orders `id` applied, made from the telemetry numbered `telemetry` (0: none).
async fn order(conn: &Conn, id: &str, telemetry: u64) {
    conn.send(In::Apply(pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "e1".into(),
        telemetry_sequence: telemetry,
        ..Default::default()
    }))
    .await;
}

/// The next status for `id` (skipping other faults' statuses and telemetry).
async fn status_of(conn: &mut Conn, id: &str) -> pb::FaultStatus {
    loop {
        let s = conn.fault_status().await;
        if s.fault_id == id {
            return s;
        }
    }
}

/// Applies `id` on `conn` (made from the latest telemetry) and waits for its status.
async fn apply(conn: &mut Conn, id: &str) {
    let telemetry = conn.latest_telemetry().unwrap_or(0);
    order(conn, id, telemetry).await;
    let s = status_of(conn, id).await;
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

/// Waits (at most a minute of paused time) for the first revert_all(Lease); fails the test
/// when none comes instead of hanging it.
async fn lapse(m: &RecordingManager) {
    let lapsed = m.wait_for(|calls| {
        calls.iter().any(|(_, c)| {
            *c == Call::RevertAll {
                reason: RevertReason::Lease,
            }
        })
    });
    tokio::time::timeout(Duration::from_secs(60), lapsed)
        .await
        .unwrap_or_else(|_| panic!("no revert_all(Lease) within 60 s: {:?}", m.mutations()));
}

/// A session up: the agent said Hello (returned) and was welcomed as session "s1".
async fn welcomed(m: &Arc<RecordingManager>) -> (Harness, Conn, pb::Hello) {
    welcomed_for(m, LEASE).await
}

/// [`welcomed`] with a lease of `lease`.
async fn welcomed_for(m: &Arc<RecordingManager>, lease: Duration) -> (Harness, Conn, pb::Hello) {
    let mut h = start(m.clone()).await;
    let mut conn = h.conn().await;
    let hello = conn.hello().await;
    conn.welcome("s1", lease).await;
    (h, conn, hello)
}

/// Idle rule: with nothing held, a lease that runs out ends nothing; the session stays up and
/// telemetry flows. An ApplyFault made from fresh telemetry arms the lease again, and the
/// kernel-side bound with it before the apply starts, however long the agent was idle;
/// without renewals the fault then lapses one lease after that telemetry went out.
#[tokio::test(start_paused = true)]
async fn an_idle_agent_keeps_its_session_and_an_apply_rearms_the_lease() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let (h, mut conn, hello) = welcomed(&m).await;
    assert!(
        hello.lease_while_holding,
        "the agent says it keeps the idle rule"
    );
    // Three leases without a renewal, holding nothing.
    tokio::time::sleep(LEASE * 3).await;
    assert!(lease_reverts(&m).is_empty(), "nothing held, nothing lapsed");
    let status = h.agent.status();
    assert!(status.borrow().connected);
    assert_eq!(status.borrow().connects, 1, "the session was not ended");
    let latest = conn.latest_telemetry().expect("telemetry went on");
    assert!(latest >= 15, "telemetry went on: {latest} samples in 15 s");

    let ordered = Instant::now();
    order(&conn, "f1", latest).await;
    assert_eq!(
        status_of(&mut conn, "f1").await.state,
        pb::FaultState::Applied as i32
    );
    let renewed = m.renewed_before("f1");
    assert!(
        renewed.len() == 1
            && renewed[0].is_some_and(|(at, left)| {
                at >= ordered && left >= LEASE - Duration::from_millis(1100)
            }),
        "the apply ran under a lease (and kernel bound) its order renewed for a lease from the \
         telemetry it named: {renewed:?}"
    );
    assert!(hello.sequence >= 1, "the Hello is numbered: {hello:?}");
    // No renewal follows: the held fault lapses one lease after that telemetry was sent
    // (at most a telemetry interval before the order).
    lapse(&m).await;
    let lapsed = lease_reverts(&m)[0] - ordered;
    assert!(
        lapsed <= LEASE + Duration::from_secs(1),
        "revert_all(Lease) {lapsed:?} after the order"
    );
    assert!(m.held().is_empty());
    h.agent.shutdown().await;
}

/// Anchor rule: an order made from telemetry sent a lease or more ago (it may have waited out
/// a partition after the coordinator gave the target up), from telemetry the agent does not
/// know, or from none while no lease is in force, is refused: FAILED, nothing applied, no
/// lease armed, the session kept.
#[tokio::test(start_paused = true)]
async fn a_stale_order_is_refused() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let (h, mut conn, _) = welcomed(&m).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = conn.latest_telemetry().expect("telemetry");
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let renewed = m.last_renewed();
    for (id, telemetry) in [("stale", old), ("unknown", 1_000_000), ("unanchored", 0)] {
        order(&conn, id, telemetry).await;
        let s = status_of(&mut conn, id).await;
        assert_eq!(s.state, pb::FaultState::Failed as i32, "{id}: {s:?}");
        assert!(s.error.contains("refused"), "{id}: {}", s.error);
    }
    assert!(
        !m.mutations()
            .iter()
            .any(|c| matches!(c, Call::Apply { .. })),
        "nothing applied: {:?}",
        m.mutations()
    );
    assert_eq!(m.last_renewed(), renewed, "no lease was armed");
    assert_eq!(h.agent.status().borrow().connects, 1);
    h.agent.shutdown().await;
}

/// Anchor rule: a renewal counts the lease from when the telemetry it answers was sent, so a
/// renewal that spent seconds in flight adds nothing for that time.
#[tokio::test(start_paused = true)]
async fn a_renewal_counts_the_lease_from_the_telemetry_it_answers() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let (h, mut conn, _) = welcomed(&m).await;
    apply(&mut conn, "f1").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answered = conn.latest_telemetry().expect("telemetry");
    // The telemetry went out at most 1 s ago; its answer arrives 3 s later.
    let sent_by = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    conn.renew_from(1, answered).await;
    lapse(&m).await;
    // Telemetry goes out every second, so the one answered left in the second before
    // `sent_by`: the lapse is a lease after that, neither at the apply's lease (before) nor
    // a lease after the renewal arrived (after).
    let lapsed = lease_reverts(&m)[0];
    assert!(
        lapsed > sent_by + LEASE - Duration::from_secs(1) && lapsed <= sent_by + LEASE,
        "lapsed {:?} after `sent_by`, want within the second before {LEASE:?}",
        lapsed - sent_by
    );
    h.agent.shutdown().await;
}

/// A lapse while only an apply is still running (nothing held yet) is a lapse: the idle rule
/// counts what is being applied as present.
#[tokio::test(start_paused = true)]
async fn a_lapse_during_a_slow_apply_reverts() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    m.delay_apply(LEASE * 3);
    let (h, mut conn, _) = welcomed(&m).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ordered = Instant::now();
    let telemetry = conn.latest_telemetry().expect("telemetry");
    order(&conn, "slow", telemetry).await;
    lapse(&m).await;
    // A lease after the telemetry the order named (sent up to a second before the order).
    let lapsed = lease_reverts(&m)[0] - ordered;
    assert!(
        lapsed <= LEASE - Duration::from_millis(400),
        "revert_all(Lease) {lapsed:?} after the order"
    );
    // The apply finishes after the lapse, unvouched: it is reverted at once.
    tokio::time::sleep_until(ordered + LEASE * 3 + Duration::from_secs(1)).await;
    assert!(m.held().is_empty(), "{:?}", m.mutations());
    assert!(
        m.mutations().contains(&Call::Revert {
            fault_id: "slow".into(),
            reason: RevertReason::Unvouched
        }),
        "{:?}",
        m.mutations()
    );
    h.agent.shutdown().await;
}

/// Anchor rule: a Welcome counts its lease from when the Hello went out, so one that waited
/// out a stall grants only what is left of the lease.
#[tokio::test(start_paused = true)]
async fn a_late_welcome_counts_the_lease_from_the_hello() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let (mut h, mut conn, _) = welcomed(&m).await;
    apply(&mut conn, "kept").await;
    // Two seconds into the fault's lease the stream breaks; the agent reconnects at once, and
    // the Welcome that answers its Hello (vouching for the fault) arrives 2 s later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    conn.inbound
        .send(Err(tonic::Status::unavailable("coordinator restarting")))
        .await
        .expect("send");
    let mut conn = h.conn().await;
    conn.hello().await;
    let hello_sent = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    conn.welcome("s2", LEASE).await;
    // Reverted by the lease (its vouch running out, or the lapse, whichever comes first).
    let by_lease = |c: &Call| {
        matches!(
            c,
            Call::RevertAll {
                reason: RevertReason::Lease
            }
        ) || matches!(c, Call::Revert { fault_id, reason: RevertReason::Lease } if fault_id == "kept")
    };
    let reverted = m.wait_for(|calls| calls.iter().any(|(_, c)| by_lease(c)));
    tokio::time::timeout(Duration::from_secs(60), reverted)
        .await
        .expect("reverted by the lease");
    let at = m
        .calls()
        .into_iter()
        .find(|(_, c)| by_lease(c))
        .map(|(at, _)| at)
        .expect("the revert");
    // Not at the old lease's end (the Welcome extended it), nor a lease after the Welcome
    // arrived: a lease after the Hello went out.
    assert!(
        at + Duration::from_millis(100) >= hello_sent + LEASE
            && at <= hello_sent + LEASE + VOUCH_CHECK_EVERY,
        "reverted {:?} after the Hello, want {LEASE:?}",
        at - hello_sent
    );
    h.agent.shutdown().await;
}

/// A lease counts from the telemetry a renewal answers, so the agent sends telemetry at least
/// three times a lease, whatever its own interval (1 s here, against a 1.5 s lease).
#[tokio::test(start_paused = true)]
async fn telemetry_goes_out_at_least_three_times_a_lease() {
    let m = Arc::new(RecordingManager::new(&["test"]));
    let (h, mut conn, hello) = welcomed_for(&m, Duration::from_millis(1500)).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let latest = conn.latest_telemetry().expect("telemetry");
    // Every 500 ms from the Welcome: seven samples in 3.1 s (four at the 1 s interval).
    assert!(
        latest >= hello.sequence + 7,
        "telemetry {} .. {latest} in 3.1 s",
        hello.sequence + 1
    );
    h.agent.shutdown().await;
}
