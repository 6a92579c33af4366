//! Mutual TLS for every Faultline connection: TLS 1.3 only, rustls with the ring provider, a
//! client certificate on every connection, identities from `spiffe://faultline/<role>/<name>`.
//!
//! Server side, the handshake accepts any client certificate whose handshake signature is valid
//! (proof of key possession), and the chain is verified against the CA right after the handshake.
//! The outcome travels with the connection as [`PeerInfo`]; the [`authenticate`] interceptor
//! turns a failure into `UNAUTHENTICATED` with the precise reason (no certificate, unknown CA,
//! expired), which a TLS alert could not carry. No request reaches a service without it.
//!
//! Certificates are re-read from disk when their files change: the server checks before each
//! accepted connection, clients build their configuration at each (re)connect.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use faultline_core::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tonic::{Request, Status};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("CA certificate {path} is not usable as a trust anchor: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{path}: certificate carries no Faultline identity (expected a SAN URI spiffe://faultline/<role>/<name>)")]
    NoIdentity { path: PathBuf },
    #[error("coordinator URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
}

/// Where one party's certificate, key and trusted CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

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

    fn stamps(&self) -> [Option<(SystemTime, u64)>; 3] {
        let stamp = |p: &Path| {
            fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        [stamp(&self.cert), stamp(&self.key), stamp(&self.ca)]
    }
}

/// The one crypto provider Faultline uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The Faultline identity in a certificate's SAN URIs, if any.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Identity::from_uri(uri).ok(),
        _ => None,
    })
}

/// Reads the identity from a certificate file (what an agent's or faultctl's certificate says).
pub fn identity_of_file(path: &Path) -> Result<Identity, TlsError> {
    let certs = load_certs(path)?;
    identity_of(&certs[0]).ok_or_else(|| TlsError::NoIdentity {
        path: path.to_path_buf(),
    })
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Requests every client certificate, checks its handshake signature, and leaves the chain check
/// to [`TlsIncoming`] so the refusal can be explained at the gRPC layer.
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

struct ServerState {
    stamps: [Option<(SystemTime, u64)>; 3],
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
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
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Ca {
            path: paths.ca.clone(),
            reason: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(DeferredClientVerifier {
            inner: verifier.clone(),
        }))
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerState {
        stamps,
        config: Arc::new(config),
        verifier,
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

    /// The configuration to use for the next connection, reloaded if the files changed.
    fn current(&self) -> (Arc<ServerConfig>, Arc<dyn ClientCertVerifier>) {
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
        (state.config.clone(), state.verifier.clone())
    }
}

/// Why a client was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    NoCertificate,
    Rejected(String),
    NoIdentity,
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthFailure::NoCertificate => f.write_str(
                "no client certificate presented: every Faultline connection needs a certificate signed by the Faultline CA",
            ),
            AuthFailure::Rejected(why) => write!(f, "client certificate refused: {why}"),
            AuthFailure::NoIdentity => f.write_str(
                "client certificate carries no Faultline identity (expected a SAN URI spiffe://faultline/<role>/<name>)",
            ),
        }
    }
}

/// What the server knows about the peer of one connection; tonic puts it in every request's
/// extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    pub identity: Result<Identity, AuthFailure>,
}

/// A server-side TLS connection carrying its [`PeerInfo`].
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn verify_peer(
    conn: &rustls::ServerConnection,
    verifier: &dyn ClientCertVerifier,
) -> Result<Identity, AuthFailure> {
    let chain = match conn.peer_certificates() {
        Some(chain) if !chain.is_empty() => chain,
        _ => return Err(AuthFailure::NoCertificate),
    };
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map_err(|e| AuthFailure::Rejected(describe_cert_error(&e)))?;
    identity_of(&chain[0]).ok_or(AuthFailure::NoIdentity)
}

fn describe_cert_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "issued by a CA this coordinator does not trust (unknown issuer)".into()
        }
        rustls::Error::InvalidCertificate(C::Expired) => "certificate has expired".into(),
        rustls::Error::InvalidCertificate(C::ExpiredContext { time, not_after }) => format!(
            "certificate expired (not after {} s since epoch, now {} s)",
            not_after.as_secs(),
            time.as_secs()
        ),
        rustls::Error::InvalidCertificate(C::NotValidYet) => "certificate is not valid yet".into(),
        rustls::Error::InvalidCertificate(C::NotValidYetContext { time, not_before }) => format!(
            "certificate is not valid yet (not before {} s since epoch, now {} s)",
            not_before.as_secs(),
            time.as_secs()
        ),
        rustls::Error::InvalidCertificate(C::Revoked) => "certificate is revoked".into(),
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "certificate signature does not verify against the CA this coordinator trusts (issued by a different CA, perhaps one with the same name)".into()
        }
        other => other.to_string(),
    }
}

