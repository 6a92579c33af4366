//! Simulated agents: one real AgentSession over real mutual TLS per agent, all in this process.
//! Each says Hello, sends Telemetry every second, answers ApplyFault with APPLIED and
//! RevertFault/RevertAll with REVERTED at once, reverts what a renewal no longer vouches for (as
//! the real agent does), and records when it answered, per experiment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_core::{Identity, Role};
use faultline_identity::pki::{self, Ca, Validity};
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};
use faultline_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::shared::{unix_ms, Shared};
use crate::SimError;

/// Telemetry of an untroubled simulated node, and of one whose guard should trip.
pub const CPU_CALM: f64 = 0.05;
pub const CPU_TRIPPED: f64 = 0.99;

/// Issues `agent-<name>.pem` for every name into `dir` (which already holds the certs-init
/// layout with ca.pem and ca-key.pem).
pub fn issue_certs(dir: &Path, names: &[String]) -> Result<(), SimError> {
    let ca = Ca::load(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
    for name in names {
        let issued = ca.issue(
            &Identity::new(Role::Agent, name.clone()),
            &[],
            Validity::days(2),
        )?;
        pki::write_file(
            &dir.join(format!("agent-{name}.pem")),
            &issued.cert_pem,
            false,
        )?;
        pki::write_file(
            &dir.join(format!("agent-{name}-key.pem")),
            &issued.key_pem,
            true,
        )?;
    }
    Ok(())
}

/// A running set of simulated agents.
pub struct Fleet {
    pub shared: Arc<Shared>,
    pub names: Vec<String>,
    trip: watch::Sender<bool>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where and how the simulated agents connect.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub url: CoordinatorUrl,
    pub certs_dir: PathBuf,
    pub names: Vec<String>,
    pub telemetry_interval: Duration,
    /// Sessions opened at once while connecting (TLS handshakes in flight).
    pub connect_concurrency: usize,
}

impl Fleet {
    pub fn start(config: FleetConfig) -> Fleet {
        let shared = Arc::new(Shared::default());
        let (trip, trip_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(
            config.connect_concurrency.max(1),
        ));
        let n = config.names.len().max(1);
        let tasks = config
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sim = SimAgent {
                    name: name.clone(),
                    zone: format!("z{}", i % 3),
                    url: config.url.clone(),
                    paths: CertPaths::in_dir(&config.certs_dir, &format!("agent-{name}")),
                    interval: config.telemetry_interval,
                    // Spread the telemetry of the fleet over the interval, as real agents are.
                    phase: config.telemetry_interval.mul_f64(i as f64 / n as f64),
                    shared: shared.clone(),
                    trip: trip_rx.clone(),
                    stop: stop.clone(),
                    gate: gate.clone(),
                };
                tokio::spawn(sim.run())
            })
            .collect();
        Fleet {
            shared,
            names: config.names,
            trip,
            stop,
            tasks,
        }
    }

    /// Makes every agent report `CPU_TRIPPED` (or `CPU_CALM` again), sending one telemetry
    /// message at once.
    pub fn set_tripped(&self, tripped: bool) {
        let _ = self.trip.send(tripped);
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<Duration, SimError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let connected = self.shared.connected.load(Ordering::SeqCst);
            if connected >= self.names.len() {
                return Ok(started.elapsed());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SimError(format!(
                    "only {connected} of {} simulated agents connected within {timeout:?}; \
                     last error: {}",
                    self.names.len(),
                    self.shared.last_error().unwrap_or_else(|| "none".into())
                )));
            }
        }
    }

    /// Ends every session and waits for the tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct SimAgent {
    name: String,
    zone: String,
    url: CoordinatorUrl,
    paths: CertPaths,
    interval: Duration,
    phase: Duration,
    shared: Arc<Shared>,
    trip: watch::Receiver<bool>,
    stop: CancellationToken,
    gate: Arc<tokio::sync::Semaphore>,
}

