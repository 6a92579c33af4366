//! Raw agent sessions against an in-process coordinator over mutual TLS: Welcome, lease
//! renewals, telemetry in the registry, disconnect, replacement, silence and the fleet halt.

mod common;

use std::time::{Duration, Instant};

use common::*;
use faultline_coordinator::{Config, Policy};
use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tonic::Code;

#[tokio::test]
async fn a_session_gets_welcome_renewals_and_shows_telemetry_until_it_drops() {
    let env = Env::new();
    let c = env.start().await;
    let before = now_ms();
    let (mut conn, welcome) = agent(&env, &c, "node-a").await;
    assert!(!welcome.session_id.is_empty());
    assert_eq!(welcome.lease_ms, 5000);
    assert_eq!(welcome.telemetry_interval_ms, 1000);

    // Like an agent: telemetry every second on its own clock, from right after Welcome. Each
    // one (after the first, which comes too soon after the session opened) is answered with a
    // renewal, in sequence.
    let started = Instant::now();
    let mut renewals: Vec<(u64, Duration)> = Vec::new();
    let mut sent: Vec<Duration> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let window = Duration::from_millis(3500);
    while started.elapsed() < window {
        let left = window.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tick.tick() => {
                conn.send(telemetry(0.25, 3 << 30)).await;
                sent.push(started.elapsed());
            }
            got = tokio::time::timeout(left, conn.rx.message()) => match got {
                Err(_) => break,
                Ok(Ok(Some(pb::CoordinatorMessage {
                    msg: Some(CoordMsg::Lease(l)),
                }))) => {
                    assert_eq!(l.lease_ms, 5000);
                    renewals.push((l.sequence, started.elapsed()));
                }
                Ok(other) => panic!("expected LeaseRenewal, got {other:?}"),
            },
        }
    }
    assert_eq!(
        renewals.len(),
        3,
        "telemetry at {sent:?} answered by renewals {renewals:?}"
    );
    let seqs: Vec<u64> = renewals.iter().map(|r| r.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Each renewal answers the telemetry sent just before it (loopback: well under 400 ms).
    for (i, (_, at)) in renewals.iter().enumerate() {
        let asked = sent[i + 1];
        assert!(
            *at >= asked && *at - asked < Duration::from_millis(400),
            "renewal {} at {at:?} does not answer the telemetry of {asked:?}: {renewals:?}",
            i + 1
        );
    }

    let mut viewer = fleet(&env, &c, "viewer").await;
    let agents = list_agents(&mut viewer).await;
    assert_eq!(agents.len(), 1);
    let a = &agents[0];
    assert_eq!(a.node_name, "node-a");
    assert!(a.connected);
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(a.capabilities, ["cpu"]);
    assert_eq!(a.version, faultline_core::VERSION);
    assert!(
        a.remote_address.starts_with("127.0.0.1:"),
        "{}",
        a.remote_address
    );
    assert!(a.connected_since_unix_ms >= before);
    assert!(a.last_seen_unix_ms >= a.connected_since_unix_ms);
    let t = a.telemetry.as_ref().expect("telemetry arrived");
    assert_eq!(t.cpu_busy_ratio, 0.25);
    assert_eq!(t.memory_used_bytes, 3 << 30);
    assert_eq!(t.interfaces[0].name, "lo");

    // Dropping the stream marks the agent disconnected, with its last-seen time.
    drop(conn);
    let dropped_at = now_ms();
    let a = eventually(Duration::from_secs(3), "node-a disconnected", || {
        let mut viewer = viewer.clone();
        async move {
            let a = list_agents(&mut viewer).await.pop()?;
            (!a.connected).then_some(a)
        }
    })
    .await;
    assert_eq!(a.connected_since_unix_ms, 0);
    assert!(
        a.last_seen_unix_ms >= dropped_at - 1000 && a.last_seen_unix_ms <= now_ms(),
        "last seen {} vs dropped at {dropped_at}",
        a.last_seen_unix_ms
    );
    assert!(a.telemetry.is_some(), "latest telemetry is kept");

    let entries = audit(&mut viewer).await;
    let actions: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|e| (e.identity.as_str(), e.action.as_str(), e.allowed))
        .collect();
    assert_eq!(
        actions,
        [
            ("agent/node-a", "AgentSession.Disconnect", true),
            ("agent/node-a", "AgentSession.Connect", true)
        ]
    );
    assert!(
        entries[0].detail.contains("(disconnect)"),
        "{}",
        entries[0].detail
    );
    c.shutdown().await;
}

