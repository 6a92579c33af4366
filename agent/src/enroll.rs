//! The agent's own identity when the coordinator issues it: enrollment with a join token, the
//! key and certificate kept in `<state-dir>/identity/`, and renewal over the session.
//!
//! # Guarantees
//! - The private key is made here and never leaves the node: only its CSR is sent. It is
//!   written `0600` in a `0700` directory.
//! - A new key and certificate replace the old ones atomically as a pair: both are written
//!   beside the current files (`*.next`, fsynced) and then renamed, key first. A crash between
//!   the two renames is finished at the next start ([`IdentityFiles::recover`]). The running
//!   session keeps its TLS connection; the next connection uses the new pair.
//! - An answer is stored only when its certificate is for the key this agent made and carries
//!   this node's identity.
//! - With a stored certificate that is still valid no token is needed; a missing or expired
//!   one is replaced by enrolling again when a token is available ([`EnrollingTransport`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::{Identity, NodeName, Role};
use faultline_identity::cert::CertInfo;
use faultline_identity::pki::csr::NewKey;
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb;
use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::session::{Renew, SessionError};
use crate::transport::{Grpc, Inbound, Transport, CONNECT_TIMEOUT};

/// The agent asks for a new certificate at this fraction of its lifetime.
pub const RENEW_AT: f64 = 2.0 / 3.0;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making a key and CSR: {0}")]
    Key(String),
    /// The coordinator could not be reached; worth retrying.
    #[error("enrolling at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The coordinator refused; retrying with the same token will not help.
    #[error("enrolling at {url}: refused by the coordinator ({code}): {message}")]
    Refused {
        url: String,
        code: String,
        message: String,
    },
    #[error("enrolling at {url}: the answer is unusable: {0}", url = .1)]
    Answer(String, String),
    #[error(
        "no usable certificate in {dir} ({why}) and no join token: pass --join-token or \
         --join-token-file (from `faultctl tokens create`), --kubernetes-token-file, or \
         certificate files"
    )]
    NoToken { dir: PathBuf, why: String },
}