/// Accepts TCP connections, runs TLS handshakes concurrently and yields finished connections.
/// Failed handshakes are logged and dropped; they never stall the accept loop.
pub struct TlsIncoming {
    rx: tokio::sync::mpsc::Receiver<Result<TlsConn, io::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, config: Arc<ReloadingServerConfig>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (server_config, verifier) = config.current();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let accept = TlsAcceptor::from(server_config).accept(tcp);
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let identity = verify_peer(stream.get_ref().1, verifier.as_ref());
                    if let Err(why) = &identity {
                        tracing::info!(%remote, reason = %why, "unauthenticated client");
                    }
                    let conn = TlsConn {
                        inner: stream,
                        peer: PeerInfo { remote, identity },
                    };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
        TlsIncoming { rx, task }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsConn, io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Interceptor for every service: refuses requests from unauthenticated connections with
/// `UNAUTHENTICATED` and the reason, and puts the caller's [`Identity`] in the extensions.
#[allow(clippy::result_large_err)]
pub fn authenticate(mut req: Request<()>) -> Result<Request<()>, Status> {
    let peer = req
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("connection carries no TLS peer information"))?;
    match peer.identity {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            Ok(req)
        }
        Err(why) => Err(Status::unauthenticated(format!(
            "{why} (from {})",
            peer.remote
        ))),
    }
}

/// The authenticated caller of a request that passed [`authenticate`].
#[allow(clippy::result_large_err)]
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Builds a client configuration from files on disk (read anew at every call).
pub fn client_config(paths: &CertPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(&paths.ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A parsed `https://host:port` coordinator address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    pub host: String,
    pub port: u16,
}

impl CoordinatorUrl {
    pub fn parse(url: &str) -> Result<Self, TlsError> {
        let bad = |reason: &str| TlsError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https:// (Faultline has no plaintext mode)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("must be https://HOST:PORT with no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host.to_string(), rest.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = if port.is_empty() {
            7443
        } else {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number in 1..=65535"))?
        };
        Ok(CoordinatorUrl { host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

/// Opens a gRPC channel to the coordinator over mutual TLS 1.3. Fails fast (within
/// `connect_timeout`) when the coordinator cannot be reached or the handshake fails.
pub async fn connect(
    url: &CoordinatorUrl,
    paths: &CertPaths,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    let config = client_config(paths)?;
    let server_name = ServerName::try_from(url.host.clone()).map_err(|e| TlsError::Url {
        url: url.to_string(),
        reason: format!("host is not a valid DNS name or IP address: {e}"),
    })?;
    let authority = url.authority();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| TlsError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let config = config.clone();
        let server_name = server_name.clone();
        let authority = authority.clone();
        async move {
            let tcp = TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let connecting = endpoint.connect_with_connector(connector);
    match tokio::time::timeout(connect_timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(TlsError::Connect {
            url: url.to_string(),
            reason: error_chain(&e),
        }),
        Err(_) => Err(TlsError::Connect {
            url: url.to_string(),
            reason: format!("timed out after {connect_timeout:?}"),
        }),
    }
}

/// An error and all its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_urls() {
        let u = CoordinatorUrl::parse("https://coord.example:7443").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("coord.example", 7443));
        let u = CoordinatorUrl::parse("https://127.0.0.1").expect("default port");
        assert_eq!(u.port, 7443);
        let u = CoordinatorUrl::parse("https://[::1]:9000/").expect("v6");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.to_string(), "https://[::1]:9000");
        for bad in [
            "http://a:1",
            "https://:1",
            "https://a:0",
            "https://a:99999",
            "https://a:1/x",
        ] {
            assert!(CoordinatorUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cert_paths_layout() {
        let p = CertPaths::in_dir(Path::new("/c"), "agent-node-a");
        assert_eq!(p.cert, PathBuf::from("/c/agent-node-a.pem"));
        assert_eq!(p.key, PathBuf::from("/c/agent-node-a-key.pem"));
        assert_eq!(p.ca, PathBuf::from("/c/ca.pem"));
    }
}
