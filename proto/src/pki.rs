//! A small certificate authority for development and tests: the CA, the coordinator's server
//! certificate, role certificates for people and tools, and one certificate per agent, in the
//! layout that `--certs-dir` reads (see [`crate::tls::CertPaths::in_dir`]).
//!
//! Production installs bring their own CA or cert-manager; the only contract is the SAN URI
//! `spiffe://faultline/<role>/<name>` in each certificate.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use faultline_core::{Identity, NodeName, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--san {0:?} is neither an IP address nor a DNS name")]
    San(String),
    #[error("agent name {0}")]
    Agent(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity window of an issued certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// A certificate authority that can issue Faultline certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA valid for `validity`.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Faultline");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// Loads an existing CA from its PEM certificate and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
        let key_pem = fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Ca {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `identity` (SAN URI) plus DNS/IP `sans`, usable as a TLS client
    /// and server certificate.
    pub fn issue(
        &self,
        identity: &Identity,
        sans: &[String],
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.name.as_str());
        dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::URI(identity.to_uri().try_into()?));
        for san in sans {
            params.subject_alt_names.push(parse_san(san)?);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn parse_san(san: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns_ok = !san.is_empty()
        && san.len() <= 253
        && san.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !dns_ok {
        return Err(PkiError::San(san.to_string()));
    }
    Ok(SanType::DnsName(
        san.to_string()
            .try_into()
            .map_err(|_| PkiError::San(san.to_string()))?,
    ))
}

/// What `faultctl certs init` should produce.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Extra DNS names and IPs for the coordinator's certificate (localhost, 127.0.0.1 and ::1
    /// are always included).
    pub sans: Vec<String>,
    /// Node names that get an agent certificate.
    pub agents: Vec<String>,
    /// Validity of every certificate issued, in days.
    pub days: i64,
    /// Regenerate everything, including the CA (otherwise existing files are kept).
    pub force: bool,
}

/// One file written or kept by [`init_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFile {
    pub path: PathBuf,
    pub created: bool,
}

/// Writes the CA and every certificate into `dir`. Existing files are kept unless `force`, so
/// running it again with more `agents` only adds their certificates, signed by the same CA.
/// Private keys are written 0600, certificates 0644.
pub fn init_dir(dir: &Path, opts: &InitOptions) -> Result<Vec<InitFile>, PkiError> {
    for a in &opts.agents {
        a.parse::<NodeName>()
            .map_err(|e| PkiError::Agent(format!("{a:?} in --agents: {e}")))?;
    }
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for s in &opts.sans {
        parse_san(s)?;
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
    let validity = Validity::days(opts.days);
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let mut out = Vec::new();
    let ca = if !opts.force && ca_cert.exists() && ca_key.exists() {
        out.push(InitFile {
            path: ca_cert.clone(),
            created: false,
        });
        out.push(InitFile {
            path: ca_key.clone(),
            created: false,
        });
        Ca::load(&ca_cert, &ca_key)?
    } else {
        let ca = Ca::generate(
            "Faultline development CA",
            Validity::days(opts.days.max(1) * 2),
        )?;
        write_file(&ca_cert, ca.cert_pem(), false)?;
        write_file(&ca_key, ca.key_pem(), true)?;
        out.push(InitFile {
            path: ca_cert,
            created: true,
        });
        out.push(InitFile {
            path: ca_key,
            created: true,
        });
        ca
    };
    let mut wanted: Vec<(String, Identity, Vec<String>)> = vec![
        (
            "coordinator".into(),
            Identity::new(Role::Coordinator, "coordinator"),
            sans,
        ),
        ("admin".into(), Identity::new(Role::Admin, "admin"), vec![]),
        (
            "operator".into(),
            Identity::new(Role::Operator, "operator"),
            vec![],
        ),
        (
            "viewer".into(),
            Identity::new(Role::Viewer, "viewer"),
            vec![],
        ),
    ];
    for a in &opts.agents {
        wanted.push((
            format!("agent-{a}"),
            Identity::new(Role::Agent, a.as_str()),
            vec![],
        ));
    }
    for (stem, identity, sans) in wanted {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        if !opts.force && cert.exists() && key.exists() {
            out.push(InitFile {
                path: cert,
                created: false,
            });
            out.push(InitFile {
                path: key,
                created: false,
            });
            continue;
        }
        let issued = ca.issue(&identity, &sans, validity)?;
        // Key first: a certificate on disk always has its key beside it.
        write_file(&key, &issued.key_pem, true)?;
        write_file(&cert, &issued.cert_pem, false)?;
        out.push(InitFile {
            path: cert,
            created: true,
        });
        out.push(InitFile {
            path: key,
            created: true,
        });
    }
    Ok(out)
}

/// Writes `contents` atomically (temp file + rename) with 0600 for secrets, 0644 otherwise.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let tmp = path.with_extension("pem.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;

    #[test]
    fn init_writes_layout_with_modes_and_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            sans: vec!["coord.example".into(), "10.1.2.3".into()],
            agents: vec!["node-a".into()],
            days: 30,
            force: false,
        };
        let files = init_dir(dir.path(), &opts).expect("init");
        assert!(files.iter().all(|f| f.created));
        for stem in ["coordinator", "admin", "operator", "viewer", "agent-node-a"] {
            let key = dir.path().join(format!("{stem}-key.pem"));
            let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{stem} key mode");
            let cert = dir.path().join(format!("{stem}.pem"));
            let mode = fs::metadata(&cert).expect("cert").permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{stem} cert mode");
        }
        let mode = fs::metadata(dir.path().join("ca-key.pem"))
            .expect("ca key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let id = tls::identity_of_file(&dir.path().join("agent-node-a.pem")).expect("identity");
        assert_eq!(id, Identity::new(Role::Agent, "node-a"));
        let id = tls::identity_of_file(&dir.path().join("operator.pem")).expect("identity");
        assert_eq!(id, Identity::new(Role::Operator, "operator"));

        // Running again with another agent keeps the CA and adds only the new files.
        let ca_before = fs::read(dir.path().join("ca.pem")).expect("ca");
        let opts = InitOptions {
            agents: vec!["node-a".into(), "node-b".into()],
            ..opts
        };
        let files = init_dir(dir.path(), &opts).expect("again");
        let created: Vec<_> = files
            .iter()
            .filter(|f| f.created)
            .map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            created,
            vec![
                Some("agent-node-b.pem".to_string()),
                Some("agent-node-b-key.pem".to_string())
            ]
        );
        assert_eq!(fs::read(dir.path().join("ca.pem")).expect("ca"), ca_before);
    }

    #[test]
    fn bad_names_are_refused_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("certs");
        let opts = InitOptions {
            sans: vec![],
            agents: vec!["Bad_Name".into()],
            days: 1,
            force: false,
        };
        let err = init_dir(&target, &opts).expect_err("bad agent");
        assert!(
            err.to_string().contains("\"Bad_Name\" in --agents"),
            "{err}"
        );
        assert!(!target.exists(), "nothing written");
        let opts = InitOptions {
            sans: vec!["not a name".into()],
            agents: vec![],
            days: 1,
            force: false,
        };
        let err = init_dir(&target, &opts).expect_err("bad san");
        assert!(err.to_string().contains("--san"), "{err}");
    }
}
