//! Certificate, key and CA files on disk: the `--certs-dir` layout and PEM loading.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::TlsError;

/// Where one party's certificate, key and trusted CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Modification time and size of a file, to notice rotation.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

impl CertPaths {
    /// The `faultctl certs init` layout: `DIR/<stem>.pem`, `DIR/<stem>-key.pem`, `DIR/ca.pem`.
    /// Stems: `coordinator`, `admin`, `operator`, `viewer`, `agent-<node>`.
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        CertPaths {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
            ca: dir.join("ca.pem"),
        }
    }

    pub(crate) fn stamps(&self) -> [Stamp; 3] {
        let stamp = |p: &Path| {
            fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        [stamp(&self.cert), stamp(&self.key), stamp(&self.ca)]
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

/// The trust anchors of a CA file.
pub(crate) fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_paths_layout() {
        let p = CertPaths::in_dir(Path::new("/c"), "agent-node-a");
        assert_eq!(p.cert, PathBuf::from("/c/agent-node-a.pem"));
        assert_eq!(p.key, PathBuf::from("/c/agent-node-a-key.pem"));
        assert_eq!(p.ca, PathBuf::from("/c/ca.pem"));
    }

    #[test]
    fn unreadable_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = load_certs(&missing).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with(&format!("reading {}", missing.display())),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "hello\n").expect("write");
        let e = load_certs(&empty).expect_err("empty");
        assert_eq!(
            e.to_string(),
            format!("{}: no CERTIFICATE block found", empty.display())
        );
        let e = load_key(&empty).expect_err("no key");
        assert!(e.to_string().contains("no usable private key"), "{e}");
    }
}
