//! The coordinator's TLS configuration: TLS 1.3, ALPN h2, client certificates verified in the
//! handshake ([`super::server_verify`], with the revocation check when one is given), rebuilt
//! when the certificate, key or CA file changes. The enrollment listener's configuration
//! ([`ReloadingServerConfig::server_only`]) asks for no client certificate: enrolling agents
//! have none yet.

use std::sync::{Arc, Mutex};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::files::{load_certs, load_key, load_roots, Stamp};
use super::server_verify::FaultlineClientVerifier;
use super::{provider, CertPaths, TlsError};
use crate::revocation::RevocationCheck;

/// Whether and how clients authenticate.
#[derive(Debug, Clone)]
enum ClientAuth {
    /// A client certificate chained to the CA file, with a Faultline identity, not revoked.
    Required(Option<Arc<dyn RevocationCheck>>),
    /// None asked for (the enrollment listener); the CA file is not read.
    None,
}

struct ServerState {
    stamps: [Stamp; 3],
    config: Arc<ServerConfig>,
}

/// A server TLS configuration that is rebuilt when its certificate, key or CA file changes.
/// A change that does not load (a half-written file) keeps the previous configuration.
pub struct ReloadingServerConfig {
    paths: CertPaths,
    auth: ClientAuth,
    state: Mutex<ServerState>,
}

impl std::fmt::Debug for ReloadingServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingServerConfig")
            .field("paths", &self.paths)
            .finish()
    }
}

fn build_server(paths: &CertPaths, auth: &ClientAuth) -> Result<ServerState, TlsError> {
    let stamps = paths.stamps();
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match auth {
        ClientAuth::Required(revocations) => {
            let roots = load_roots(&paths.ca)?;
            let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Ca {
                    path: paths.ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(Arc::new(FaultlineClientVerifier {
                webpki,
                revocations: revocations.clone(),
            }))
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerState {
        stamps,
        config: Arc::new(config),
    })
}

impl ReloadingServerConfig {
    /// Mutual TLS: every client presents a certificate verified in the handshake.
    pub fn new(paths: CertPaths) -> Result<Self, TlsError> {
        Self::build(paths, ClientAuth::Required(None))
    }

    /// [`ReloadingServerConfig::new`], also refusing certificates that `revocations` says are
    /// revoked (alert `certificate_revoked`).
    pub fn with_revocations(
        paths: CertPaths,
        revocations: Arc<dyn RevocationCheck>,
    ) -> Result<Self, TlsError> {
        Self::build(paths, ClientAuth::Required(Some(revocations)))
    }

    /// Server authentication only (the enrollment listener): no client certificate is asked
    /// for, so whatever is served behind it must authenticate its callers itself.
    pub fn server_only(paths: CertPaths) -> Result<Self, TlsError> {
        Self::build(paths, ClientAuth::None)
    }

    fn build(paths: CertPaths, auth: ClientAuth) -> Result<Self, TlsError> {
        let state = build_server(&paths, &auth)?;
        Ok(ReloadingServerConfig {
            paths,
            auth,
            state: Mutex::new(state),
        })
    }

    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    /// The configuration to use for the next connection, reloaded if the files changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = self.paths.stamps();
        if stamps != state.stamps {
            match build_server(&self.paths, &self.auth) {
                Ok(new) => {
                    tracing::info!(cert = %self.paths.cert.display(), "TLS certificates changed on disk; reloaded");
                    *state = new;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificates changed on disk but do not load; keeping the previous ones");
                    state.stamps = stamps;
                }
            }
        }
        state.config.clone()
    }
}