/// An agent that sends no telemetry (a long telemetry interval, or one stuck but still
/// holding its stream) is renewed by the session's timer: 1.5 renew intervals apart, well
/// inside the lease.
#[tokio::test]
async fn without_telemetry_the_timer_renews_every_one_and_a_half_intervals() {
    let env = Env::new();
    let c = env.start().await;
    let (mut conn, _welcome) = agent(&env, &c, "node-a").await;
    let started = Instant::now();
    let mut renewals: Vec<(u64, Duration)> = Vec::new();
    let window = Duration::from_millis(3800);
    while started.elapsed() < window {
        let left = window.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, conn.rx.message()).await {
            Err(_) => break,
            Ok(Ok(Some(pb::CoordinatorMessage {
                msg: Some(CoordMsg::Lease(l)),
            }))) => renewals.push((l.sequence, started.elapsed())),
            Ok(other) => panic!("expected LeaseRenewal, got {other:?}"),
        }
    }
    assert_eq!(renewals.len(), 2, "renewals {renewals:?}");
    for (i, (seq, at)) in renewals.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        let due = Duration::from_millis(1500) * (i as u32 + 1);
        assert!(
            *at + Duration::from_millis(200) >= due && *at < due + Duration::from_millis(400),
            "renewal {seq} at {at:?}, due at {due:?}: {renewals:?}"
        );
    }
}

