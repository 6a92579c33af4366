//! A whole Faultline installation from the real binaries on loopback: a coordinator process,
//! agent processes (each with its own state dir and config), an optional Prometheus from
//! Debian's package, and gRPC clients per role. Everything is killed by PID and removed when
//! the stack is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultline_proto::pb;
use tonic::transport::Channel;

use crate::procs::{http_get, require_tool, Proc};
pub use crate::workers::{all_agent_workers, worker_faults, workers_of};
use crate::{binary, channel, free_port, Certs};

/// The coordinator's data dir, under the stack dir.
const COORDINATOR_DATA: &str = "coordinator-data";

pub struct Agent {
    pub name: String,
    pub proc: Proc,
    pub metrics: SocketAddr,
    pub state: PathBuf,
}

pub struct Stack {
    pub certs: Certs,
    pub dir: tempfile::TempDir,
    pub coordinator: Option<Proc>,
    pub grpc: SocketAddr,
    pub coord_metrics: SocketAddr,
    pub agents: Vec<Agent>,
    pub lease: Duration,
    coordinator_args: Vec<String>,
}

/// The value of `faultline_coordinator_agents_connected` on the coordinator's `/metrics` at
/// `addr` (panics with the exposition when it is missing).
pub fn agents_connected(addr: SocketAddr) -> f64 {
    let (code, body) = http_get(addr, "/metrics").expect("coordinator /metrics");
    assert_eq!(code, 200, "/metrics answered {code}");
    body.lines()
        .find_map(|l| l.strip_prefix("faultline_coordinator_agents_connected "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no faultline_coordinator_agents_connected in:\n{body}"))
}

/// Polls `addr`'s `/readyz` until 200; returns how long it took (panics with `p`'s log).
pub fn wait_ready(p: &Proc, addr: SocketAddr, timeout: Duration) -> Duration {
    let start = Instant::now();
    while http_get(addr, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            start.elapsed() < timeout,
            "{} not ready within {timeout:?}; log:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

impl Stack {
    /// Starts a coordinator with `lease` and a policy that lets every agent be targeted.
    pub fn start(agent_names: &[&str], lease: Duration) -> Stack {
        Stack::start_with(agent_names, lease, "")
    }

    /// [`Stack::start`] with more TOML appended to the coordinator's config file (e.g.
    /// `[[notifications]]`).
    pub fn start_with(agent_names: &[&str], lease: Duration, extra_config: &str) -> Stack {
        let certs = Certs::new(agent_names);
        let dir = tempfile::tempdir().expect("stack dir");
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let coord_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!("[policy]\nmax_fleet_percent_under_fault = 100\nmax_concurrent_experiments = 10\n{extra_config}"),
        )
        .expect("coordinator config");
        let coordinator_args = vec![
            "--listen".into(),
            grpc.to_string(),
            "--metrics-listen".into(),
            coord_metrics.to_string(),
            "--data-dir".into(),
            dir.path().join(COORDINATOR_DATA).display().to_string(),
            "--certs-dir".into(),
            certs.path().display().to_string(),
            "--lease".into(),
            format!("{}ms", lease.as_millis()),
            "--config".into(),
            config.display().to_string(),
        ];
        let mut stack = Stack {
            certs,
            dir,
            coordinator: None,
            grpc,
            coord_metrics,
            agents: Vec::new(),
            lease,
            coordinator_args,
        };
        stack.start_coordinator();
        stack
    }

    /// (Re)starts the coordinator process with the same flags and data dir, and waits until
    /// it is ready.
    pub fn start_coordinator(&mut self) {
        self.spawn_coordinator();
        let p = self.coordinator.as_ref().expect("just spawned");
        wait_ready(p, self.coord_metrics, Duration::from_secs(10));
    }

    /// (Re)starts the coordinator process with the same flags and data dir; does not wait.
    pub fn spawn_coordinator(&mut self) {
        let p = Proc::spawn(
            "coordinator",
            &binary("faultline-coordinator"),
            &self.coordinator_args,
            self.dir.path(),
        );
        self.coordinator = Some(p);
    }

    /// The coordinator's `--data-dir` (its sled store lives in `store/` below it).
    pub fn coordinator_data(&self) -> PathBuf {
        self.dir.path().join(COORDINATOR_DATA)
    }

    pub fn coordinator(&mut self) -> &mut Proc {
        self.coordinator.as_mut().expect("coordinator running")
    }

    /// Starts an agent process and returns once it is connected.
    pub fn spawn_agent(&mut self, name: &str, labels: &str) -> &Agent {
        self.start_agent(name, labels);
        let a = self.agents.last().expect("just started");
        wait_ready(&a.proc, a.metrics, Duration::from_secs(10));
        a
    }

    /// Starts an agent process without waiting for it; its config allows io faults under the
    /// stack dir and keeps the default limits otherwise.
    pub fn start_agent(&mut self, name: &str, labels: &str) -> &Agent {
        self.start_agent_env(name, labels, &[])
    }

    /// [`Stack::start_agent`] with extra environment variables (e.g. libfaketime's).
    pub fn start_agent_env(&mut self, name: &str, labels: &str, env: &[(&str, &str)]) -> &Agent {
        let limits = format!("io_paths = [\"{}\"]\n", self.dir.path().display());
        self.start_agent_limits(name, labels, env, &limits)
    }

    /// [`Stack::spawn_agent`] whose config file's `[limits]` section is `limits` (TOML lines,
    /// e.g. `io_paths` naming a tmpfs, or the kubelet's log directories).
    pub fn spawn_agent_limits(&mut self, name: &str, labels: &str, limits: &str) -> &Agent {
        self.start_agent_limits(name, labels, &[], limits);
        let a = self.agents.last().expect("just started");
        wait_ready(&a.proc, a.metrics, Duration::from_secs(10));
        a
    }

    fn start_agent_limits(
        &mut self,
        name: &str,
        labels: &str,
        env: &[(&str, &str)],
        limits: &str,
    ) -> &Agent {
        let state = self.dir.path().join(format!("state-{name}"));
        let config = self.dir.path().join(format!("agent-{name}.toml"));
        std::fs::write(&config, format!("[limits]\n{limits}")).expect("agent config");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args: Vec<String> = vec![
            "--coordinator".into(),
            format!("https://{}", self.grpc),
            "--node-name".into(),
            name.into(),
            "--labels".into(),
            labels.into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--metrics-listen".into(),
            metrics.to_string(),
            "--certs-dir".into(),
            self.certs.path().display().to_string(),
            "--telemetry-interval".into(),
            "500ms".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        let proc = Proc::spawn_env(
            name,
            &binary("faultline-agent"),
            &args,
            env,
            self.dir.path(),
        );
        self.agents.push(Agent {
            name: name.into(),
            proc,
            metrics,
            state,
        });
        self.agents.last().expect("just pushed")
    }

    pub async fn channel(&self, stem: &str) -> Channel {
        channel(&self.certs, stem, self.grpc).await
    }

    pub async fn experiments(
        &self,
        stem: &str,
    ) -> pb::experiments_client::ExperimentsClient<Channel> {
        pb::experiments_client::ExperimentsClient::new(self.channel(stem).await)
    }

    /// Creates and starts an experiment as operator; panics with the coordinator's message.
    pub async fn run_experiment(&self, document: &str) -> pb::Experiment {
        let mut client = self.experiments("operator").await;
        client
            .create(pb::CreateExperimentRequest {
                document: document.to_string(),
                dry_run: false,
                start: true,
            })
            .await
            .unwrap_or_else(|s| panic!("Create refused: {s:?}"))
            .into_inner()
            .experiment
            .expect("experiment in response")
    }

    pub async fn get(&self, name: &str) -> pb::Experiment {
        let mut client = self.experiments("viewer").await;
        client
            .get(pb::GetExperimentRequest { name: name.into() })
            .await
            .unwrap_or_else(|s| panic!("Get {name}: {s:?}"))
            .into_inner()
    }

    /// Waits until the experiment reaches `phase` (panics on another final phase or timeout).
    pub async fn wait_phase(
        &self,
        name: &str,
        phase: pb::ExperimentPhase,
        timeout: Duration,
    ) -> pb::Experiment {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.get(name).await;
            if e.phase == phase as i32 {
                return e;
            }
            let final_phase = e.phase >= pb::ExperimentPhase::Completed as i32;
            assert!(
                !final_phase && Instant::now() < deadline,
                "experiment {name} is {:?} ({}), expected {phase:?}; log: {:?}",
                pb::ExperimentPhase::try_from(e.phase),
                e.verdict_reason,
                e.log.iter().map(|l| l.message.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every target's revert is acknowledged; returns the record.
    pub async fn wait_all_reverted(&self, name: &str, timeout: Duration) -> pb::Experiment {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.get(name).await;
            if !e.targets.is_empty()
                && e.targets
                    .iter()
                    .all(|t| t.state == pb::FaultState::Reverted as i32)
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "not every target reverted within {timeout:?}: {:?}",
                e.targets
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Prometheus from Debian's package on loopback, scraping `targets` every second.
pub struct Prometheus {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("prometheus dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .expect("prometheus config");
        let args: Vec<String> = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
        ];
        let proc = Proc::spawn("prometheus", &bin, &args, dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready; log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            proc,
            addr,
            _dir: dir,
        }
    }

    /// Waits until an instant query returns a non-empty result.
    pub fn wait_for_series(&self, query: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let path = format!("/api/v1/query?query={}", urlencode(query));
        loop {
            if let Some((200, body)) = http_get(self.addr, &path) {
                if body.contains("\"result\":[{") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no series for {query} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A tiny HTTP server on loopback whose status code and body the test sets at any time:
/// `/healthz` answers `status`, `/metrics` serves `metrics`.
pub struct TestService {
    pub addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestService {
    pub fn start() -> TestService {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test service");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = std::sync::Arc::new(std::sync::Mutex::new((200u16, String::new())));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, metrics) =
                    st.lock().map(|g| g.clone()).unwrap_or((500, String::new()));
                let (code, body) = if req.starts_with("GET /metrics") {
                    (200, metrics)
                } else {
                    (status, format!("status {status}\n"))
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TestService { addr, state, stop }
    }

    pub fn set_status(&self, code: u16) {
        if let Ok(mut g) = self.state.lock() {
            g.0 = code;
        }
    }

    pub fn set_metrics(&self, text: &str) {
        if let Ok(mut g) = self.state.lock() {
            g.1 = text.to_string();
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
