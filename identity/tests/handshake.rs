//! Client certificates are verified during the TLS handshake, over real TLS on loopback: a
//! peer without a valid certificate gets a TLS alert and never an HTTP/2 byte, the server
//! reports who was refused from where and why, and our client turns the alert into a sentence.

mod support;

use std::time::Duration;

use faultline_core::{Identity, Role};
use faultline_identity::tls::{self, CertPaths, HandshakeFailure, HandshakeLimits, TlsError};
use rustls::AlertDescription;
use support::*;

async fn server(pki: &Pki) -> Server {
    Server::start(pki.paths("coordinator"), HandshakeLimits::default()).await
}

/// `tls::connect` (what faultctl, the agent and the simulator use) must fail with a refusal.
async fn refused_reason(server: &Server, paths: &CertPaths) -> String {
    match tls::connect(&server.url(), paths, Duration::from_secs(5)).await {
        Err(TlsError::Refused { reason, cert, .. }) => {
            assert_eq!(
                cert, paths.cert,
                "the refusal names the certificate presented"
            );
            reason
        }
        Err(other) => panic!("expected a refusal of the client certificate, got: {other}"),
        Ok(_) => panic!("{} was accepted", paths.cert.display()),
    }
}

#[tokio::test]
async fn a_valid_client_reaches_http2() {
    let pki = Pki::new();
    let server = server(&pki).await;
    let admin = pki.paths("admin");
    let (_, outcome) = raw_exchange(server.addr, raw_config(&admin.ca, Some(&admin))).await;
    assert!(
        outcome.is_h2_settings(),
        "expected HTTP/2 SETTINGS, got {outcome:?}"
    );
    tls::connect(
        &server.url(),
        &pki.paths("agent-node-a"),
        Duration::from_secs(5),
    )
    .await
    .expect("an agent certificate connects");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.seen.refusals.lock().expect("lock").is_empty(),
        "nothing refused"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_fails_the_handshake() {
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let ca = pki.certs().join("ca.pem");
    let (local, outcome) = raw_exchange(server.addr, raw_config(&ca, None)).await;
    assert!(
        !outcome.is_h2_settings(),
        "no HTTP/2 for a client without certificate"
    );
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::CertificateRequired),
        "{outcome:?}"
    );
    let refusal = server.refusal().await;
    assert_eq!(refusal.remote, local, "the refusal names the peer address");
    assert_eq!(refusal.failure, HandshakeFailure::NoCertificate);
    assert_eq!(refusal.presented, None);
    assert!(
        refusal
            .to_string()
            .starts_with(&format!("client {local}: no client certificate presented")),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let foreign = pki.foreign();
    let (local, outcome) = raw_exchange(server.addr, raw_config(&foreign.ca, Some(&foreign))).await;
    assert!(!outcome.is_h2_settings(), "{outcome:?}");
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::UnknownCA),
        "{outcome:?}"
    );
    let refusal = server.refusal().await;
    assert_eq!(refusal.remote, local);
    assert_eq!(
        refusal.presented,
        Some(Identity::new(Role::Viewer, "viewer"))
    );
    match &refusal.failure {
        HandshakeFailure::CertificateRejected(why) => {
            assert!(why.contains("does not trust (unknown issuer)"), "{why}")
        }
        other => panic!("expected CertificateRejected, got {other:?}"),
    }
    assert!(
        refusal
            .to_string()
            .contains("(certificate for viewer/viewer): client certificate refused"),
        "{refusal}"
    );

    let reason = refused_reason(&server, &foreign).await;
    assert_eq!(
        reason,
        "issued by a CA the coordinator does not trust (unknown CA) (TLS alert unknown_ca)"
    );
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let expired = pki.expired();
    let (local, outcome) = raw_exchange(server.addr, raw_config(&expired.ca, Some(&expired))).await;
    assert!(!outcome.is_h2_settings(), "{outcome:?}");
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::CertificateExpired),
        "{outcome:?}"
    );
    let refusal = server.refusal().await;
    assert_eq!(refusal.remote, local);
    match &refusal.failure {
        HandshakeFailure::CertificateRejected(why) => {
            assert!(why.starts_with("certificate expired (not after "), "{why}")
        }
        other => panic!("expected CertificateRejected, got {other:?}"),
    }

    let reason = refused_reason(&server, &expired).await;
    assert!(reason.starts_with("certificate expired on "), "{reason}");
    assert!(
        reason.ends_with("(TLS alert certificate_expired)"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_certificate_without_a_faultline_identity_fails_the_handshake() {
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let anonymous = pki.without_identity();
    let (local, outcome) =
        raw_exchange(server.addr, raw_config(&anonymous.ca, Some(&anonymous))).await;
    assert!(!outcome.is_h2_settings(), "{outcome:?}");
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::AccessDenied),
        "{outcome:?}"
    );
    let refusal = server.refusal().await;
    assert_eq!(refusal.remote, local);
    assert_eq!(refusal.failure, HandshakeFailure::NoIdentity);

    let reason = refused_reason(&server, &anonymous).await;
    assert_eq!(
        reason,
        "certificate carries no Faultline identity (expected a SAN URI \
         spiffe://faultline/<role>/<name>) (TLS alert access_denied)"
    );
}

#[tokio::test]
async fn the_coordinators_certificate_is_no_client_certificate() {
    // serverAuth only: presenting it as a client fails the key usage check.
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let coordinator = pki.paths("coordinator");
    let (_, outcome) =
        raw_exchange(server.addr, raw_config(&coordinator.ca, Some(&coordinator))).await;
    assert!(!outcome.is_h2_settings(), "{outcome:?}");
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::UnsupportedCertificate),
        "{outcome:?}"
    );
    match server.refusal().await.failure {
        HandshakeFailure::CertificateRejected(why) => {
            assert!(why.contains("lacks clientAuth"), "{why}")
        }
        other => panic!("expected CertificateRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn certificates_reload_when_the_files_change() {
    // A client of a new CA is refused until the server's CA file is replaced, then admitted,
    // without restarting the listener.
    let pki = Pki::new();
    let mut server = server(&pki).await;
    let other = Pki::new();
    let reason = refused_reason(
        &server,
        &CertPaths {
            ca: pki.certs().join("ca.pem"),
            ..other.paths("admin")
        },
    )
    .await;
    // Both dev CAs are called "Faultline development CA": the signature is what fails.
    assert!(
        reason.contains("issued by a different CA")
            && reason.ends_with("(TLS alert decrypt_error)"),
        "{reason}"
    );
    let _ = server.refusal().await;
    for f in ["ca.pem", "coordinator.pem", "coordinator-key.pem"] {
        std::fs::copy(other.certs().join(f), pki.certs().join(f)).expect("rotate");
    }
    tls::connect(&server.url(), &other.paths("admin"), Duration::from_secs(5))
        .await
        .expect("the rotated CA is trusted at the next connection");
}
