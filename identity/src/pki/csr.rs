//! The agent's side of issuance (feature `csr`): a new key made on the node, never sent
//! anywhere, and the PKCS#10 request that proves possession of it.

use faultline_core::NodeName;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::CertificateDer;

use super::PkiError;
use crate::cert::CertInfo;

/// A key made here and the request for a certificate for it.
pub struct NewKey {
    key: KeyPair,
    csr_der: Vec<u8>,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey").finish_non_exhaustive()
    }
}

impl NewKey {
    /// An ECDSA P-256 key and a request naming `node` (the issuer ignores the name: the
    /// identity comes from the credential; it is there for humans reading the request).
    pub fn generate(node: &NodeName) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.as_str());
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        Ok(NewKey {
            csr_der: csr.der().to_vec(),
            key,
        })
    }

    /// The PKCS#10 request, DER.
    pub fn csr_der(&self) -> &[u8] {
        &self.csr_der
    }

    /// The private key, PEM (PKCS#8), for the agent's state dir (mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Whether `cert` is a certificate for this key (what an answer must be before the agent
    /// stores it).
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        CertInfo::parse(cert).is_ok_and(|info| info.public_key == self.key.public_key_raw())
    }
}
