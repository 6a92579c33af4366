//! The agent against a minimal in-process AgentSession server over real mutual TLS on loopback:
//! Hello and telemetry arrive, renewals are counted, a lapse reverts, refusals are explained.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultline_agent::faults::{Call, RecordingManager};
use faultline_agent::{Agent, Config, RevertReason};
use faultline_core::{Identity, Labels, Role};
use faultline_identity::pki;
use faultline_identity::pki::{Usage, Validity};
use faultline_identity::test_util::Pki;
use faultline_identity::tls::{
    self, CertPaths, CoordinatorUrl, HandshakeLimits, LogHandshakes, ReloadingServerConfig,
    TlsIncoming,
};
use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::agent_session_server::{AgentSession, AgentSessionServer};
use faultline_proto::pb::coordinator_message::Msg as In;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

type Reply = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>> + Send>>;

/// What the fake coordinator saw.
#[derive(Debug)]
enum Seen {
    Session {
        identity: Identity,
        hello: pb::Hello,
    },
    Message(Out),
}

struct FakeCoordinator {
    lease: Duration,
    /// Renew every this often; `None` never renews.
    renew_every: Option<Duration>,
    /// Order fault "f1" applied right after the Welcome (the lease then guards it).
    apply_after_welcome: bool,
    seen: mpsc::UnboundedSender<Seen>,
}

#[tonic::async_trait]
impl AgentSession for FakeCoordinator {
    type ConnectStream = Reply;

    async fn connect(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Reply>, tonic::Status> {
        let identity = tls::caller(&request)?;
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::AgentMessage {
                msg: Some(Out::Hello(h)),
            })) => h,
            other => {
                return Err(tonic::Status::invalid_argument(format!(
                    "expected Hello, got {other:?}"
                )))
            }
        };
        let _ = self.seen.send(Seen::Session { identity, hello });
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                if let Some(m) = m.msg {
                    let _ = seen.send(Seen::Message(m));
                }
            }
        });
        let welcome = pb::CoordinatorMessage {
            msg: Some(In::Welcome(pb::Welcome {
                session_id: "session-1".into(),
                lease_ms: self.lease.as_millis() as u64,
                telemetry_interval_ms: 1000,
                vouched_fault_ids: vec![],
            })),
        };
        let lease_ms = self.lease.as_millis() as u64;
        let renewals: Reply = match self.renew_every {
            None => futures::stream::pending().boxed(),
            Some(every) => futures::stream::unfold(1u64, move |seq| async move {
                tokio::time::sleep(every).await;
                let m = pb::CoordinatorMessage {
                    msg: Some(In::Lease(pb::LeaseRenewal {
                        lease_ms,
                        sequence: seq,
                        vouched_fault_ids: vec![],
                        // As an older coordinator: names no telemetry.
                        telemetry_sequence: 0,
                    })),
                };
                Some((Ok(m), seq + 1))
            })
            .boxed(),
        };
        let apply = pb::CoordinatorMessage {
            msg: Some(In::Apply(pb::ApplyFault {
                fault_id: "f1".into(),
                experiment_id: "e1".into(),
                ..Default::default()
            })),
        };
        let orders = futures::stream::iter(self.apply_after_welcome.then_some(Ok(apply)));
        let reply = futures::stream::once(async move { Ok(welcome) })
            .chain(orders)
            .chain(renewals);
        Ok(tonic::Response::new(reply.boxed()))
    }
}

struct Server {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    async fn next(&mut self) -> Seen {
        timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("the fake coordinator saw nothing for 10 s")
            .expect("server gone")
    }
}

async fn serve(certs: &Path, lease: Duration, renew_every: Option<Duration>) -> Server {
    serve_as(CertPaths::in_dir(certs, "coordinator"), lease, renew_every).await
}

/// [`serve`] presenting the server certificate of `server`.
async fn serve_as(server: CertPaths, lease: Duration, renew_every: Option<Duration>) -> Server {
    start(server, lease, renew_every, false).await
}

