//! Certificate renewal inside the session: the loop asks at the time [`Renew::due`] says
//! (two thirds of the certificate's lifetime), sends the CSR as `RenewCertificate`, and hands
//! the coordinator's `CertificateIssued` back. Nothing about the running session changes: the
//! new certificate is used from the next connection.

use std::time::{Duration, SystemTime};

use faultline_proto::pb;
use tokio::time::Instant;

/// The agent's certificate store, as the session sees it.
pub trait Renew: Send + Sync + std::fmt::Debug {
    /// When to ask for a new certificate; `None` when there is no certificate to renew.
    fn due(&self) -> Option<SystemTime>;
    /// How long to wait before asking again after a request that got no usable answer.
    fn retry_after(&self) -> Duration;
    /// Makes a new key (kept until the answer) and returns its CSR, DER.
    fn request(&self) -> Result<Vec<u8>, String>;
    /// Stores the answer when it fits the key; the new certificate's end.
    fn answer(&self, issued: pb::CertificateIssued) -> Result<SystemTime, String>;
}

/// A wall-clock time as a tokio instant (now, if it has passed).
pub(crate) fn instant_of(t: SystemTime) -> Instant {
    let wait = t
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

/// Sleeps until `at`, or forever when there is nothing to renew.
pub(crate) async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
