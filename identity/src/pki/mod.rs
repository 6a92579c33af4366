//! Issuing Faultline certificates with rcgen, in three parts that different binaries build:
//!
//! - [`issuer`] (feature `issuer`, the coordinator): [`AgentIssuer`] signs an agent's PKCS#10
//!   request with the coordinator's issuing CA (from files; an intermediate with its chain
//!   works). Only the request's key is used: the identity comes from the verified credential.
//! - [`csr`] (feature `csr`, the agent): a new key made on the node and the request for it.
//! - [`ca`] and [`init_dir`] (feature `dev-pki`, faultctl and tests only): the development CA
//!   of `faultctl certs init`, which makes keys for others.
//!
//! Production installs bring their own CA or cert-manager for the coordinator's certificate and
//! for people; the contract is the SAN URI `spiffe://faultline/<role>/<name>` in each
//! certificate, serverAuth on the coordinator's and clientAuth on everyone else's.

#[cfg(feature = "dev-pki")]
mod ca;
#[cfg(feature = "csr")]
pub mod csr;
#[cfg(feature = "dev-pki")]
mod dev;
#[cfg(feature = "issuer")]
pub mod issuer;

#[cfg(feature = "dev-pki")]
pub(crate) use ca::parse_san;
#[cfg(feature = "dev-pki")]
pub use ca::{Ca, Issued, Usage, Validity};
#[cfg(feature = "dev-pki")]
pub use dev::{init_dir, InitFile, InitOptions};
#[cfg(feature = "issuer")]
pub use issuer::{AgentIssuer, IssuedAgent, IssuerError};

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
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
