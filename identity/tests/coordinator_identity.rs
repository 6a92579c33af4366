//! Clients require the coordinator's identity in the server certificate, not only a chain to
//! the CA and the right host name: a server presenting another Faultline certificate (signed
//! by the same CA, valid for 127.0.0.1) is refused by `tls::connect`, the dial faultctl, the
//! agent and the simulator share.

mod support;

use std::time::Duration;

use faultline_core::{Identity, Role};
use faultline_identity::pki::{Usage, Validity};
use faultline_identity::tls::{self, CertPaths, HandshakeFailure, HandshakeLimits, TlsError};
use support::*;

/// A server presenting `identity`'s certificate (with `usage`, valid for 127.0.0.1).
async fn serving(pki: &Pki, identity: Identity, usage: Usage) -> Server {
    let served = pki.issued(
        "served",
        &pki.ca(),
        &identity,
        &["127.0.0.1"],
        Validity::days(1),
        usage,
    );
    let paths = CertPaths {
        ca: pki.certs().join("ca.pem"),
        ..served
    };
    Server::start(paths, HandshakeLimits::default()).await
}

async fn server_refusal(server: &Server, pki: &Pki) -> String {
    match tls::connect(&server.url(), &pki.paths("admin"), Duration::from_secs(5)).await {
        Err(TlsError::ServerCertificate { reason, .. }) => reason,
        Err(other) => panic!("expected a refusal of the server certificate, got: {other}"),
        Ok(_) => panic!("the client accepted a server that is not the coordinator"),
    }
}

#[tokio::test]
async fn an_agent_certificate_with_server_usage_is_not_the_coordinator() {
    let pki = Pki::new();
    let mut server = serving(
        &pki,
        Identity::new(Role::Agent, "node-a"),
        Usage::ClientAndServer,
    )
    .await;
    let reason = server_refusal(&server, &pki).await;
    assert_eq!(
        reason,
        "the server's certificate is not the coordinator's: it belongs to agent/node-a, not to a \
         coordinator: the coordinator's certificate must name spiffe://faultline/coordinator/<name>"
    );
    // The client told the server with an alert; no connection reached HTTP/2.
    match server.refusal().await.failure {
        HandshakeFailure::Failed(why) => {
            assert!(why.contains("TLS alert certificate_unknown"), "{why}")
        }
        other => panic!("expected the client's alert, got {other:?}"),
    }
    // The agent's client (its own certificate) refuses it just the same.
    match tls::connect(
        &server.url(),
        &pki.paths("agent-node-a"),
        Duration::from_secs(5),
    )
    .await
    {
        Err(TlsError::ServerCertificate { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!(
            "the agent's dial must refuse too, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test]
async fn an_agent_certificate_as_issued_cannot_serve_at_all() {
    // What `faultctl certs init` issues to agents: clientAuth only.
    let pki = Pki::new();
    let server = serving(&pki, Identity::new(Role::Agent, "node-a"), Usage::Client).await;
    let reason = server_refusal(&server, &pki).await;
    assert!(
        reason.starts_with("the server's certificate is not valid for TLS server authentication"),
        "{reason}"
    );
}

#[tokio::test]
async fn another_services_certificate_from_the_same_ca_is_not_the_coordinator() {
    // Valid for 127.0.0.1 with serverAuth, signed by the CA the client trusts, but no identity.
    let pki = Pki::new();
    let other = pki.plain(
        "web",
        "127.0.0.1",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let server = Server::start(other, HandshakeLimits::default()).await;
    let reason = server_refusal(&server, &pki).await;
    assert_eq!(
        reason,
        "the server's certificate is not the coordinator's: it carries no Faultline identity \
         (SAN URIs: none); the coordinator's certificate must name \
         spiffe://faultline/coordinator/<name>"
    );
}

#[tokio::test]
async fn the_coordinators_own_certificate_is_accepted() {
    let pki = Pki::new();
    let server = serving(
        &pki,
        Identity::new(Role::Coordinator, "coord-2"),
        Usage::Server,
    )
    .await;
    tls::connect(&server.url(), &pki.paths("admin"), Duration::from_secs(5))
        .await
        .expect("any coordinator name is a coordinator");
}
