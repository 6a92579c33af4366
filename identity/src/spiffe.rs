//! The Faultline identity of a certificate: the SAN URI `spiffe://faultline/<role>/<name>`.
//!
//! The identity and role types themselves are domain types (`faultline_core::Identity`); this
//! module reads them out of X.509 certificates.

use std::path::Path;

use faultline_core::{Identity, Role};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::tls::{load_certs, TlsError};

/// The Faultline identity in a certificate's SAN URIs, if any. The first SAN URI that parses as
/// a Faultline identity wins.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => Identity::from_uri(uri).ok(),
        _ => None,
    })
}

/// The SAN URIs of a certificate, for error messages ("the certificate says ...").
pub fn uris_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// Reads the identity from a certificate file (what an agent's or faultctl's certificate says).
pub fn identity_of_file(path: &Path) -> Result<Identity, TlsError> {
    let certs = load_certs(path)?;
    identity_of(&certs[0]).ok_or_else(|| TlsError::NoIdentity {
        path: path.to_path_buf(),
    })
}

/// Why a server certificate is not the coordinator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCoordinator {
    #[error(
        "it carries no Faultline identity (SAN URIs: {uris}); the coordinator's certificate must \
         name spiffe://faultline/coordinator/<name>"
    )]
    NoIdentity { uris: String },
    #[error(
        "it belongs to {identity}, not to a coordinator: the coordinator's certificate must \
         name spiffe://faultline/coordinator/<name>"
    )]
    OtherRole { identity: Identity },
}

/// Checks that a server certificate names a coordinator: `spiffe://faultline/coordinator/<name>`.
pub fn require_coordinator(cert: &CertificateDer<'_>) -> Result<Identity, NotCoordinator> {
    match identity_of(cert) {
        Some(id) if id.role == Role::Coordinator => Ok(id),
        Some(identity) => Err(NotCoordinator::OtherRole { identity }),
        None => {
            let uris = uris_of(cert);
            Err(NotCoordinator::NoIdentity {
                uris: if uris.is_empty() {
                    "none".into()
                } else {
                    uris.join(", ")
                },
            })
        }
    }
}
