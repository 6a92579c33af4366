//! Real TLS on loopback for the identity tests: a tonic HTTP/2 server behind the real
//! [`TlsIncoming`] that records what its accept loop reports. Certificates and raw clients come
//! from `faultline_identity::test_util`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use faultline_identity::test_util::*;
use faultline_identity::tls::{
    self, CertPaths, HandshakeLimits, HandshakeObserver, HandshakeRefusal, ReloadingServerConfig,
    TlsIncoming,
};
use tokio::sync::mpsc;

/// What the server's accept loop reported.
#[derive(Default)]
pub struct Seen {
    pub refusals: Mutex<Vec<HandshakeRefusal>>,
    pub in_flight: Mutex<Vec<usize>>,
    tx: Mutex<Option<mpsc::UnboundedSender<HandshakeRefusal>>>,
}

impl HandshakeObserver for Seen {
    fn failed(&self, refusal: &HandshakeRefusal) {
        self.refusals.lock().expect("lock").push(refusal.clone());
        if let Some(tx) = self.tx.lock().expect("lock").as_ref() {
            let _ = tx.send(refusal.clone());
        }
    }
    fn in_flight(&self, handshakes: usize) {
        self.in_flight.lock().expect("lock").push(handshakes);
    }
}

/// A tonic HTTP/2 server (every method UNIMPLEMENTED) behind the real mTLS listener.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    refusals: mpsc::UnboundedReceiver<HandshakeRefusal>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    pub async fn start(paths: CertPaths, limits: HandshakeLimits) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let config = Arc::new(ReloadingServerConfig::new(paths).expect("server TLS config"));
        let (tx, refusals) = mpsc::unbounded_channel();
        let seen = Arc::new(Seen {
            tx: Mutex::new(Some(tx)),
            ..Seen::default()
        });
        let incoming = TlsIncoming::new(listener, config, limits, seen.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Server {
            addr,
            seen,
            refusals,
            _stop: stop,
        }
    }

    pub fn url(&self) -> tls::CoordinatorUrl {
        tls::CoordinatorUrl::parse(&format!("https://127.0.0.1:{}", self.addr.port())).expect("url")
    }

    /// The next failed handshake the server reported (within 15 s).
    pub async fn refusal(&mut self) -> HandshakeRefusal {
        tokio::time::timeout(Duration::from_secs(15), self.refusals.recv())
            .await
            .expect("the server reported no failed handshake within 15 s")
            .expect("server gone")
    }
}
