//! Clients' check of the server: webpki (chain to the CA, serverAuth usage, the host name of
//! the coordinator URL), then the coordinator's identity `spiffe://faultline/coordinator/<name>`
//! in the certificate, so another Faultline certificate with the right DNS name does not pass.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::spiffe::{require_coordinator, NotCoordinator};

#[derive(Debug)]
pub(crate) struct CoordinatorVerifier {
    pub(crate) webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CoordinatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        require_coordinator(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(ServerCertVerified::assertion())
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

/// Why this client refused the server's certificate, in words.
pub(crate) fn describe_server_cert_error(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::Other(OtherError(inner)) => match inner.downcast_ref::<NotCoordinator>() {
            Some(not) => format!("the server's certificate is not the coordinator's: {not}"),
            None => format!("the server's certificate was refused: {inner}"),
        },
        C::UnknownIssuer => "the server's certificate is not signed by the CA this client trusts \
                             (unknown issuer)"
            .into(),
        C::BadSignature => "the server's certificate signature does not verify against the CA \
                            this client trusts (a different CA, perhaps one with the same name)"
            .into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "the server's certificate is not valid for TLS server authentication (its extended \
             key usage lacks serverAuth; only the coordinator's certificate has it): {e}"
        ),
        other => format!("the server's certificate was refused: {other}"),
    }
}
