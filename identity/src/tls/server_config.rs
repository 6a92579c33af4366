//! The coordinator's TLS configuration: TLS 1.3, ALPN h2, client certificates verified in the
//! handshake ([`super::server_verify`]), rebuilt when the certificate, key or CA file changes.

use std::sync::{Arc, Mutex};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::files::{load_certs, load_key, load_roots, Stamp};
use super::server_verify::FaultlineClientVerifier;
use super::{provider, CertPaths, TlsError};

struct ServerState {
    stamps: [Stamp; 3],
    config: Arc<ServerConfig>,
}

/// A server TLS configuration that is rebuilt when its certificate, key or CA file changes.
/// A change that does not load (a half-written file) keeps the previous configuration.
pub struct ReloadingServerConfig {
    paths: CertPaths,
    state: Mutex<ServerState>,
}

impl std::fmt::Debug for ReloadingServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingServerConfig")
            .field("paths", &self.paths)
            .finish()
    }
}

fn build_server(paths: &CertPaths) -> Result<ServerState, TlsError> {
    let stamps = paths.stamps();
    let provider = provider();
    let roots = load_roots(&paths.ca)?;
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Ca {
            path: paths.ca.clone(),
            reason: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(FaultlineClientVerifier { webpki }))
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerState {
        stamps,
        config: Arc::new(config),
    })
}

impl ReloadingServerConfig {
    pub fn new(paths: CertPaths) -> Result<Self, TlsError> {
        let state = build_server(&paths)?;
        Ok(ReloadingServerConfig {
            paths,
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
            match build_server(&self.paths) {
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
