//! Kubernetes enrollment through a real coordinator: its enrollment listener (server-only TLS)
//! with the issuer, the Kubernetes API a `tower-test` mock answering the recorded TokenReview
//! and Pod of the agent on node-a. The certificate it issues opens node-a's session and no
//! other; the same token cannot get node-b a certificate; refusals carry the check's message
//! and are audited; a revoked node needs a new pod.

mod common;
mod kube_support;

use std::path::Path;
use std::time::Duration;

use common::{channel_with, fleet, hello, session_refusal, AgentConn, Env, TIMEOUT};
use faultline_coordinator::{Coordinator, EnrollmentConfig, IssuerConfig, PodAccess};
use faultline_core::{Identity, Role};
use faultline_identity::cert::CertInfo;
use faultline_identity::pki::csr::NewKey;
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb::{self, enroll_request::Credential, enrollment_client::EnrollmentClient};
use kube_support::identity::{pod, IdentityApi, TOKEN_A};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tonic::Code;

async fn start(env: &Env, access: PodAccess) -> Coordinator {
    let certs = env.certs();
    let enrollment = EnrollmentConfig {
        issuer: Some(IssuerConfig {
            cert: certs.join("ca.pem"),
            key: certs.join("ca-key.pem"),
            agent_cert_ttl: Duration::from_secs(3600),
        }),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        attempts_per_minute: 1000,
        kubernetes: Some("faultline/faultline-agent".parse().expect("account")),
    };
    Coordinator::start_full(env.config(), None, access, enrollment)
        .await
        .unwrap_or_else(|e| panic!("coordinator did not start: {e}"))
}

/// Enrolls `node` with `token` and a new key; the key (PEM) and the answer.
async fn enroll(
    c: &Coordinator,
    ca: &Path,
    node: &str,
    token: &str,
) -> (String, Result<pb::EnrollResponse, tonic::Status>) {
    let port = c.enroll_addr().expect("enrollment listener").port();
    let url = CoordinatorUrl::parse(&format!("https://127.0.0.1:{port}")).expect("url");
    let channel = tls::connect_server_only(&url, ca, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect to the enrollment listener: {e}"));
    let key = NewKey::generate(&node.parse().expect("node")).expect("key");
    let request = pb::EnrollRequest {
        node_name: node.into(),
        csr_der: key.csr_der().to_vec(),
        credential: Some(Credential::KubernetesToken(token.into())),
    };
    let answer = EnrollmentClient::new(channel)
        .enroll(request)
        .await
        .map(|r| r.into_inner());
    (key.key_pem(), answer)
}

fn leaf(chain_pem: &str) -> CertInfo {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    CertInfo::parse(&der).expect("X.509")
}

async fn audit(env: &Env, c: &Coordinator) -> Vec<pb::AuditEntry> {
    fleet(env, c, "admin")
        .await
        .audit_log(pb::AuditLogRequest { limit: 100 })
        .await
        .expect("audit log")
        .into_inner()
        .entries
}

#[tokio::test]
async fn a_pod_token_gets_its_node_a_certificate_that_opens_only_that_session() {
    let env = Env::with_agents(&[]);
    let api = IdentityApi::node_a();
    let c = start(&env, api.access.clone()).await;
    let ca = env.certs().join("ca.pem");

    let (key_pem, answer) = enroll(&c, &ca, "node-a", TOKEN_A).await;
    let answer = answer.expect("node-a enrolls with its pod's token");
    let info = leaf(&answer.chain_pem);
    assert_eq!(info.identity, Some(Identity::new(Role::Agent, "node-a")));
    assert!(answer.labels.is_empty(), "{:?}", answer.labels);
    assert_eq!(
        answer.ca_bundle_pem,
        std::fs::read_to_string(&ca).expect("ca")
    );

    // The certificate is a working agent identity for node-a, and for node-a only.
    let dir = tempfile::tempdir().expect("dir");
    let paths = CertPaths {
        cert: dir.path().join("agent.pem"),
        key: dir.path().join("agent-key.pem"),
        ca: ca.clone(),
    };
    std::fs::write(&paths.cert, &answer.chain_pem).expect("write cert");
    std::fs::write(&paths.key, &key_pem).expect("write key");
    let mut conn = AgentConn::open(channel_with(&c, &paths).await, hello("node-a", &[]))
        .await
        .expect("node-a's session opens");
    conn.welcome().await;
    let refusal = session_refusal(channel_with(&c, &paths).await, hello("node-b", &[])).await;
    assert_eq!(refusal.code(), Code::PermissionDenied, "{refusal:?}");

    // The same token for node-b: no certificate, the reason in the answer and the audit log.
    let (_, answer) = enroll(&c, &ca, "node-b", TOKEN_A).await;
    let status = answer.expect_err("node-b must not enroll with node-a's pod token");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("is on node node-a, not node-b"),
        "{status:?}"
    );
    let entries = audit(&env, &c).await;
    let enrolls: Vec<(&str, bool, &str)> = entries
        .iter()
        .filter(|e| e.action == "Enrollment.Enroll")
        .map(|e| (e.identity.as_str(), e.allowed, e.detail.as_str()))
        .collect();
    assert!(
        enrolls.iter().any(|(id, ok, d)| *id == "agent/node-a"
            && *ok
            && d.contains("with credential kubernetes")),
        "{enrolls:?}"
    );
    assert!(
        enrolls.iter().any(|(id, ok, d)| *id == "agent/node-b"
            && !*ok
            && d.contains("is on node node-a, not node-b")),
        "{enrolls:?}"
    );
    drop(conn);
    c.shutdown().await;
}

