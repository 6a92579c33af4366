//! Who is who in Faultline: TLS configuration and handshake verification for every connection,
//! SPIFFE identities and roles read from certificates, and the PKI that issues them.
//!
//! - [`tls`]: TLS 1.3 with rustls/ring. The coordinator's side verifies client chains during the
//!   handshake, caps concurrent handshakes and reloads its certificates from disk; clients
//!   require the coordinator's identity in the server certificate and turn a refusal alert into
//!   a sentence.
//! - [`spiffe`]: the `spiffe://faultline/<role>/<name>` identity in a certificate.
//! - [`pki`] (feature `dev-pki`): the development CA of `faultctl certs init`. Certificate
//!   generation (rcgen) lives only behind that feature, so the daemons do not build it.
//! - `test_util` (feature `test-util`, test targets only): certificates a server must refuse and
//!   a raw TLS client.
#![forbid(unsafe_code)]

#[cfg(feature = "dev-pki")]
pub mod pki;
pub mod spiffe;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tls;
