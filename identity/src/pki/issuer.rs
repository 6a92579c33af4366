//! The coordinator's issuer (feature `issuer`): signs an agent's PKCS#10 request with the
//! issuing CA loaded from files, for `spiffe://faultline/agent/<node>`, clientAuth only, with a
//! short lifetime.
//!
//! # Guarantees
//! - The request's signature is checked (it proves the agent holds the key); of the request
//!   only the public key is used. Its subject, SANs and extensions are ignored: the node name
//!   comes from the caller, who took it from a verified credential (a join token, a session's
//!   certificate).
//! - The certificate never outlives the issuing CA, and its `notBefore` is never earlier than
//!   the `not_before_floor` the caller gives (a revoked node's old certificates are those that
//!   start at or before the revocation, so new ones must start after it).
//! - Every certificate gets a fresh random 127-bit serial number.
//!
//! The CA file may hold a chain (an intermediate first, as cert-manager writes `tls.crt`): the
//! first certificate must be the one the key belongs to, and the whole file is appended to
//! every issued leaf so that clients present the full chain.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::{Identity, NodeName, Role};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::cert::CertInfo;
use crate::tls::load_certs;

/// How far `notBefore` is set in the past, for agents whose clock is a little behind: this, or
/// a tenth of the lifetime if that is less (so the lifetime an agent sees stays close to the
/// configured one, and its renewal at two thirds of it comes when expected).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {path}: {what}")]
    File {
        flag: &'static str,
        path: PathBuf,
        what: String,
    },
    /// The agent's request is unusable; the message names the field.
    #[error("csr_der: {0}")]
    Csr(String),
    #[error("signing the certificate: {0}")]
    Sign(rcgen::Error),
    #[error("the issuing CA {path} expires at {ca_not_after:?}, before a certificate could start")]
    CaExpired {
        path: PathBuf,
        ca_not_after: SystemTime,
    },
    #[error("the issued certificate does not parse: {0}")]
    Issued(String),
}

/// One issued agent certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAgent {
    /// The leaf, then the issuing CA's chain, PEM.
    pub chain_pem: String,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before_unix_ms: i64,
    pub not_after_unix_ms: i64,
}

/// The issuing CA: certificate (chain), key and the lifetime of what it issues.
pub struct AgentIssuer {
    issuer: Issuer<'static, KeyPair>,
    chain_pem: String,
    ca_not_after: SystemTime,
    ttl: Duration,
    cert_path: PathBuf,
}

impl std::fmt::Debug for AgentIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIssuer")
            .field("cert", &self.cert_path)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, IssuerError> {
    std::fs::read_to_string(path).map_err(|source| IssuerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl AgentIssuer {
    /// Loads the issuing CA from `--issuer-cert` (PEM, the CA first, then its chain) and
    /// `--issuer-key` (PEM, PKCS#8), and checks that the certificate is a CA that may sign
    /// certificates and that the key is its key.
    pub fn load(cert_path: &Path, key_path: &Path, ttl: Duration) -> Result<Self, IssuerError> {
        let cert_err = |what: String| IssuerError::File {
            flag: "--issuer-cert",
            path: cert_path.to_path_buf(),
            what,
        };
        let chain_pem = read(cert_path)?;
        let certs = load_certs(cert_path).map_err(|e| cert_err(e.to_string()))?;
        let ca = &certs[0];
        let info = CertInfo::parse(ca).map_err(cert_err)?;
        if !info.is_ca {
            return Err(cert_err(
                "the first certificate is not a CA (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IssuerError::File {
            flag: "--issuer-key",
            path: key_path.to_path_buf(),
            what: format!(
                "not a usable private key ({e}); it must be PEM \"PRIVATE KEY\" (PKCS#8): convert \
                 with `openssl pkcs8 -topk8 -nocrypt`, or set privateKey.encoding: PKCS8 in \
                 cert-manager"
            ),
        })?;
        if key.public_key_raw() != info.public_key.as_slice() {
            return Err(IssuerError::File {
                flag: "--issuer-key",
                path: key_path.to_path_buf(),
                what: format!(
                    "is not the key of the first certificate in {}",
                    cert_path.display()
                ),
            });
        }
        let issuer = Issuer::from_ca_cert_der(ca, key).map_err(|e| cert_err(e.to_string()))?;
        if !issuer.key_usages().is_empty()
            && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign)
        {
            return Err(cert_err(
                "the CA's key usage does not allow signing certificates (keyCertSign)".into(),
            ));
        }
        Ok(AgentIssuer {
            issuer,
            chain_pem: normalize(&chain_pem),
            ca_not_after: info.not_after,
            ttl,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The lifetime of issued certificates.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the issuing CA itself expires.
    pub fn ca_not_after(&self) -> SystemTime {
        self.ca_not_after
    }

    /// Issues `spiffe://faultline/agent/<node>` for the key of `csr_der`, valid from
    /// max(now − min([`CLOCK_SKEW`], lifetime/10), `not_before_floor`) for the issuer's lifetime (never past the
    /// CA's own expiry).
    pub fn issue(
        &self,
        node: &NodeName,
        csr_der: &[u8],
        not_before_floor: Option<SystemTime>,
    ) -> Result<IssuedAgent, IssuerError> {
        if csr_der.is_empty() {
            return Err(IssuerError::Csr(
                "empty; send a PKCS#10 request (DER)".into(),
            ));
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(
            |e| match e {
                rcgen::Error::InvalidCertificationRequestSignature => IssuerError::Csr(
                    "the request's signature does not verify with its own key".into(),
                ),
                other => IssuerError::Csr(format!("not a usable PKCS#10 request: {other}")),
            },
        )?;
        let now = SystemTime::now();
        let mut not_before = now - CLOCK_SKEW.min(self.ttl / 10);
        if let Some(floor) = not_before_floor {
            not_before = not_before.max(floor);
        }
        let not_after = (now + self.ttl).min(self.ca_not_after);
        if not_after <= not_before {
            return Err(IssuerError::CaExpired {
                path: self.cert_path.clone(),
                ca_not_after: self.ca_not_after,
            });
        }
        let identity = Identity::new(Role::Agent, node.as_str());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.as_str());
        dn.push(DnType::OrganizationalUnitName, Role::Agent.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            identity.to_uri().try_into().map_err(IssuerError::Sign)?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let serial = random_serial().map_err(IssuerError::Sign)?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(IssuerError::Sign)?;
        let leaf = CertInfo::parse(&CertificateDer::from(cert.der().to_vec()))
            .map_err(IssuerError::Issued)?;
        Ok(IssuedAgent {
            chain_pem: format!("{}{}", normalize(&cert.pem()), self.chain_pem),
            serial: leaf.serial,
            not_before_unix_ms: unix_ms(leaf.not_before),
            not_after_unix_ms: unix_ms(leaf.not_after),
        })
    }
}

/// PEM text ending in exactly one newline.
fn normalize(pem: &str) -> String {
    format!("{}\n", pem.trim_end())
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    // Whole seconds: X.509 times have no fractions, and the floor must not round down.
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Milliseconds since the epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 16 random bytes with the top bit clear (a positive INTEGER of at most 16 bytes).
fn random_serial() -> Result<[u8; 16], rcgen::Error> {
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    Ok(serial)
}
