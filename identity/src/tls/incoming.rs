//! The coordinator's accept loop: TCP connections become authenticated TLS connections, with
//! at most [`HandshakeLimits::max_concurrent`] handshakes in progress, each bounded by
//! [`HandshakeLimits::timeout`].
//!
//! # Guarantees
//! - A connection is yielded only after a complete handshake whose client certificate chain
//!   verified against the CA and names a Faultline identity; it carries that identity in
//!   [`PeerInfo`]. Everything else is closed without reaching HTTP/2.
//! - At most `max_concurrent` handshakes run at once. While all slots are taken the loop does
//!   not accept: further connections **wait** in the kernel's listen backlog (they are not
//!   dropped, and their handshake timeout has not started) and are accepted in arrival order
//!   as slots free up. A connection that stays silent holds its slot for at most `timeout`.
//! - Every accepted connection has TCP keepalive and a user timeout: one whose peer vanished
//!   is reset by the kernel about 25 s after it went quiet.
//! - Every failed handshake is reported once to the [`HandshakeObserver`] with the peer
//!   address, the identity its certificate claimed (if any) and the reason.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use faultline_core::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::server_verify::{recording_presented, HandshakeFailure};
use super::ReloadingServerConfig;
use crate::spiffe::identity_of;

/// TCP keepalive on every accepted connection: probes after this long without traffic ...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ... then every this long, ...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ... and the kernel resets the connection after this many unanswered probes (about 25 s
/// after a peer vanished). Unsent data unacknowledged for as long ends it too.
const KEEPALIVE_PROBES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(25);

/// Lets the kernel find connections whose peer vanished without a FIN (a host powered off, a
/// partition). This replaces HTTP/2 keepalive pings on the server: hyper re-arms a timer on
/// every frame it reads when they are on, a measurable cost with 10,000 sessions that each
/// speak every second, while the kernel's probes cost nothing until a connection goes quiet.
fn keep_alive(tcp: &TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = sock
        .set_tcp_keepalive(&params)
        .and_then(|()| sock.set_tcp_user_timeout(Some(USER_TIMEOUT)))
    {
        tracing::warn!(error = %e, "could not set TCP keepalive on an accepted connection");
    }
}

/// Default cap on TLS handshakes in progress at once.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Default time a TLS handshake may take before the connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may run at once, and for how long each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in progress at once (at least 1; 0 counts as 1).
    pub max_concurrent: usize,
    /// From accept to the end of the handshake.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_concurrent: DEFAULT_MAX_HANDSHAKES,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// One failed handshake: from where, claiming whom, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRefusal {
    pub remote: SocketAddr,
    /// The identity named by the certificate the client presented, verified or not.
    pub presented: Option<Identity>,
    pub failure: HandshakeFailure,
}

impl std::fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client {}", self.remote)?;
        if let Some(id) = &self.presented {
            write!(f, " (certificate for {id})")?;
        }
        write!(f, ": {}", self.failure)
    }
}

/// Where the accept loop reports what happens; the coordinator logs and counts it.
pub trait HandshakeObserver: Send + Sync + 'static {
    /// A handshake failed (called once per failed connection).
    fn failed(&self, refusal: &HandshakeRefusal);
    /// The number of handshakes in progress changed.
    fn in_flight(&self, _handshakes: usize) {}
}

/// Logs failed handshakes: refused credentials at warn, broken or slow connections at debug.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogHandshakes;

impl HandshakeObserver for LogHandshakes {
    fn failed(&self, refusal: &HandshakeRefusal) {
        if refusal.failure.is_auth_refusal() {
            tracing::warn!(remote = %refusal.remote, "refused: {refusal}");
        } else {
            tracing::debug!(remote = %refusal.remote, "{refusal}");
        }
    }
}

/// What the server knows about the peer of one connection; tonic puts it in every request's
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// Verified during the handshake.
    pub identity: Identity,
}

/// What the server knows about the peer of a connection on a listener that asks for no client
/// certificate (the enrollment listener): only its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousPeer {
    pub remote: SocketAddr,
}

/// A server-side TLS connection carrying what is known of its peer: [`PeerInfo`] on the
/// mutual-TLS listener, [`AnonymousPeer`] on a server-only one.
pub struct TlsConn<P = PeerInfo> {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: P,
}

impl<P: Clone + Send + Sync + 'static> Connected for TlsConn<P> {
    type ConnectInfo = P;
    fn connect_info(&self) -> P {
        self.peer.clone()
    }
}

impl<P: Unpin> AsyncRead for TlsConn<P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<P: Unpin> AsyncWrite for TlsConn<P> {
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

/// Handshakes in progress, reported to the observer under one lock so the last report is the
/// true count.
struct InFlight {
    count: Mutex<usize>,
    observer: Arc<dyn HandshakeObserver>,
}

impl InFlight {
    fn add(&self, delta: isize) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        self.observer.in_flight(*n);
    }
}

