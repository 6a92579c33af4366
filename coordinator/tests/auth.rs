//! Authentication and authorization refusals over real mutual TLS on 127.0.0.1: what each
//! refused caller gets back, and that refused mutations land in the audit log.

mod common;

use common::*;
use faultline_core::{Identity, Role};
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use faultline_proto::pb::fleet_client::FleetClient;
use faultline_proto::pki::{self, Ca, Validity};
use faultline_proto::tls::CertPaths;
use tonic::Code;

#[tokio::test]
async fn no_client_certificate_is_unauthenticated() {
    let env = Env::new();
    let c = env.start().await;
    let ch = raw_channel(&c, no_client_cert_config(&env.certs().join("ca.pem"))).await;
    let err = FleetClient::new(ch)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("no client certificate"),
        "{}",
        err.message()
    );
    c.shutdown().await;
}

/// Writes a certificate for `identity` issued by `ca` (with `validity`) and returns paths that
/// present it while trusting the real coordinator CA.
fn foreign_cert(
    env: &Env,
    ca: &Ca,
    identity: &Identity,
    validity: Validity,
    stem: &str,
) -> CertPaths {
    let issued = ca.issue(identity, &[], validity).expect("issue");
    let dir = env.dir.path().join("other");
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    pki::write_file(&cert, &issued.cert_pem, false).expect("write cert");
    pki::write_file(&key, &issued.key_pem, true).expect("write key");
    CertPaths {
        cert,
        key,
        ca: env.certs().join("ca.pem"),
    }
}

#[tokio::test]
async fn certificate_from_another_ca_is_unauthenticated() {
    let env = Env::new();
    let c = env.start().await;
    let other = Ca::generate("Somebody else's CA", Validity::days(1)).expect("CA");
    let admin = Identity::new(Role::Admin, "admin");
    let paths = foreign_cert(&env, &other, &admin, Validity::days(1), "admin");
    let err = FleetClient::new(channel_with(&c, &paths).await)
        .halt_all(pb::HaltAllRequest {
            reason: "from a stranger".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("unknown issuer") && err.message().contains("does not trust"),
        "{}",
        err.message()
    );
    // Not halted, and nothing attributed to the stranger.
    let mut admin = fleet(&env, &c, "admin").await;
    let policy = admin
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("policy");
    assert!(!policy.into_inner().halted);
    c.shutdown().await;
}

#[tokio::test]
async fn expired_certificate_is_unauthenticated() {
    let env = Env::new();
    let c = env.start().await;
    let ca = Ca::load(&env.certs().join("ca.pem"), &env.certs().join("ca-key.pem")).expect("CA");
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let viewer = Identity::new(Role::Viewer, "viewer");
    let paths = foreign_cert(&env, &ca, &viewer, past, "viewer-expired");
    let err = FleetClient::new(channel_with(&c, &paths).await)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());
    c.shutdown().await;
}