impl EnrollError {
    /// Worth trying again later (the coordinator was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        match self {
            EnrollError::Connect { .. } => true,
            EnrollError::Refused { code, .. } => {
                matches!(
                    code.as_str(),
                    "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "INTERNAL"
                )
            }
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError + '_ {
    move |source| EnrollError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<state-dir>/identity/`: `agent.pem` (the chain, leaf first) and `agent-key.pem` (0600).
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    dir: PathBuf,
}

impl IdentityFiles {
    pub fn new(state_dir: &Path) -> Self {
        IdentityFiles {
            dir: state_dir.join("identity"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("agent-key.pem")
    }

    /// The files the session dials with, with `ca` to trust for the coordinator.
    pub fn paths(&self, ca: &Path) -> CertPaths {
        CertPaths {
            cert: self.cert(),
            key: self.key(),
            ca: ca.to_path_buf(),
        }
    }

    fn next(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(".next");
        PathBuf::from(s)
    }

    /// Finishes a replacement a crash interrupted: a `agent.pem.next` means both new files
    /// were complete, so the renames are done now.
    pub fn recover(&self) -> Result<(), EnrollError> {
        let (cert, key) = (self.cert(), self.key());
        let (cert_next, key_next) = (Self::next(&cert), Self::next(&key));
        if cert_next.exists() {
            if key_next.exists() {
                fs::rename(&key_next, &key).map_err(io_err(&key))?;
            }
            fs::rename(&cert_next, &cert).map_err(io_err(&cert))?;
        } else if key_next.exists() {
            // The certificate never arrived: the half-made pair is useless.
            fs::remove_file(&key_next).map_err(io_err(&key_next))?;
        }
        Ok(())
    }

    /// The stored certificate's facts, if there is one that parses.
    pub fn current(&self) -> Option<CertInfo> {
        let certs = tls::load_certs(&self.cert()).ok()?;
        CertInfo::parse(&certs[0]).ok()
    }

    /// Why the stored certificate cannot be used now, or `None` when it can.
    pub fn unusable(&self, node: &NodeName) -> Option<String> {
        let Some(info) = self.current() else {
            return Some(format!(
                "{} is missing or unreadable",
                self.cert().display()
            ));
        };
        if !self.key().exists() {
            return Some(format!("{} is missing", self.key().display()));
        }
        if info.identity != Some(Identity::new(Role::Agent, node.as_str())) {
            return Some(format!("{} is not for agent/{node}", self.cert().display()));
        }
        let now = SystemTime::now();
        if now >= info.not_after {
            return Some(format!(
                "{} expired at {}",
                self.cert().display(),
                humantime::format_rfc3339_seconds(info.not_after)
            ));
        }
        None
    }

    /// Stores a new pair atomically (see the module docs).
    pub fn store(&self, key_pem: &str, chain_pem: &str) -> Result<(), EnrollError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.dir))?;
        let (cert, key) = (self.cert(), self.key());
        let (cert_next, key_next) = (Self::next(&cert), Self::next(&key));
        write_synced(&key_next, key_pem, 0o600)?;
        write_synced(&cert_next, chain_pem, 0o644)?;
        fs::rename(&key_next, &key).map_err(io_err(&key))?;
        fs::rename(&cert_next, &cert).map_err(io_err(&cert))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Checks an issued chain against the key we made and our identity; its leaf's facts.
    fn check_answer(
        &self,
        new: &NewKey,
        node: &NodeName,
        chain_pem: &str,
    ) -> Result<CertInfo, String> {
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or("no certificate in chain_pem")?
            .map_err(|e| format!("chain_pem: {e}"))?;
        if !new.matches(&leaf) {
            return Err("the certificate is not for the key this agent made".into());
        }
        let info = CertInfo::parse(&leaf)?;
        if info.identity != Some(Identity::new(Role::Agent, node.as_str())) {
            return Err(format!(
                "the certificate is for {:?}, not agent/{node}",
                info.identity.map(|i| i.to_string())
            ));
        }
        Ok(info)
    }
}

fn write_synced(path: &Path, contents: &str, mode: u32) -> Result<(), EnrollError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// The join token from `--join-token` (or `FAULTLINE_JOIN_TOKEN`) or `--join-token-file`;
/// `None` when neither is given. A token file readable by others is used, with a warning.
pub fn read_token(flag: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    match (flag, file) {
        (Some(_), Some(_)) => {
            Err("--join-token and --join-token-file: give one of them, not both".into())
        }
        (Some(t), None) => Ok(Some(t.trim().to_string())),
        (None, Some(path)) => {
            let text = fs::read_to_string(path)
                .map_err(|e| format!("--join-token-file {}: {e}", path.display()))?;
            if let Ok(meta) = fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "--join-token-file {} is readable by others (mode {mode:04o}); make it 0600",
                        path.display()
                    );
                }
            }
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(format!(
                    "--join-token-file {}: the file is empty",
                    path.display()
                ));
            }
            Ok(Some(token))
        }
        (None, None) => Ok(None),
    }
}

/// The enrollment listener next to the coordinator's: the same host, the next port.
pub fn default_enroll_url(coordinator: &CoordinatorUrl) -> CoordinatorUrl {
    CoordinatorUrl {
        host: coordinator.host.clone(),
        port: coordinator.port.saturating_add(1),
    }
}

/// The result of an enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub not_after: SystemTime,
    pub labels: Vec<(String, String)>,
}

/// Enrolls this node on the coordinator's enrollment listener.
#[derive(Debug)]
pub struct Enroller {
    pub url: CoordinatorUrl,
    pub ca: PathBuf,
    pub node: NodeName,
    pub token: Option<String>,
    /// A projected ServiceAccount token (audience faultline), read at each enrollment since
    /// the kubelet replaces it; used instead of `token`.
    pub kubernetes_token_file: Option<PathBuf>,
    pub files: IdentityFiles,
}

fn time_of_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl Enroller {
    fn has_credential(&self) -> bool {
        self.token.is_some() || self.kubernetes_token_file.is_some()
    }

    /// The credential to enroll with: the Kubernetes token as the file holds it now, else the
    /// join token.
    fn credential(&self) -> Result<pb::enroll_request::Credential, EnrollError> {
        use pb::enroll_request::Credential;
        if let Some(path) = &self.kubernetes_token_file {
            let token = fs::read_to_string(path).map_err(io_err(path))?;
            let token = token.trim();
            if token.is_empty() {
                return Err(EnrollError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("the Kubernetes token file is empty"),
                });
            }
            return Ok(Credential::KubernetesToken(token.to_string()));
        }
        match &self.token {
            Some(t) => Ok(Credential::JoinToken(t.clone())),
            None => Err(EnrollError::NoToken {
                dir: self.files.dir().to_path_buf(),
                why: "enrollment asked for".into(),
            }),
        }
    }

    /// Sends a CSR for a new key with the credential; stores the pair on success.
    pub async fn enroll(&self) -> Result<Enrolled, EnrollError> {
        let url = self.url.to_string();
        let credential = self.credential()?;
        let new = NewKey::generate(&self.node).map_err(|e| EnrollError::Key(e.to_string()))?;
        let channel = tls::connect_server_only(&self.url, &self.ca, CONNECT_TIMEOUT)
            .await
            .map_err(|e| EnrollError::Connect {
                url: url.clone(),
                reason: tls::error_chain(&e),
            })?;
        let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
        let request = pb::EnrollRequest {
            node_name: self.node.to_string(),
            csr_der: new.csr_der().to_vec(),
            credential: Some(credential),
        };
        let answer = tokio::time::timeout(Duration::from_secs(30), client.enroll(request))
            .await
            .map_err(|_| EnrollError::Connect {
                url: url.clone(),
                reason: "no answer within 30 s".into(),
            })?
            .map_err(|status| {
                let e = SessionError::from_status(status.clone());
                EnrollError::Refused {
                    url: url.clone(),
                    code: match e {
                        SessionError::Refused { code, .. } | SessionError::Stream { code, .. } => {
                            code.to_string()
                        }
                        _ => "UNKNOWN".into(),
                    },
                    message: status.message().to_string(),
                }
            })?
            .into_inner();
        let info = self
            .files
            .check_answer(&new, &self.node, &answer.chain_pem)
            .map_err(|e| EnrollError::Answer(e, url.clone()))?;
        self.files.store(&new.key_pem(), &answer.chain_pem)?;
        let mut labels: Vec<(String, String)> = answer.labels.into_iter().collect();
        labels.sort();
        let enrolled = Enrolled {
            not_after: time_of_ms(answer.not_after_unix_ms).max(info.not_after),
            labels,
        };
        tracing::info!(
            "enrolled as agent/{} at {}: certificate {} valid until {}, key in {} (0600); token \
             labels {:?}",
            self.node,
            self.url,
            info.serial,
            humantime::format_rfc3339_seconds(info.not_after),
            self.files.key().display(),
            enrolled.labels
        );
        Ok(enrolled)
    }

    /// At agent start. With a Kubernetes token the agent always enrolls afresh (a new key): the
    /// pod is the credential, so a pod made after a revocation gets a new certificate while a
    /// stored, revoked one would be refused forever. Otherwise [`Enroller::ensure`].
    pub async fn at_start(&self) -> Result<(), EnrollError> {
        if self.kubernetes_token_file.is_none() {
            return self.ensure().await;
        }
        self.files.recover()?;
        tracing::info!("enrolling with the pod's Kubernetes ServiceAccount token");
        self.enroll().await.map(|_| ())
    }

    /// Enrolls when the stored certificate is missing or expired; nothing otherwise.
    pub async fn ensure(&self) -> Result<(), EnrollError> {
        self.files.recover()?;
        match self.files.unusable(&self.node) {
            None => Ok(()),
            Some(why) if self.has_credential() => {
                tracing::info!("enrolling: {why}");
                self.enroll().await.map(|_| ())
            }
            Some(why) => Err(EnrollError::NoToken {
                dir: self.files.dir().to_path_buf(),
                why,
            }),
        }
    }
}

/// The session transport of an enrolled agent: before each connection, a missing or expired
/// certificate is replaced by enrolling again (when a token is available); then the mutual-TLS
/// session as usual, with the files in the state dir.
#[derive(Debug)]
pub struct EnrollingTransport {
    pub inner: Grpc,
    pub enroller: Arc<Enroller>,
}

impl Transport for EnrollingTransport {
    fn open(
        &self,
        outbound: mpsc::Receiver<pb::AgentMessage>,
    ) -> BoxFuture<'_, Result<Inbound, SessionError>> {
        Box::pin(async move {
            self.enroller
                .ensure()
                .await
                .map_err(|e| SessionError::Connect(e.to_string()))?;
            self.inner.open(outbound).await
        })
    }

    fn target(&self) -> String {
        self.inner.target()
    }
}

/// Renews the stored certificate over the session ([`Renew`]).
#[derive(Debug)]
pub struct Renewer {
    files: IdentityFiles,
    node: NodeName,
    pending: Mutex<Option<NewKey>>,
}

impl Renewer {
    pub fn new(files: IdentityFiles, node: NodeName) -> Self {
        Renewer {
            files,
            node,
            pending: Mutex::new(None),
        }
    }
}

impl Renew for Renewer {
    fn due(&self) -> Option<SystemTime> {
        self.files
            .current()
            .map(|info| info.point_in_lifetime(RENEW_AT))
    }

    fn retry_after(&self) -> Duration {
        let left = self
            .files
            .current()
            .and_then(|info| info.not_after.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        (left / 6).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }

    fn request(&self) -> Result<Vec<u8>, String> {
        let new = NewKey::generate(&self.node).map_err(|e| e.to_string())?;
        let csr = new.csr_der().to_vec();
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
        Ok(csr)
    }

    fn answer(&self, issued: pb::CertificateIssued) -> Result<SystemTime, String> {
        if !issued.error.is_empty() {
            return Err(format!("refused by the coordinator: {}", issued.error));
        }
        let new = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("an answer to no request")?;
        let info = self
            .files
            .check_answer(&new, &self.node, &issued.chain_pem)?;
        self.files
            .store(&new.key_pem(), &issued.chain_pem)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "certificate renewed: {} valid until {} (stored in {}; used from the next connection)",
            info.serial,
            humantime::format_rfc3339_seconds(info.not_after),
            self.files.dir().display()
        );
        Ok(info.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_token_is_read_afresh_for_each_enrollment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let enroller = Enroller {
            url: CoordinatorUrl::parse("https://127.0.0.1:7444").expect("url"),
            ca: dir.path().join("ca.pem"),
            node: "node-a".parse().expect("node"),
            token: None,
            kubernetes_token_file: Some(file.clone()),
            files: IdentityFiles::new(dir.path()),
        };
        assert!(enroller.has_credential());
        let kube = |t: &str| pb::enroll_request::Credential::KubernetesToken(t.into());
        fs::write(&file, "first.jwt\n").expect("write");
        assert_eq!(enroller.credential().expect("token"), kube("first.jwt"));
        // The kubelet replaced it.
        fs::write(&file, "second.jwt").expect("write");
        assert_eq!(enroller.credential().expect("token"), kube("second.jwt"));
        fs::write(&file, "  \n").expect("write");
        let err = enroller.credential().expect_err("empty").to_string();
        assert!(
            err.ends_with("token: the Kubernetes token file is empty"),
            "{err}"
        );
        fs::remove_file(&file).expect("rm");
        let err = enroller.credential().expect_err("missing").to_string();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn an_interrupted_replacement_is_finished_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = IdentityFiles::new(dir.path());
        files.store("KEY1", "CERT1").expect("store");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&files.key()), 0o600);
        assert_eq!(mode(files.dir()), 0o700);
        // Crash after both .next files and the key rename: the cert rename is finished.
        write_synced(&IdentityFiles::next(&files.cert()), "CERT2", 0o644).expect("w");
        write_synced(&files.key(), "KEY2", 0o600).expect("w");
        files.recover().expect("recover");
        assert_eq!(fs::read_to_string(files.cert()).expect("r"), "CERT2");
        assert_eq!(fs::read_to_string(files.key()).expect("r"), "KEY2");
        // Crash before the cert was written: the lone key is dropped, the pair stays.
        write_synced(&IdentityFiles::next(&files.key()), "KEY3", 0o600).expect("w");
        files.recover().expect("recover");
        assert_eq!(fs::read_to_string(files.key()).expect("r"), "KEY2");
        assert!(!IdentityFiles::next(&files.key()).exists());
    }
}