async fn start(
    server: CertPaths,
    lease: Duration,
    renew_every: Option<Duration>,
    apply_after_welcome: bool,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let config = Arc::new(ReloadingServerConfig::new(server).expect("server TLS"));
    let (tx, seen) = mpsc::unbounded_channel();
    let svc = AgentSessionServer::with_interceptor(
        FakeCoordinator {
            lease,
            renew_every,
            apply_after_welcome,
            seen: tx,
        },
        tls::authenticate,
    );
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                TlsIncoming::new(
                    listener,
                    config,
                    HandshakeLimits::default(),
                    Arc::new(LogHandshakes),
                ),
                shutdown,
            ),
    );
    Server { addr, seen, stop }
}

fn init_certs(dir: &Path) {
    pki::init_dir(
        dir,
        &pki::InitOptions {
            sans: vec![],
            agents: vec!["node-a".into()],
            days: 1,
            force: false,
        },
    )
    .expect("write test certificates");
}

fn config(addr: SocketAddr, tls: CertPaths, state: &Path) -> Config {
    let mut c = Config::new(
        CoordinatorUrl::parse(&format!("https://127.0.0.1:{}", addr.port())).expect("url"),
        "node-a".parse().expect("node"),
        tls,
        state.to_path_buf(),
    );
    c.labels = Labels::parse("zone=a").expect("labels");
    c.telemetry_interval = Duration::from_millis(100);
    c.max_backoff = Duration::from_millis(200);
    c
}

#[tokio::test]
async fn hello_and_telemetry_arrive_over_mutual_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    init_certs(&tmp.path().join("certs"));
    let mut server = serve(
        &tmp.path().join("certs"),
        Duration::from_secs(5),
        Some(Duration::from_millis(100)),
    )
    .await;
    let m = Arc::new(RecordingManager::new(&["test"]));
    let tls = CertPaths::in_dir(&tmp.path().join("certs"), "agent-node-a");
    let agent = Agent::start(
        config(server.addr, tls, &tmp.path().join("state")),
        m.clone(),
        None,
    )
    .await
    .expect("start");
    match server.next().await {
        Seen::Session { identity, hello } => {
            assert_eq!(identity, Identity::new(Role::Agent, "node-a"));
            assert_eq!(hello.node_name, "node-a");
            assert_eq!(hello.version, faultline_core::VERSION);
            assert_eq!(hello.capabilities, ["test"]);
            assert_eq!(hello.labels.get("zone").map(String::as_str), Some("a"));
        }
        other => panic!("expected a session, got {other:?}"),
    }
    let mut telemetry = 0;
    while telemetry < 3 {
        if let Seen::Message(Out::Telemetry(t)) = server.next().await {
            assert!(t.memory_total_bytes > 0 && t.memory_used_bytes > 0, "{t:?}");
            assert!(t.interfaces.iter().any(|i| i.name == "lo"), "{t:?}");
            telemetry += 1;
        }
    }
    let mut status = agent.status();
    timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.connected && s.lease_renewals >= 2),
    )
    .await
    .expect("renewals counted within 5 s")
    .expect("status");
    assert_eq!(status.borrow().session_id, "session-1");
    assert_eq!(status.borrow().connects, 1);
    assert!(status.borrow().telemetry_sent >= 3);
    agent.shutdown().await;
    assert_eq!(m.revert_alls(RevertReason::Lease).len(), 0);
    assert_eq!(m.revert_alls(RevertReason::Shutdown).len(), 1);
}