#[tokio::test]
async fn roles_decide_who_may_call_what() {
    let env = Env::new();
    let c = env.start().await;
    let halt = || pb::HaltAllRequest {
        reason: "game day".into(),
    };

    let err = fleet(&env, &c, "viewer")
        .await
        .halt_all(halt())
        .await
        .expect_err("viewer may not halt");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity viewer/viewer (role viewer) may not call Fleet.HaltAll: it requires role admin"
    );

    let err = fleet(&env, &c, "operator")
        .await
        .halt_all(halt())
        .await
        .expect_err("operator may not halt");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity operator/operator (role operator) may not call Fleet.HaltAll: it requires role admin"
    );

    let err = fleet(&env, &c, "agent-node-a")
        .await
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect_err("agent may not list");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "identity agent/node-a (role agent) may not call Fleet.ListAgents: agent certificates may only open an AgentSession"
    );

    // A viewer reads; creating experiments is refused to it; an operator's empty document is
    // refused for what it lacks.
    let mut viewer = fleet(&env, &c, "viewer").await;
    assert!(list_agents(&mut viewer).await.is_empty());
    let create = || pb::CreateExperimentRequest {
        document: "{}".into(),
        dry_run: true,
        start: false,
    };
    let err = ExperimentsClient::new(channel(&env, &c, "viewer").await)
        .create(create())
        .await
        .expect_err("viewer may not create");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("it requires role operator or admin"),
        "{}",
        err.message()
    );
    let err = ExperimentsClient::new(channel(&env, &c, "operator").await)
        .create(create())
        .await
        .expect_err("an empty document");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "apiVersion: is required (faultline.dev/v1)");

    // The admin may halt; no agent is connected, so none is signalled.
    let mut admin = fleet(&env, &c, "admin").await;
    let resp = admin
        .halt_all(halt())
        .await
        .expect("admin halts")
        .into_inner();
    assert_eq!(resp.agents_signalled, 0);

    // Refused mutations are in the audit log with allowed=false, next to the allowed one.
    let entries = audit(&mut viewer).await;
    let find = |who: &str, action: &str| {
        entries
            .iter()
            .find(|e| e.identity == who && e.action == action)
            .unwrap_or_else(|| panic!("no audit entry for {who} {action} in {entries:#?}"))
    };
    let refused = find("viewer/viewer", "Fleet.HaltAll");
    assert!(!refused.allowed);
    assert!(
        refused.detail.contains("it requires role admin"),
        "{}",
        refused.detail
    );
    assert!(!find("operator/operator", "Fleet.HaltAll").allowed);
    assert!(!find("viewer/viewer", "Experiments.Create").allowed);
    let refused = find("operator/operator", "Experiments.Create");
    assert!(!refused.allowed, "not carried out: {refused:?}");
    assert_eq!(
        refused.detail,
        "refused: apiVersion: is required (faultline.dev/v1)"
    );
    let halted = find("admin/admin", "Fleet.HaltAll");
    assert!(
        halted.allowed && halted.detail.contains("game day"),
        "{halted:?}"
    );
    assert!(halted.at_unix_ms > 0 && halted.at_unix_ms <= now_ms());
    // Reads are not audited.
    assert!(entries.iter().all(|e| e.action != "Fleet.ListAgents"));
    // Newest first.
    assert!(entries
        .windows(2)
        .all(|w| w[0].at_unix_ms >= w[1].at_unix_ms));
    c.shutdown().await;
}

#[tokio::test]
async fn an_agent_may_only_open_a_session_for_its_own_node() {
    let env = Env::new();
    let c = env.start().await;
    let ch = channel(&env, &c, "agent-node-a").await;
    let err = session_refusal(ch, hello("node-b", &[])).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "identity agent/node-a may only open a session for node \"node-a\", not \"node-b\""
    );

    // Only agent certificates open sessions.
    let ch = channel(&env, &c, "admin").await;
    let err = session_refusal(ch, hello("node-a", &[])).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "identity admin/admin (role admin) may not call AgentSession.Connect: it requires role agent"
    );

    let mut viewer = fleet(&env, &c, "viewer").await;
    assert!(
        list_agents(&mut viewer).await.is_empty(),
        "nobody registered"
    );
    let entries = audit(&mut viewer).await;
    let refused = entries
        .iter()
        .find(|e| e.identity == "agent/node-a" && e.action == "AgentSession.Connect")
        .unwrap_or_else(|| panic!("refused session not audited: {entries:#?}"));
    assert!(
        !refused.allowed && refused.detail.contains("not \"node-b\""),
        "{refused:?}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn an_invalid_hello_is_refused_naming_the_field() {
    let env = Env::new();
    let c = env.start().await;
    let ch = channel(&env, &c, "agent-node-a").await;
    let err = session_refusal(ch.clone(), hello("node-a", &[("zone", "a b")])).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("hello.labels: label zone"),
        "{}",
        err.message()
    );

    let err = session_refusal(ch.clone(), hello("Node_A", &[])).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("hello.node_name: node name \"Node_A\""),
        "{}",
        err.message()
    );

    let err = session_refusal(ch, telemetry(0.1, 1)).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "the first message of an AgentSession must be Hello, got Telemetry"
    );
    c.shutdown().await;
}