#[tokio::test]
async fn a_second_session_for_the_same_node_replaces_the_first() {
    let env = Env::new();
    let c = env.start().await;
    let (mut first, w1) = agent(&env, &c, "node-a").await;
    let (mut second, w2) = agent(&env, &c, "node-a").await;
    assert_ne!(w1.session_id, w2.session_id);
    let err = first.next().await.expect_err("first session ended");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("replaced by a newer session"),
        "{}",
        err.message()
    );

    // The new session lives on and is renewed.
    match second.next().await {
        Ok(CoordMsg::Lease(l)) => assert_eq!(l.sequence, 1),
        other => panic!("expected a renewal, got {other:?}"),
    }
    let mut viewer = fleet(&env, &c, "viewer").await;
    let agents = list_agents(&mut viewer).await;
    assert_eq!(agents.len(), 1);
    assert!(
        agents[0].connected,
        "still connected after the old session ended"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_silent_agent_is_disconnected_after_one_lease() {
    let env = Env::new();
    let c = common::start(Config {
        lease: Duration::from_secs(1),
        renew_interval: Duration::from_millis(250),
        ..env.config()
    })
    .await;
    let (mut conn, welcome) = agent(&env, &c, "node-a").await;
    assert_eq!(welcome.lease_ms, 1000);
    let started = Instant::now();
    let status = loop {
        match conn.next().await {
            Ok(CoordMsg::Lease(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("nothing received from node-a"),
        "{}",
        status.message()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "ended after {took:?}"
    );
    let mut viewer = fleet(&env, &c, "viewer").await;
    assert!(!list_agents(&mut viewer).await[0].connected);
    let entries = audit(&mut viewer).await;
    assert!(entries[0].detail.contains("(silent)"), "{:?}", entries[0]);
    c.shutdown().await;
}

fn expect_revert_all(msg: Result<CoordMsg, tonic::Status>, reason_text: &str) {
    match msg {
        Ok(CoordMsg::RevertAll(r)) => {
            assert_eq!(r.reason, pb::RevertReason::Abort as i32);
            assert!(r.message.contains(reason_text), "{}", r.message);
            assert!(r.message.contains("admin/admin"), "{}", r.message);
        }
        other => panic!("expected RevertAll, got {other:?}"),
    }
}

/// Skips lease renewals.
async fn next_non_lease(conn: &mut AgentConn) -> Result<CoordMsg, tonic::Status> {
    loop {
        match conn.next().await {
            Ok(CoordMsg::Lease(_)) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn halt_reverts_everything_everywhere_until_resume() {
    let env = Env::new();
    let policy = faultline_coordinator::config::parse_policy(
        "[policy]\nmax_fleet_percent_under_fault = 20\nallowed_fault_kinds = [\"cpu\"]\n",
    )
    .expect("policy");
    let c = common::start(Config {
        policy,
        ..env.config()
    })
    .await;
    let (mut a, _) = agent(&env, &c, "node-a").await;
    let mut admin = fleet(&env, &c, "admin").await;
    let resp = admin
        .halt_all(pb::HaltAllRequest {
            reason: "SLO burn".into(),
        })
        .await
        .expect("halt")
        .into_inner();
    assert_eq!(resp.agents_signalled, 1);
    expect_revert_all(next_non_lease(&mut a).await, "SLO burn");

    // An agent arriving during the halt gets RevertAll right after Welcome.
    let (mut b, _) = agent(&env, &c, "node-b").await;
    expect_revert_all(b.next().await, "SLO burn");

    let policy = admin
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert!(policy.halted);
    assert_eq!(policy.halted_reason, "SLO burn");
    assert_eq!(policy.lease_ms, 5000);
    assert_eq!(policy.max_fleet_percent_under_fault, 20.0);
    assert_eq!(policy.allowed_fault_kinds, ["cpu"]);
    assert_eq!(
        policy.max_concurrent_experiments,
        Policy::default().max_concurrent_experiments
    );
    assert_eq!(policy.max_duration_ms, 3_600_000);
    assert_eq!(
        policy
            .protected_agent_labels
            .get("faultline.dev/protected")
            .map(String::as_str),
        Some("true")
    );

    let resumed = admin
        .resume(pb::ResumeRequest {})
        .await
        .expect("resume")
        .into_inner();
    assert!(resumed.was_halted);
    let again = admin
        .resume(pb::ResumeRequest {})
        .await
        .expect("resume")
        .into_inner();
    assert!(!again.was_halted);
    let policy = admin
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("policy");
    assert!(!policy.into_inner().halted);
    // After resume a new agent gets no RevertAll: its next message is a renewal.
    drop(b);
    let (mut b, _) = agent(&env, &c, "node-b").await;
    assert!(matches!(b.next().await, Ok(CoordMsg::Lease(_))));
    c.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_sessions_and_releases_the_port_and_store() {
    let env = Env::new();
    let c = env.start().await;
    let addr = c.grpc_addr();
    let (mut a, _) = agent(&env, &c, "node-a").await;
    let started = Instant::now();
    c.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    let err = next_non_lease(&mut a).await.expect_err("session ended");
    assert!(
        err.code() == Code::Unavailable || err.message().contains("shutting down"),
        "{err:?}"
    );
    // Same address and data directory again, in the same process.
    let c = common::start(Config {
        listen: addr,
        ..env.config()
    })
    .await;
    assert_eq!(c.grpc_addr(), addr);
    let (_a, _) = agent(&env, &c, "node-a").await;
    c.shutdown().await;
}

#[tokio::test]
async fn held_faults_are_listed_until_reported_reverted() {
    let env = Env::new();
    let c = env.start().await;
    let mut first = hello("node-a", &[]);
    if let Some(pb::agent_message::Msg::Hello(h)) = first.msg.as_mut() {
        h.held_faults = vec![pb::HeldFault {
            fault_id: "f-1".into(),
            experiment_id: "exp-1".into(),
            deadline_unix_ms: now_ms() + 60_000,
            ..Default::default()
        }];
    }
    let ch = channel(&env, &c, "agent-node-a").await;
    let mut conn = AgentConn::open(ch, first).await.expect("session");
    conn.welcome().await;
    let mut viewer = fleet(&env, &c, "viewer").await;
    let held = list_agents(&mut viewer).await[0].held_faults.clone();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].fault_id.as_str(), held[0].experiment_id.as_str()),
        ("f-1", "exp-1")
    );

    conn.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::FaultStatus(pb::FaultStatus {
            fault_id: "f-1".into(),
            experiment_id: "exp-1".into(),
            state: pb::FaultState::Reverted as i32,
            at_unix_ms: now_ms(),
            reason: pb::RevertReason::Recovery as i32,
            ..Default::default()
        })),
    })
    .await;
    eventually(Duration::from_secs(2), "f-1 no longer held", || {
        let mut viewer = viewer.clone();
        async move {
            let a = list_agents(&mut viewer).await.pop()?;
            a.held_faults.is_empty().then_some(())
        }
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_session_without_hello_ends_after_ten_seconds() {
    let env = Env::new();
    let c = env.start().await;
    let ch = channel(&env, &c, "agent-node-a").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(1);
    let started = Instant::now();
    let mut stream = pb::agent_session_client::AgentSessionClient::new(ch)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    let status = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("ended within 15 s")
        .expect_err("ended with a status");
    drop(tx);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "no Hello within 10 s: the first message of an AgentSession must be Hello"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(12),
        "{took:?}"
    );
    c.shutdown().await;
}