#[tokio::test]
async fn refusals_reach_the_agent_with_their_code_and_without_kubernetes_none_is_served() {
    let env = Env::with_agents(&[]);
    let api = IdentityApi::node_a();
    let c = start(&env, api.access.clone()).await;
    let ca = env.certs().join("ca.pem");
    let (_, answer) = enroll(&c, &ca, "node-a", "forged").await;
    let status = answer.expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("unauthenticated"), "{status:?}");
    api.set_pod(pod(|p| p["status"]["phase"] = json!("Pending")));
    let (_, answer) = enroll(&c, &ca, "node-a", TOKEN_A).await;
    let status = answer.expect_err("pending");
    // UNAVAILABLE: the agent tries again.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    c.shutdown().await;

    let env = Env::with_agents(&[]);
    let c = start(&env, PodAccess::none()).await;
    let (_, answer) = enroll(&c, &env.certs().join("ca.pem"), "node-a", TOKEN_A).await;
    let status = answer.expect_err("no Kubernetes access");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("Kubernetes enrollment is off on this coordinator"),
        "{status:?}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn after_a_revocation_the_old_pod_cannot_enroll_its_node_again_but_a_new_pod_can() {
    let env = Env::with_agents(&[]);
    let api = IdentityApi::node_a();
    // The pod was just made.
    let now = |offset_s: i64| {
        let t = std::time::SystemTime::now() + Duration::from_secs(offset_s.max(0) as u64)
            - Duration::from_secs((-offset_s).max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    api.set_pod(pod(|p| {
        p["metadata"]["creationTimestamp"] = json!(now(-60))
    }));
    let c = start(&env, api.access.clone()).await;
    let ca = env.certs().join("ca.pem");
    enroll(&c, &ca, "node-a", TOKEN_A)
        .await
        .1
        .expect("first enrollment");
    let revoked = fleet(&env, &c, "admin")
        .await
        .revoke_agent(pb::RevokeAgentRequest {
            node_name: "node-a".into(),
            reason: "test".into(),
        })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.revoked_serials.len(), 1, "{revoked:?}");
    // The kubelet keeps refreshing the old pod's token: it stays refused.
    let (_, answer) = enroll(&c, &ca, "node-a", TOKEN_A).await;
    let status = answer.expect_err("the old pod after the revocation");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("node node-a was revoked by admin/admin")
            && status
                .message()
                .contains("it may enroll again only from an agent pod created after that"),
        "{status:?}"
    );
    // The operator deletes the pod; the DaemonSet makes a new one.
    api.set_pod(pod(|p| p["metadata"]["creationTimestamp"] = json!(now(2))));
    let (_, answer) = enroll(&c, &ca, "node-a", TOKEN_A).await;
    let answer = answer.expect("a pod created after the revocation enrolls");
    let info = leaf(&answer.chain_pem);
    assert!(!revoked.revoked_serials.contains(&info.serial));
    c.shutdown().await;
}