impl SimAgent {
    async fn run(mut self) {
        while !self.stop.is_cancelled() {
            let result = self.session().await;
            if self.stop.is_cancelled() {
                return;
            }
            if let Err(e) = result {
                self.shared.session_errors.fetch_add(1, Ordering::Relaxed);
                self.shared.set_last_error(format!("{}: {e}", self.name));
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn hello(&self) -> pb::AgentMessage {
        let labels = [
            ("sim".to_string(), "true".to_string()),
            ("zone".to_string(), self.zone.clone()),
        ];
        pb::AgentMessage {
            msg: Some(Out::Hello(pb::Hello {
                node_name: self.name.clone(),
                labels: labels.into_iter().collect(),
                capabilities: ["cpu", "memory", "io", "process"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                version: faultline_core::VERSION.to_string(),
                held_faults: vec![],
                // As the real agent: renewals only while it holds a fault.
                lease_while_holding: true,
                // Unnumbered: renewals and orders name its telemetry once heard.
                sequence: 0,
            })),
        }
    }

    async fn session(&mut self) -> Result<(), SimError> {
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
        let mut inbound = {
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| SimError(e.to_string()))?;
            let channel = tls::connect(&self.url, &self.paths, Duration::from_secs(10)).await?;
            let mut client = pb::agent_session_client::AgentSessionClient::new(channel);
            tx.send(self.hello()).await.map_err(|_| closed())?;
            let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
            let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
                .await
                .map_err(|_| SimError("no Welcome within 10 s".into()))??;
            match first.and_then(|m| m.msg) {
                Some(In::Welcome(_)) => {}
                other => return Err(SimError(format!("expected Welcome, got {other:?}"))),
            }
            inbound
        };
        self.shared.sessions_opened.fetch_add(1, Ordering::Relaxed);
        self.shared.connected.fetch_add(1, Ordering::SeqCst);
        self.shared.changed.notify_waiters();
        let result = self.serve(&tx, &mut inbound).await;
        self.shared.connected.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn serve(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        inbound: &mut tonic::Streaming<pb::CoordinatorMessage>,
    ) -> Result<(), SimError> {
        // fault id -> experiment id
        let mut held: HashMap<String, String> = HashMap::new();
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.phase, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trip_open = true;
        // Numbered as the real agent numbers it: renewals and orders then name it.
        let mut sequence = 0u64;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    sequence += 1;
                    self.telemetry(tx, held.len(), sequence).await?
                }
                changed = self.trip.changed(), if trip_open => {
                    match changed {
                        Ok(()) => {
                            sequence += 1;
                            self.telemetry(tx, held.len(), sequence).await?
                        }
                        Err(_) => trip_open = false,
                    }
                }
                message = inbound.message() => {
                    let Some(message) = message? else {
                        return Err(SimError("the coordinator closed the session".into()));
                    };
                    self.handle(tx, &mut held, message).await?;
                }
            }
        }
    }

    async fn handle(
        &self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        held: &mut HashMap<String, String>,
        message: pb::CoordinatorMessage,
    ) -> Result<(), SimError> {
        match message.msg {
            Some(In::Apply(a)) => {
                held.insert(a.fault_id.clone(), a.experiment_id.clone());
                let status = status(&a.fault_id, &a.experiment_id, pb::FaultState::Applied, 0);
                tx.send(status).await.map_err(|_| closed())?;
                self.shared
                    .record(&a.experiment_id, pb::FaultState::Applied);
            }
            Some(In::Revert(r)) => {
                if let Some(exp) = held.remove(&r.fault_id) {
                    let status = status(&r.fault_id, &exp, pb::FaultState::Reverted, r.reason);
                    tx.send(status).await.map_err(|_| closed())?;
                    self.shared.record(&exp, pb::FaultState::Reverted);
                } else {
                    // Idempotent: an unknown fault is already gone.
                    let status = status(&r.fault_id, "", pb::FaultState::Reverted, r.reason);
                    tx.send(status).await.map_err(|_| closed())?;
                }
            }
            Some(In::RevertAll(r)) => {
                for (fault, exp) in held.drain() {
                    let status = status(&fault, &exp, pb::FaultState::Reverted, r.reason);
                    tx.send(status).await.map_err(|_| closed())?;
                    self.shared.record(&exp, pb::FaultState::Reverted);
                }
            }
            Some(In::Lease(l)) => {
                self.shared.leases.fetch_add(1, Ordering::Relaxed);
                // The lease contract, as the real agent keeps it: whatever the renewal does not
                // name is reverted at once.
                let gone: Vec<String> = held
                    .keys()
                    .filter(|f| !l.vouched_fault_ids.contains(f))
                    .cloned()
                    .collect();
                for fault in gone {
                    let exp = held.remove(&fault).unwrap_or_default();
                    let reason = pb::RevertReason::Unvouched as i32;
                    let status = status(&fault, &exp, pb::FaultState::Reverted, reason);
                    tx.send(status).await.map_err(|_| closed())?;
                    self.shared.record(&exp, pb::FaultState::Reverted);
                }
            }
            // Simulated agents never ask for a certificate.
            Some(In::Welcome(_)) | Some(In::Certificate(_)) | None => {}
        }
        Ok(())
    }

    async fn telemetry(
        &self,
        tx: &mpsc::Sender<pb::AgentMessage>,
        active: usize,
        sequence: u64,
    ) -> Result<(), SimError> {
        let cpu = if *self.trip.borrow() {
            CPU_TRIPPED
        } else {
            CPU_CALM
        };
        let total: u64 = 8 << 30;
        let used: u64 = 2 << 30;
        let t = pb::Telemetry {
            timestamp_unix_ms: unix_ms(),
            cpu_busy_ratio: cpu,
            memory_total_bytes: total,
            memory_available_bytes: total - used,
            memory_used_bytes: used,
            load1: cpu * 2.0,
            load5: 0.5,
            load15: 0.5,
            interfaces: vec![],
            pressure: None,
            active_faults: u32::try_from(active).unwrap_or(u32::MAX),
            sequence,
        };
        tx.send(pb::AgentMessage {
            msg: Some(Out::Telemetry(t)),
        })
        .await
        .map_err(|_| closed())?;
        self.shared.telemetry_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn status(
    fault_id: &str,
    experiment_id: &str,
    state: pb::FaultState,
    reason: i32,
) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Out::FaultStatus(pb::FaultStatus {
            fault_id: fault_id.to_string(),
            experiment_id: experiment_id.to_string(),
            state: state as i32,
            at_unix_ms: unix_ms(),
            reason,
            error: String::new(),
            counters: Default::default(),
        })),
    }
}

fn closed() -> SimError {
    SimError("the session's send queue is closed".into())
}
