//! A fake coordinator endpoint for faultctl's tests: a dev certs dir in a temp dir and one gRPC
//! service behind the real mTLS listener on 127.0.0.1. Stops when dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use faultline_identity::pki::{self, InitOptions};
use faultline_identity::tls::{
    CertPaths, HandshakeLimits, LogHandshakes, ReloadingServerConfig, TlsIncoming,
};

pub struct Listening {
    pub url: String,
    pub certs: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
    tmp: tempfile::TempDir,
}

impl Listening {
    /// The temp dir holding the certs dir; tests may write their own files there.
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
}

/// Writes the `faultctl certs init` layout (no agents) into `dir`.
pub fn init_certs(dir: &Path) {
    let opts = InitOptions {
        sans: vec![],
        agents: vec![],
        days: 1,
        force: false,
    };
    pki::init_dir(dir, &opts).unwrap_or_else(|e| panic!("certs in {}: {e}", dir.display()));
}

/// Serves `routes` (services already wrapped with the authentication interceptor) over mutual
/// TLS with a fresh certs dir.
pub async fn serve(routes: tonic::service::Routes) -> Listening {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    init_certs(&certs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let config = ReloadingServerConfig::new(CertPaths::in_dir(&certs, "coordinator"))
        .expect("server TLS config");
    let incoming = TlsIncoming::new(
        listener,
        Arc::new(config),
        HandshakeLimits::default(),
        Arc::new(LogHandshakes),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Listening {
        url: format!("https://{addr}"),
        certs,
        _stop: stop,
        tmp,
    }
}
