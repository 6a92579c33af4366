//! Who is who in Faultline: TLS configuration and handshake verification for every connection,
//! SPIFFE identities and roles read from certificates, and the PKI that issues them.
//!
//! - [`tls`]: TLS 1.3 with rustls/ring. The coordinator's side verifies client chains during the
//!   handshake, caps concurrent handshakes and reloads its certificates from disk; clients
//!   require the coordinator's identity in the server certificate and turn a refusal alert into
//!   a sentence.
//! - [`spiffe`]: the `spiffe://faultline/<role>/<name>` identity in a certificate.
//! - [`cert`]: the facts of a certificate (serial, validity, key, identity).
//! - [`pki`] (rcgen, by feature): the coordinator's issuer (`issuer`), the agent's key and
//!   certificate request (`csr`), and the development CA of `faultctl certs init` (`dev-pki`,
//!   faultctl and tests only).
//! - [`token`]: join tokens: made, parsed, hashed and compared in constant time.
//! - [`revocation`]: the revocation check the coordinator's handshake consults.
//! - `test_util` (feature `test-util`, test targets only): certificates a server must refuse and
//!   a raw TLS client.
#![forbid(unsafe_code)]

pub mod cert;
#[cfg(any(feature = "issuer", feature = "csr"))]
pub mod pki;
pub mod revocation;
pub mod spiffe;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tls;
pub mod token;
