//! Test helpers: a development PKI in a temp dir, an in-process coordinator on 127.0.0.1 and
//! raw mutual-TLS gRPC clients. Helpers panic with a message instead of returning errors.
#![allow(dead_code)]

pub mod agent;
pub mod experiments;
pub mod http;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use faultline_coordinator::{Config, Coordinator, Policy};
use faultline_identity::pki::{self, InitOptions};
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb::agent_session_client::AgentSessionClient;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use faultline_proto::pb::fleet_client::FleetClient;
use faultline_proto::pb::{self, agent_message::Msg as AgentMsg};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A temp dir with `certs/` (CA, coordinator, admin, operator, viewer, agents node-a and
/// node-b) and `data/` for the store.
pub struct Env {
    pub dir: TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env::with_agents(&["node-a", "node-b"])
    }

    /// An environment with agent certificates for `agents`.
    pub fn with_agents(agents: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            sans: vec![],
            agents: agents.iter().map(|a| a.to_string()).collect(),
            days: 1,
            force: false,
        };
        pki::init_dir(&dir.path().join("certs"), &opts).expect("certs init");
        Env { dir }
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn paths(&self, stem: &str) -> CertPaths {
        CertPaths::in_dir(&self.certs(), stem)
    }

    pub fn config(&self) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: None,
            data_dir: self.data(),
            tls: self.paths("coordinator"),
            handshakes: Default::default(),
            lease: Duration::from_secs(5),
            renew_interval: Duration::from_secs(1),
            policy: Policy::default(),
            retention: Default::default(),
            notifications: Vec::new(),
        }
    }

    pub async fn start(&self) -> Coordinator {
        start(self.config()).await
    }
}

pub async fn start(config: Config) -> Coordinator {
    Coordinator::start(config, None)
        .await
        .unwrap_or_else(|e| panic!("coordinator did not start: {e}"))
}

pub fn url(c: &Coordinator) -> CoordinatorUrl {
    CoordinatorUrl::parse(&format!("https://127.0.0.1:{}", c.grpc_addr().port())).expect("url")
}

pub async fn channel_with(c: &Coordinator, paths: &CertPaths) -> Channel {
    tls::connect(&url(c), paths, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect with {}: {e}", paths.cert.display()))
}

pub async fn channel(env: &Env, c: &Coordinator, stem: &str) -> Channel {
    channel_with(c, &env.paths(stem)).await
}

pub async fn fleet(env: &Env, c: &Coordinator, stem: &str) -> FleetClient<Channel> {
    FleetClient::new(channel(env, c, stem).await)
}

pub fn hello(node: &str, labels: &[(&str, &str)]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(AgentMsg::Hello(pb::Hello {
            node_name: node.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            capabilities: vec!["cpu".into()],
            version: faultline_core::VERSION.into(),
            held_faults: vec![],
            // Renewed every interval, whatever it holds.
            lease_while_holding: false,
            // Unnumbered: renewals and orders name its telemetry once heard.
            sequence: 0,
        })),
    }
}

pub fn telemetry(cpu: f64, mem_used: u64) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(AgentMsg::Telemetry(pb::Telemetry {
            timestamp_unix_ms: 1,
            cpu_busy_ratio: cpu,
            memory_total_bytes: 8 << 30,
            memory_available_bytes: (8 << 30) - mem_used,
            memory_used_bytes: mem_used,
            load1: 0.5,
            interfaces: vec![pb::InterfaceCounters {
                name: "lo".into(),
                rx_bytes: 10,
                rx_packets: 1,
                tx_bytes: 10,
                tx_packets: 1,
            }],
            ..Default::default()
        })),
    }
}

/// The agent end of a raw AgentSession.
pub struct AgentConn {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub rx: Streaming<pb::CoordinatorMessage>,
}

impl AgentConn {
    /// Opens the stream with `first` as its first message.
    pub async fn open(channel: Channel, first: pb::AgentMessage) -> Result<AgentConn, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first message");
        let resp = AgentSessionClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await?;
        Ok(AgentConn {
            tx,
            rx: resp.into_inner(),
        })
    }

    /// The next message, or the status the stream ended with (OK when it just ended).
    pub async fn next(&mut self) -> Result<CoordMsg, Status> {
        match tokio::time::timeout(TIMEOUT, self.rx.message()).await {
            Err(_) => panic!("no message from the coordinator within {TIMEOUT:?}"),
            Ok(Ok(Some(m))) => Ok(m.msg.expect("message with a body")),
            Ok(Ok(None)) => Err(Status::ok("stream ended")),
            Ok(Err(status)) => Err(status),
        }
    }

    pub async fn welcome(&mut self) -> pb::Welcome {
        match self.next().await {
            Ok(CoordMsg::Welcome(w)) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send(&self, msg: pb::AgentMessage) {
        self.tx.send(msg).await.expect("send to coordinator");
    }
}

/// Opens a session as `node` with the agent certificate of `node` and waits for Welcome.
pub async fn agent(env: &Env, c: &Coordinator, node: &str) -> (AgentConn, pb::Welcome) {
    let ch = channel(env, c, &format!("agent-{node}")).await;
    let mut conn = AgentConn::open(ch, hello(node, &[("zone", "a")]))
        .await
        .unwrap_or_else(|s| panic!("session for {node} refused: {s:?}"));
    let welcome = conn.welcome().await;
    (conn, welcome)
}

/// The refusal a session ends with: either at open or as the stream's first item.
pub async fn session_refusal(channel: Channel, first: pb::AgentMessage) -> Status {
    match AgentConn::open(channel, first).await {
        Err(status) => status,
        Ok(mut conn) => match conn.next().await {
            Err(status) => status,
            Ok(msg) => panic!("expected a refusal, got {msg:?}"),
        },
    }
}

pub async fn list_agents(f: &mut FleetClient<Channel>) -> Vec<pb::AgentInfo> {
    f.list_agents(pb::ListAgentsRequest {})
        .await
        .expect("ListAgents")
        .into_inner()
        .agents
}

pub async fn audit(f: &mut FleetClient<Channel>) -> Vec<pb::AuditEntry> {
    f.audit_log(pb::AuditLogRequest { limit: 0 })
        .await
        .expect("AuditLog")
        .into_inner()
        .entries
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