#[tokio::test]
async fn a_lapsed_lease_reverts_all_within_lease_plus_one_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    init_certs(&tmp.path().join("certs"));
    let lease = Duration::from_millis(1000);
    // The coordinator orders a fault and then says nothing: the lease guards the fault.
    let certs = CertPaths::in_dir(&tmp.path().join("certs"), "coordinator");
    let mut server = start(certs, lease, None, true).await;
    let m = Arc::new(RecordingManager::new(&["test"]));
    let tls = CertPaths::in_dir(&tmp.path().join("certs"), "agent-node-a");
    let agent = Agent::start(
        config(server.addr, tls, &tmp.path().join("state")),
        m.clone(),
        None,
    )
    .await
    .expect("start");
    let mut status = agent.status();
    timeout(Duration::from_secs(10), status.wait_for(|s| s.connected))
        .await
        .expect("connected within 10 s")
        .expect("status");
    let connected = Instant::now();
    assert!(matches!(server.next().await, Seen::Session { .. }));
    timeout(
        lease + Duration::from_secs(1),
        m.wait_for(|calls| {
            calls.iter().any(|(_, c)| {
                *c == Call::RevertAll {
                    reason: RevertReason::Lease,
                }
            })
        }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no revert_all(Lease) within lease + 1 s: {:?}",
            m.mutations()
        )
    });
    let took = m.revert_alls(RevertReason::Lease)[0] - connected;
    assert!(took <= lease + Duration::from_secs(1), "{took:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    let rogue = tmp.path().join("rogue");
    init_certs(&certs);
    init_certs(&rogue);
    let server = serve(&certs, Duration::from_secs(5), None).await;
    let tls = CertPaths {
        cert: rogue.join("agent-node-a.pem"),
        key: rogue.join("agent-node-a-key.pem"),
        ca: certs.join("ca.pem"),
    };
    let m = Arc::new(RecordingManager::new(&["test"]));
    let agent = Agent::start(
        config(server.addr, tls, &tmp.path().join("state")),
        m.clone(),
        None,
    )
    .await
    .expect("start");
    let mut status = agent.status();
    timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("an error within 10 s")
    .expect("status");
    let err = status.borrow().last_error.clone().unwrap_or_default();
    // Refused in the TLS handshake; the alert is turned into the reason.
    let presented = rogue.join("agent-node-a.pem");
    assert!(
        err.starts_with(&format!(
            "refused by the coordinator (TLS handshake): client certificate {} refused: ",
            presented.display()
        )),
        "{err}"
    );
    // Both dev CAs are named "Faultline development CA": the signature check is what fails.
    assert!(
        err.ends_with(
            "certificate signature does not verify against the coordinator's CA (issued by a \
             different CA, perhaps one with the same name) (TLS alert decrypt_error)"
        ),
        "{err}"
    );
    assert!(!status.borrow().connected);
    agent.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_not_the_coordinator_is_refused() {
    // Another agent's identity, signed by the same CA, valid for 127.0.0.1 and even allowed
    // to serve: everything but the coordinator's identity.
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    init_certs(&certs);
    let pki = Pki::sharing_ca(&certs);
    let impostor = pki.issued(
        "impostor",
        &pki.ca(),
        &Identity::new(Role::Agent, "node-b"),
        &["127.0.0.1"],
        Validity::days(1),
        Usage::ClientAndServer,
    );
    let mut server = serve_as(impostor, Duration::from_secs(5), None).await;
    let m = Arc::new(RecordingManager::new(&["test"]));
    let tls = CertPaths::in_dir(&certs, "agent-node-a");
    let agent = Agent::start(
        config(server.addr, tls, &tmp.path().join("state")),
        m.clone(),
        None,
    )
    .await
    .expect("start");
    let mut status = agent.status();
    timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("an error within 10 s")
    .expect("status");
    let err = status.borrow().last_error.clone().unwrap_or_default();
    assert_eq!(
        err,
        "the server's certificate is not the coordinator's: it belongs to agent/node-b, not to a \
         coordinator: the coordinator's certificate must name spiffe://faultline/coordinator/<name>"
    );
    assert!(!status.borrow().connected);
    assert!(
        timeout(Duration::from_millis(500), server.seen.recv())
            .await
            .is_err(),
        "no session reached the impostor"
    );
    agent.shutdown().await;
}