/// Turns a finished handshake into the connection to yield, or says why it may not be used.
type Finish<P> = fn(
    tokio_rustls::server::TlsStream<TcpStream>,
    SocketAddr,
) -> Result<TlsConn<P>, HandshakeFailure>;

/// Accepts TCP connections, runs TLS handshakes concurrently (up to the cap) and yields the
/// authenticated connections. Failed handshakes are reported and dropped; they never stall the
/// accept loop beyond the cap described in the module docs.
pub struct TlsIncoming<P = PeerInfo> {
    rx: tokio::sync::mpsc::Receiver<Result<TlsConn<P>, io::Error>>,
    task: tokio::task::JoinHandle<()>,
}

/// The mutual-TLS listener: the verified identity travels with the connection.
fn with_identity(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
) -> Result<TlsConn, HandshakeFailure> {
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(identity_of);
    match identity {
        Some(identity) => {
            tracing::debug!(%remote, %identity, "TLS handshake done");
            Ok(TlsConn {
                inner: stream,
                peer: PeerInfo { remote, identity },
            })
        }
        // The verifier refuses such certificates; never reached.
        None => Err(HandshakeFailure::NoIdentity),
    }
}

fn anonymous(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
) -> Result<TlsConn<AnonymousPeer>, HandshakeFailure> {
    tracing::debug!(%remote, "TLS handshake done (server authentication only)");
    Ok(TlsConn {
        inner: stream,
        peer: AnonymousPeer { remote },
    })
}

impl TlsIncoming {
    /// The mutual-TLS listener: `config` must require client certificates.
    pub fn new(
        listener: TcpListener,
        config: Arc<ReloadingServerConfig>,
        limits: HandshakeLimits,
        observer: Arc<dyn HandshakeObserver>,
    ) -> Self {
        Self::spawn(listener, config, limits, observer, with_identity)
    }
}

impl TlsIncoming<AnonymousPeer> {
    /// A listener that authenticates only the server ([`ReloadingServerConfig::server_only`]):
    /// the enrollment listener.
    pub fn server_only(
        listener: TcpListener,
        config: Arc<ReloadingServerConfig>,
        limits: HandshakeLimits,
        observer: Arc<dyn HandshakeObserver>,
    ) -> Self {
        Self::spawn(listener, config, limits, observer, anonymous)
    }
}

impl<P: Send + 'static> TlsIncoming<P> {
    fn spawn(
        listener: TcpListener,
        config: Arc<ReloadingServerConfig>,
        limits: HandshakeLimits,
        observer: Arc<dyn HandshakeObserver>,
        finish: Finish<P>,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        let in_flight = Arc::new(InFlight {
            count: Mutex::new(0),
            observer: observer.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                // Take a slot before accepting: while none is free, connections wait unaccepted.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, remote) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                keep_alive(&tcp);
                in_flight.add(1);
                let (config, observer, in_flight, tx) = (
                    config.clone(),
                    observer.clone(),
                    in_flight.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    let accept = TlsAcceptor::from(config.current()).accept(tcp);
                    let (result, presented) =
                        recording_presented(tokio::time::timeout(limits.timeout, accept)).await;
                    in_flight.add(-1);
                    drop(slot);
                    let failure = match result {
                        Ok(Ok(stream)) => match finish(stream, remote) {
                            Ok(conn) => {
                                let _ = tx.send(Ok(conn)).await;
                                return;
                            }
                            Err(failure) => failure,
                        },
                        Ok(Err(e)) => match (HandshakeFailure::from_io(&e), presented.revoked) {
                            (HandshakeFailure::CertificateRejected(_), Some(why)) => {
                                HandshakeFailure::Revoked(why)
                            }
                            (failure, _) => failure,
                        },
                        Err(_) => HandshakeFailure::TimedOut(limits.timeout),
                    };
                    observer.failed(&HandshakeRefusal {
                        remote,
                        presented: presented.identity,
                        failure,
                    });
                });
            }
        });
        TlsIncoming { rx, task }
    }
}

impl<P> Drop for TlsIncoming<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P> futures::Stream for TlsIncoming<P> {
    type Item = Result<TlsConn<P>, io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_keepalive_and_a_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let sock = socket2::SockRef::from(&server);
        assert!(!sock.keepalive().expect("SO_KEEPALIVE"), "off before");
        keep_alive(&server);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            KEEPALIVE_IDLE
        );
        assert_eq!(
            sock.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
            KEEPALIVE_PROBES
        );
        assert_eq!(
            sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(USER_TIMEOUT)
        );
        drop(client);
    }
}
