//! Harness for Faultline's end-to-end tests: certificates in a temp dir, an in-process
//! coordinator and agents over real mutual TLS on loopback, clients per role, the real binaries
//! as child processes, their stress workers found in /proc, polling helpers, and seeded
//! randomised trials. Helpers panic with a message; they never return errors for a test to
//! ignore.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod continuous;
pub mod procs;
pub mod receiver;
pub mod stack;
pub mod trials;
pub mod workers;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_agent::{Agent, FaultManager};
use faultline_coordinator::Coordinator;
use faultline_core::{Labels, NodeName};
use faultline_identity::pki::{self, InitOptions};
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb;
use futures::future::BoxFuture;
use pb::RevertReason;
use tonic::transport::Channel;

/// A temp dir holding the `faultctl certs init` layout for the given agents.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new(agents: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for certs");
        pki::init_dir(
            dir.path(),
            &InitOptions {
                sans: vec![],
                agents: agents.iter().map(|a| a.to_string()).collect(),
                days: 1,
                force: false,
            },
        )
        .expect("certs init");
        Certs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn paths(&self, stem: &str) -> CertPaths {
        CertPaths::in_dir(self.dir.path(), stem)
    }
}

/// Coordinator configuration for tests: loopback, port `port` (0 = any), the given lease.
pub fn coordinator_config(
    certs: &Certs,
    data_dir: &Path,
    port: u16,
    lease: Duration,
) -> faultline_coordinator::Config {
    faultline_coordinator::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        metrics_listen: None,
        data_dir: data_dir.to_path_buf(),
        tls: certs.paths("coordinator"),
        handshakes: Default::default(),
        lease,
        renew_interval: Duration::from_secs(1),
        policy: Default::default(),
        retention: Default::default(),
        notifications: Vec::new(),
    }
}

pub async fn start_coordinator(
    certs: &Certs,
    data_dir: &Path,
    port: u16,
    lease: Duration,
) -> Coordinator {
    Coordinator::start(coordinator_config(certs, data_dir, port, lease), None)
        .await
        .expect("coordinator starts")
}

pub fn url(addr: SocketAddr) -> CoordinatorUrl {
    CoordinatorUrl::parse(&format!("https://{addr}")).expect("url")
}

pub fn agent_config(
    certs: &Certs,
    name: &str,
    labels: &str,
    coordinator: SocketAddr,
    state_dir: &Path,
) -> faultline_agent::Config {
    faultline_agent::Config {
        coordinator: url(coordinator),
        node_name: name.parse::<NodeName>().expect("node name"),
        labels: Labels::parse(labels).expect("labels"),
        state_dir: state_dir.to_path_buf(),
        metrics_listen: None,
        tls: certs.paths(&format!("agent-{name}")),
        telemetry_interval: Duration::from_millis(500),
        max_backoff: Duration::from_secs(1),
    }
}

pub async fn start_agent(
    certs: &Certs,
    name: &str,
    labels: &str,
    coordinator: SocketAddr,
    state_dir: &Path,
    manager: Arc<dyn FaultManager>,
) -> Agent {
    Agent::start(
        agent_config(certs, name, labels, coordinator, state_dir),
        manager,
        None,
    )
    .await
    .expect("agent starts")
}

/// An mTLS channel to the coordinator as `stem` (admin, operator, viewer, agent-NAME).
pub async fn channel(certs: &Certs, stem: &str, addr: SocketAddr) -> Channel {
    tls::connect(&url(addr), &certs.paths(stem), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("connect as {stem} to {addr}: {e}"))
}

pub async fn fleet(
    certs: &Certs,
    stem: &str,
    addr: SocketAddr,
) -> pb::fleet_client::FleetClient<Channel> {
    pb::fleet_client::FleetClient::new(channel(certs, stem, addr).await)
}

/// The agents the coordinator knows, by name.
pub async fn list_agents(certs: &Certs, addr: SocketAddr) -> BTreeMap<String, pb::AgentInfo> {
    let mut client = fleet(certs, "viewer", addr).await;
    client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect("ListAgents as viewer")
        .into_inner()
        .agents
        .into_iter()
        .map(|a| (a.node_name.clone(), a))
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fault manager that holds no faults and records every revert-all with its reason and time.
#[derive(Default)]
pub struct RecordingFaults {
    pub revert_alls: Mutex<Vec<(RevertReason, std::time::Instant)>>,
}

impl RecordingFaults {
    pub fn reasons(&self) -> Vec<RevertReason> {
        self.revert_alls
            .lock()
            .expect("lock")
            .iter()
            .map(|(r, _)| *r)
            .collect()
    }

    pub fn first(&self, reason: RevertReason) -> Option<std::time::Instant> {
        self.revert_alls
            .lock()
            .expect("lock")
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, at)| *at)
    }
}

impl FaultManager for RecordingFaults {
    fn capabilities(&self) -> Vec<String> {
        vec!["test".into()]
    }
    fn held(&self) -> Vec<pb::HeldFault> {
        vec![]
    }
    fn apply(&self, req: pb::ApplyFault) -> BoxFuture<'_, pb::FaultStatus> {
        Box::pin(async move {
            pb::FaultStatus {
                fault_id: req.fault_id,
                experiment_id: req.experiment_id,
                state: pb::FaultState::Failed as i32,
                error: "the test fault manager applies nothing".into(),
                ..Default::default()
            }
        })
    }
    fn revert(&self, fault_id: String, reason: RevertReason) -> BoxFuture<'_, pb::FaultStatus> {
        Box::pin(async move {
            pb::FaultStatus {
                fault_id,
                state: pb::FaultState::Reverted as i32,
                reason: reason as i32,
                ..Default::default()
            }
        })
    }
    fn revert_all(&self, reason: RevertReason) -> BoxFuture<'_, Vec<pb::FaultStatus>> {
        self.revert_alls
            .lock()
            .expect("lock")
            .push((reason, std::time::Instant::now()));
        Box::pin(async { vec![] })
    }
}

/// The directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary; panics with the build command when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A free loopback port (bound then released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
