//! The store across a full coordinator shutdown and start on the same data directory: agents
//! seen, audit entries and the halt survive.

mod common;

use std::time::Duration;

use common::*;
use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;

#[tokio::test]
async fn agents_audit_and_halt_survive_a_restart() {
    let env = Env::new();
    let c = env.start().await;
    let (a, _) = agent(&env, &c, "node-a").await;
    a.send(telemetry(0.5, 1 << 30)).await;
    let mut admin = fleet(&env, &c, "admin").await;
    admin
        .halt_all(pb::HaltAllRequest {
            reason: "maintenance window".into(),
        })
        .await
        .expect("halt");
    let refused = fleet(&env, &c, "viewer")
        .await
        .resume(pb::ResumeRequest {})
        .await
        .expect_err("viewer may not resume");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let before = audit(&mut admin).await;
    c.shutdown().await;
    let stopped_at = now_ms();

    let c = env.start().await;
    let mut viewer = fleet(&env, &c, "viewer").await;
    let agents = list_agents(&mut viewer).await;
    assert_eq!(agents.len(), 1, "{agents:?}");
    let a = &agents[0];
    assert_eq!(a.node_name, "node-a");
    assert!(!a.connected, "known but not connected after a restart");
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(a.capabilities, ["cpu"]);
    assert!(
        a.last_seen_unix_ms > 0 && a.last_seen_unix_ms <= stopped_at,
        "last seen {}",
        a.last_seen_unix_ms
    );

    let after = audit(&mut viewer).await;
    let key = |e: &pb::AuditEntry| {
        (
            e.at_unix_ms,
            e.identity.clone(),
            e.action.clone(),
            e.allowed,
        )
    };
    // Everything written before the restart is still there, in the same order; the shutdown
    // added the session's end on top.
    let tail: Vec<_> = after
        .iter()
        .skip(after.len() - before.len())
        .map(key)
        .collect();
    assert_eq!(tail, before.iter().map(key).collect::<Vec<_>>());
    assert!(after.iter().any(|e| e.action == "Fleet.HaltAll"
        && e.allowed
        && e.detail.contains("maintenance window")));
    assert!(after
        .iter()
        .any(|e| e.action == "Fleet.Resume" && !e.allowed));
    let disconnect = after
        .iter()
        .find(|e| e.action == "AgentSession.Disconnect")
        .expect("the shutdown ended the session");
    assert!(
        disconnect.detail.contains("(shutdown)"),
        "{}",
        disconnect.detail
    );

    let policy = viewer
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert!(policy.halted, "the halt survives a restart");
    assert_eq!(policy.halted_reason, "maintenance window");

    // And it is enforced: the returning agent is told to revert everything.
    let (mut a, _) = agent(&env, &c, "node-a").await;
    match a.next().await {
        Ok(CoordMsg::RevertAll(r)) => assert!(r.message.contains("maintenance window")),
        other => panic!("expected RevertAll, got {other:?}"),
    }
    let back = eventually(Duration::from_secs(2), "node-a connected again", || {
        let mut viewer = viewer.clone();
        async move {
            list_agents(&mut viewer)
                .await
                .into_iter()
                .find(|a| a.connected)
        }
    })
    .await;
    assert_eq!(back.node_name, "node-a");
    c.shutdown().await;
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_data_dir_is_refused() {
    let env = Env::new();
    let c = env.start().await;
    let err = faultline_coordinator::Coordinator::start(env.config(), None)
        .await
        .expect_err("store is locked");
    assert!(
        err.to_string()
            .contains("another coordinator is using this --data-dir"),
        "{err}"
    );
    c.shutdown().await;
}
