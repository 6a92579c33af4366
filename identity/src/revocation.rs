//! The revocation check the coordinator's handshake consults ([`crate::tls`]): a certificate
//! whose chain verifies is still refused, with the TLS alert `certificate_revoked`, when the
//! check says it is revoked. The coordinator keeps the revoked set (persistent, by serial
//! number and by node and start time) and implements [`RevocationCheck`] over it.

use crate::cert::CertInfo;

/// Consulted for every client certificate whose chain verified, during the handshake. It must
/// answer quickly and without blocking I/O (an in-memory set).
pub trait RevocationCheck: Send + Sync + std::fmt::Debug + 'static {
    /// `Some(why)` when `cert` is revoked: the sentence the coordinator logs, for example
    /// `certificate 5F3A... of agent/node-a was revoked by admin/admin at ...: reason`.
    fn revoked(&self, cert: &CertInfo) -> Option<String>;
}
