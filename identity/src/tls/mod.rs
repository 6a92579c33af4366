//! Mutual TLS for every Faultline connection: TLS 1.3 only, rustls with the ring provider, a
//! client certificate on every connection, identities from `spiffe://faultline/<role>/<name>`.
//!
//! Server side ([`TlsIncoming`], [`ReloadingServerConfig`]): the client's chain is verified
//! against the CA and its Faultline identity required *during the handshake*, so a peer without
//! a valid certificate never reaches HTTP/2; handshakes are capped and time-limited
//! ([`HandshakeLimits`]); each failure is reported with the peer address and the reason
//! ([`HandshakeObserver`]). Certificates are re-read from disk when their files change: the
//! server checks before each accepted connection.
//!
//! Client side ([`connect`], [`client_config`]): the server must present the coordinator's
//! identity `spiffe://faultline/coordinator/<name>` besides a valid chain and the URL's host
//! name; a refusal of the client's own certificate (a TLS alert) comes back as a sentence.
//! Clients build their configuration at each (re)connect, so they too pick up new files.

mod authn;
mod client;
mod client_verify;
mod dial;
mod files;
mod incoming;
mod server_config;
mod server_verify;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::AlertDescription;

pub use authn::{authenticate, caller};
pub use client::{client_config, CoordinatorUrl};
pub use dial::{connect, connect_server_only, connect_via, Dial, DialStream};
pub use files::{load_certs, load_key, CertPaths};
pub use incoming::{
    AnonymousPeer, HandshakeLimits, HandshakeObserver, HandshakeRefusal, LogHandshakes, PeerInfo,
    TlsConn, TlsIncoming, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HANDSHAKES,
};
pub use server_config::ReloadingServerConfig;
pub use server_verify::HandshakeFailure;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("CA certificate {path} is not usable as a trust anchor: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{path}: certificate carries no Faultline identity (expected a SAN URI spiffe://faultline/<role>/<name>)")]
    NoIdentity { path: PathBuf },
    #[error("coordinator URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// This client refused the server's certificate (wrong CA, wrong host name, not the
    /// coordinator's identity, ...).
    #[error("connecting to {url}: {reason}")]
    ServerCertificate { url: String, reason: String },
    /// The coordinator refused this client's certificate during the handshake.
    #[error("client certificate {} refused by the coordinator at {url}: {reason}", cert.display())]
    Refused {
        url: String,
        cert: PathBuf,
        reason: String,
    },
}

/// The one crypto provider Faultline uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An error and all its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A TLS alert by its RFC 8446 name, as operators find it in other tools' logs.
pub(crate) fn alert_name(alert: AlertDescription) -> String {
    let name = match alert {
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        AlertDescription::DecodeError => "decode_error",
        AlertDescription::InternalError => "internal_error",
        other => return format!("{other:?}"),
    };
    name.to_string()
}
