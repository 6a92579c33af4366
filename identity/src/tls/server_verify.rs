//! The coordinator's check of client certificates, run *during* the TLS handshake: the chain
//! must verify against the CA (webpki: signature, validity, clientAuth usage) and the leaf must
//! carry a Faultline identity. A client that fails either never completes the handshake, so it
//! never reaches HTTP/2.
//!
//! A failed check sends the client the most precise TLS alert rustls has (`certificate_required`,
//! `unknown_ca`, `certificate_expired`, `access_denied` for a missing identity, ...); the server
//! side gets a [`HandshakeFailure`] with the full reason for its log and metrics.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::cert::CertInfo;
use crate::revocation::RevocationCheck;
use crate::spiffe::identity_of;

/// What the verifier learnt about the client's certificate, for the refusal report.
#[derive(Debug, Default)]
pub(crate) struct Presented {
    /// The identity the certificate claims (verified or not).
    pub(crate) identity: Option<Identity>,
    /// Why the revocation check refused it.
    pub(crate) revoked: Option<String>,
}

tokio::task_local! {
    /// Recorded by the verifier for the handshake task that runs it (so a refusal can say who
    /// was refused and why, not only from where).
    static PRESENTED: RefCell<Presented>;
}

/// Runs a server handshake future, returning its output and what the client's certificate
/// claimed, if it presented one.
pub(crate) async fn recording_presented<F: std::future::Future>(
    handshake: F,
) -> (F::Output, Presented) {
    PRESENTED
        .scope(RefCell::new(Presented::default()), async move {
            let out = handshake.await;
            let presented = PRESENTED.with(|p| std::mem::take(&mut *p.borrow_mut()));
            (out, presented)
        })
        .await
}

/// Webpki's chain check, "the leaf names a Faultline identity" and the revocation check, all
/// inside the handshake.
#[derive(Debug)]
pub(crate) struct FaultlineClientVerifier {
    pub(crate) webpki: Arc<dyn ClientCertVerifier>,
    pub(crate) revocations: Option<Arc<dyn RevocationCheck>>,
}

impl ClientCertVerifier for FaultlineClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = identity_of(end_entity);
        let _ = PRESENTED.try_with(|p| p.borrow_mut().identity = identity.clone());
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        if identity.is_none() {
            // Only this verifier produces ApplicationVerificationFailure (alert access_denied);
            // HandshakeFailure::from_io reads it back as NoIdentity.
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        if let Some(check) = &self.revocations {
            let info = CertInfo::parse(end_entity)
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            if let Some(why) = check.revoked(&info) {
                let _ = PRESENTED.try_with(|p| p.borrow_mut().revoked = Some(why));
                return Err(CertificateError::Revoked.into());
            }
        }
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Why a server-side handshake did not produce an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client sent no certificate (alert `certificate_required`).
    NoCertificate,
    /// The chain did not verify: unknown CA, expired, not yet valid, wrong key usage, ...
    CertificateRejected(String),
    /// A valid chain, but the certificate is revoked (alert `certificate_revoked`); why.
    Revoked(String),
    /// A valid chain whose leaf carries no `spiffe://faultline/<role>/<name>` (alert
    /// `access_denied`).
    NoIdentity,
    /// The handshake did not finish within the handshake timeout.
    TimedOut(Duration),
    /// Anything else: not TLS, an old protocol version, the client's own alert (for example it
    /// refused this server's certificate), or the connection closed mid-handshake.
    Failed(String),
}

impl HandshakeFailure {
    /// True for the failures that refuse a client's credentials (as opposed to a broken or
    /// slow connection).
    pub fn is_auth_refusal(&self) -> bool {
        matches!(
            self,
            HandshakeFailure::NoCertificate
                | HandshakeFailure::CertificateRejected(_)
                | HandshakeFailure::Revoked(_)
                | HandshakeFailure::NoIdentity
        )
    }

    /// Classifies the error of a server handshake (tokio-rustls wraps rustls errors in
    /// `io::Error`).
    pub(crate) fn from_io(e: &io::Error) -> Self {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoCertificate,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )) => HandshakeFailure::NoIdentity,
            Some(rustls::Error::InvalidCertificate(c)) => {
                HandshakeFailure::CertificateRejected(describe_cert_error(c))
            }
            Some(rustls::Error::AlertReceived(alert)) => HandshakeFailure::Failed(format!(
                "the client aborted the handshake with TLS alert {} (a client that refuses this \
                 server's certificate sends bad_certificate, unknown_ca or certificate_unknown)",
                super::alert_name(*alert)
            )),
            Some(other) => HandshakeFailure::Failed(other.to_string()),
            None if e.kind() == io::ErrorKind::UnexpectedEof => HandshakeFailure::Failed(
                "the connection closed before the handshake finished".into(),
            ),
            None => HandshakeFailure::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::NoCertificate => f.write_str(
                "no client certificate presented: every Faultline connection needs a certificate signed by the Faultline CA",
            ),
            HandshakeFailure::CertificateRejected(why) => {
                write!(f, "client certificate refused: {why}")
            }
            HandshakeFailure::Revoked(why) => write!(f, "client certificate refused: {why}"),
            HandshakeFailure::NoIdentity => f.write_str(
                "client certificate carries no Faultline identity (expected a SAN URI spiffe://faultline/<role>/<name>)",
            ),
            HandshakeFailure::TimedOut(after) => {
                write!(f, "TLS handshake did not finish within {after:?}")
            }
            HandshakeFailure::Failed(why) => write!(f, "TLS handshake failed: {why}"),
        }
    }
}

/// A certificate verification error in words, naming the cause.
pub(crate) fn describe_cert_error(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => {
            "issued by a CA this coordinator does not trust (unknown issuer)".into()
        }
        C::Expired => "certificate has expired".into(),
        C::ExpiredContext { time, not_after } => format!(
            "certificate expired (not after {} s since epoch, now {} s)",
            not_after.as_secs(),
            time.as_secs()
        ),
        C::NotValidYet => "certificate is not valid yet".into(),
        C::NotValidYetContext { time, not_before } => format!(
            "certificate is not valid yet (not before {} s since epoch, now {} s)",
            not_before.as_secs(),
            time.as_secs()
        ),
        C::Revoked => "certificate is revoked".into(),
        C::BadSignature => {
            "certificate signature does not verify against the CA this coordinator trusts (issued by a different CA, perhaps one with the same name)".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "certificate is not valid for TLS client authentication (its extended key usage \
             lacks clientAuth): {e}"
        ),
        other => other.to_string(),
    }
}
