//! The Faultline control plane: serves the `faultline.v1` gRPC API over mutual TLS, keeps the
//! registry of agent sessions, runs experiments (plan, dispatch, guards, abort, results) and the
//! durable store, and exposes Prometheus metrics.
#![forbid(unsafe_code)]

#[cfg(test)]
mod audit_tests;
pub mod authz;
pub mod config;
pub mod enroll;
pub mod experiments;
mod fleet;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod registry;
mod renew_pace;
pub mod runs;
pub mod schedules;
mod session;
mod state;
pub mod store;
#[cfg(test)]
mod test_support;
mod vouch;
pub mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_admin::Endpoints;
use faultline_identity::pki::AgentIssuer;
use faultline_identity::tls::{
    CertPaths, HandshakeLimits, ReloadingServerConfig, TlsError, TlsIncoming,
};
use faultline_proto::pb::agent_session_server::AgentSessionServer;
use faultline_proto::pb::enrollment_server::EnrollmentServer;
use faultline_proto::pb::experiments_server::ExperimentsServer;
use faultline_proto::pb::fleet_server::FleetServer;
use faultline_proto::pb::schedules_server::SchedulesServer;
use faultline_proto::pb::tokens_server::TokensServer;
use faultline_proto::pb::workflows_server::WorkflowsServer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::Policy;
pub use enroll::{EnrollmentConfig, IssuerConfig};
pub use kube::PodAccess;
pub use session::HELLO_TIMEOUT;
use state::State;
use store::retention::{self, Retention};
use store::{SledStore, StoreError, StoreHandle};

/// Default lease granted to agents.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// Default period of lease renewals.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest lease allowed.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease allowed.
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// How often the coordinator records that it is alive (see [`store::Store::put_heartbeat`]).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections and sessions to end before cutting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a coordinator needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address (mutual TLS), e.g. `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    /// Plain-HTTP `/metrics`, `/healthz`, `/readyz`; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// The sled store lives in `<data_dir>/store`.
    pub data_dir: PathBuf,
    pub tls: CertPaths,
    /// TLS handshakes in progress at once and how long each may take
    /// (`--max-handshakes`, `--handshake-timeout`).
    pub handshakes: HandshakeLimits,
    /// Lease granted to agents, 1s..=60s.
    pub lease: Duration,
    /// Period of lease renewals; shorter than `lease`.
    pub renew_interval: Duration,
    pub policy: Policy,
    /// How long the audit log and ended experiments are kept (`[retention]`).
    pub retention: Retention,
    /// Where run events are sent (`[[notifications]]`).
    pub notifications: Vec<notify::Sink>,
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error("loading the TLS certificates: {0}")]
    Tls(#[from] TlsError),
    #[error("loading the issuer: {0}")]
    Issuer(#[from] faultline_identity::pki::IssuerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("binding {flag} {addr}: {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl CoordinatorError {
    /// True when the error is bad input (flags or configuration) rather than a runtime failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CoordinatorError::InvalidConfig(_) | CoordinatorError::Issuer(_)
        )
    }
}

/// Checks the lease and renew interval.
pub fn validate_timing(lease: Duration, renew_interval: Duration) -> Result<(), CoordinatorError> {
    faultline_core::duration::check_range("--lease", lease, MIN_LEASE, MAX_LEASE)
        .map_err(|e| CoordinatorError::InvalidConfig(e.to_string()))?;
    if renew_interval.is_zero() || renew_interval >= lease {
        return Err(CoordinatorError::InvalidConfig(format!(
            "--renew-interval {} must be greater than 0 and shorter than --lease {}",
            humantime::format_duration(renew_interval),
            humantime::format_duration(lease)
        )));
    }
    Ok(())
}

/// A running coordinator.
pub struct Coordinator {
    state: Arc<State>,
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    enroll_addr: Option<SocketAddr>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    enroll_server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    sessions_done: mpsc::Receiver<()>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Opens the store, binds both listeners, serves in background tasks; returns once
    /// listening. Without Kubernetes access: pod targets are refused.
    pub async fn start(
        config: Config,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Coordinator, CoordinatorError> {
        Self::start_with_pods(config, metrics, PodAccess::none()).await
    }

    /// [`Coordinator::start`] with access to the Kubernetes API for pod targets.
    pub async fn start_with_pods(
        config: Config,
        metrics: Option<PrometheusHandle>,
        pods: PodAccess,
    ) -> Result<Coordinator, CoordinatorError> {
        Self::start_full(config, metrics, pods, EnrollmentConfig::disabled()).await
    }

    /// [`Coordinator::start_with_pods`] that also issues agent certificates (enrollment
    /// listener, renewals, join tokens) when `enrollment` has an issuer.
    pub async fn start_full(
        config: Config,
        metrics: Option<PrometheusHandle>,
        pods: PodAccess,
        enrollment: EnrollmentConfig,
    ) -> Result<Coordinator, CoordinatorError> {
        validate_timing(config.lease, config.renew_interval)?;
        if let Some(issuer) = &enrollment.issuer {
            if issuer.agent_cert_ttl.is_zero() {
                return Err(CoordinatorError::InvalidConfig(
                    "--agent-cert-ttl must be greater than 0".into(),
                ));
            }
        }
        crate::metrics::describe();
        // Fail on unusable certificate files before the store is locked.
        ReloadingServerConfig::new(config.tls.clone())?;
        let issuer = enrollment
            .issuer
            .as_ref()
            .map(|i| AgentIssuer::load(&i.cert, &i.key, i.agent_cert_ttl))
            .transpose()?;
        let (store, shared) = StoreHandle::open_shared(&config.data_dir).await?;
        let store = Arc::new(store);
        let started = Self::start_with_store(
            config,
            metrics,
            store.clone(),
            shared,
            pods,
            issuer,
            enrollment,
        )
        .await;
        if started.is_err() {
            let _ = store.close().await;
        }
        started
    }

    async fn start_with_store(
        config: Config,
        metrics: Option<PrometheusHandle>,
        store: Arc<StoreHandle>,
        enroll_store: Arc<SledStore>,
        pods: PodAccess,
        issuer: Option<AgentIssuer>,
        enrollment: EnrollmentConfig,
    ) -> Result<Coordinator, CoordinatorError> {
        let ca_bundle_pem = std::fs::read_to_string(&config.tls.ca).unwrap_or_default();
        // The enrollment tables (tokens, issued certificates, revocations) are read and
        // written from blocking tasks on the same sled database.
        let pki = Arc::new(enroll::Pki::new(
            issuer,
            ca_bundle_pem,
            enroll_store,
            enrollment.attempts_per_minute,
        )?);
        let tls = Arc::new(ReloadingServerConfig::with_revocations(
            config.tls.clone(),
            pki.revocations.clone(),
        )?);
        let registry = registry::Registry::from_records(store.agents().await?);
        let halt = store.halt().await?;
        crate::metrics::halted_restored(
            halt.is_some(),
            halt.as_ref().map_or("", |h| h.reason.as_str()),
        );
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| CoordinatorError::Bind {
                    flag: "--listen",
                    addr: config.listen,
                    source,
                })?;
        let grpc_addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                flag: "--listen",
                addr: config.listen,
                source,
            })?;
        let enroll_listener = match (enrollment.listen, pki.has_issuer()) {
            (Some(addr), true) => {
                let bind = |source| CoordinatorError::Bind {
                    flag: "--enroll-listen",
                    addr,
                    source,
                };
                let listener = TcpListener::bind(addr).await.map_err(bind)?;
                let bound = listener.local_addr().map_err(bind)?;
                Some((listener, bound))
            }
            (Some(_), false) => {
                tracing::info!(
                    "no --issuer-cert/--issuer-key: this coordinator issues no agent \
                     certificates and serves no enrollment listener"
                );
                None
            }
            (None, _) => None,
        };
        let (guard, sessions_done) = mpsc::channel(1);
        let mut state = State::new(
            config.policy,
            config.lease,
            config.renew_interval,
            store,
            registry,
            halt,
            guard,
        );
        state.pods = pods;
        state.notifier = notify::Notifier::start(
            config.notifications.clone(),
            state.store.clone(),
            state.shutdown.clone(),
        );
        let state = Arc::new(state);
        // Before any session can say Hello: the experiments found running are resumed (and
        // vouch for their faults again) or ended, so the first Welcome is already right.
        let down_from = state.store.heartbeat().await?.unwrap_or(0);
        for rec in state.experiments.recover(&state.store).await? {
            let name = rec.name.clone();
            match experiments::run::resume(&state, rec, down_from)? {
                experiments::run::Resumed::Resumed => {}
                experiments::run::Resumed::Ended(why) => {
                    tracing::warn!(experiment = %name, "experiment {name} {why}")
                }
            }
        }
        // Then the workflows that were running (on top of their experiments), and the
        // schedules, whose first pass catches up on what was missed while down.
        let workflows = workflows::ops::recover(&state).await?;
        let schedules = schedules::scheduler::recover(&state).await?;
        if workflows + schedules > 0 {
            tracing::info!("resumed {workflows} workflow(s), loaded {schedules} schedule(s)");
        }
        schedules::scheduler::spawn(&state);
        spawn_heartbeat(&state);
        spawn_pruning(&state, config.retention.clone());
        let ready = Arc::new(AtomicBool::new(false));
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let endpoints = endpoints(metrics, ready.clone());
                let stop = state.shutdown.clone().cancelled_owned();
                let bound = faultline_admin::serve(addr, endpoints, stop)
                    .await
                    .map_err(|source| CoordinatorError::Bind {
                        flag: "--metrics-listen",
                        addr,
                        source,
                    })?;
                Some(bound)
            }
            None => None,
        };

        let auth = authz::authenticate;
        let router = tonic::transport::Server::builder()
            // No HTTP/2 keepalive pings: the accepted sockets have TCP keepalive
            // (faultline_identity::tls::incoming), agent sessions their silence timer.
            .add_service(AgentSessionServer::with_interceptor(
                session::SessionService {
                    state: state.clone(),
                    pki: pki.clone(),
                },
                auth,
            ))
            .add_service(FleetServer::with_interceptor(
                fleet::FleetService {
                    state: state.clone(),
                    pki: pki.clone(),
                },
                auth,
            ))
            .add_service(TokensServer::with_interceptor(
                enroll::tokens::TokensService {
                    state: state.clone(),
                    pki: pki.clone(),
                },
                auth,
            ))
            .add_service(ExperimentsServer::with_interceptor(
                experiments::service::ExperimentsService {
                    state: state.clone(),
                },
                auth,
            ))
            .add_service(SchedulesServer::with_interceptor(
                schedules::service::SchedulesService {
                    state: state.clone(),
                },
                auth,
            ))
            .add_service(WorkflowsServer::with_interceptor(
                workflows::service::WorkflowsService {
                    state: state.clone(),
                },
                auth,
            ));
        let incoming = TlsIncoming::new(
            listener,
            tls,
            config.handshakes,
            Arc::new(crate::metrics::Handshakes),
        );
        let stop = state.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop));
        let (enroll_addr, enroll_server) = match enroll_listener {
            Some((listener, bound)) => {
                // Server authentication only, and nothing but Enrollment behind it.
                let tls = Arc::new(ReloadingServerConfig::server_only(config.tls.clone())?);
                let incoming = TlsIncoming::server_only(
                    listener,
                    tls,
                    config.handshakes,
                    Arc::new(crate::metrics::Handshakes),
                );
                let router = tonic::transport::Server::builder()
                    .timeout(Duration::from_secs(30))
                    .add_service(EnrollmentServer::new(enroll::service::EnrollmentService {
                        state: state.clone(),
                        pki: pki.clone(),
                        kubernetes: kube::enroll::KubeEnrollment::new(
                            &state.pods,
                            enrollment.kubernetes.clone(),
                        ),
                    }));
                let stop = state.shutdown.clone().cancelled_owned();
                let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop));
                tracing::info!(addr = %bound, "enrollment listener (server-only TLS, Enrollment only) on {bound}");
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        ready.store(true, Ordering::SeqCst);
        tracing::debug!(%grpc_addr, ?metrics_addr, "coordinator serving");
        Ok(Coordinator {
            state,
            grpc_addr,
            metrics_addr,
            enroll_addr,
            server,
            enroll_server,
            sessions_done,
            ready,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The enrollment listener's address, when this coordinator issues certificates.
    pub fn enroll_addr(&self) -> Option<SocketAddr> {
        self.enroll_addr
    }

    /// Graceful stop: aborts running experiments (RevertFault SHUTDOWN to their targets),
    /// stops accepting, ends every agent session, then flushes and releases the store, so a new
    /// coordinator can open the same data directory in this process.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::SeqCst);
        self.state.workflows.freeze();
        experiments::ops::shutdown_all(&self.state).await;
        self.state.shutdown.cancel();
        self.state.release_session_guard();
        match tokio::time::timeout(DRAIN_TIMEOUT, self.sessions_done.recv()).await {
            Ok(_) => {}
            Err(_) => tracing::warn!("agent sessions did not end within {DRAIN_TIMEOUT:?}"),
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("gRPC server ended with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("gRPC server task failed: {e}"),
            Err(_) => {
                tracing::warn!("connections did not close within {DRAIN_TIMEOUT:?}; cutting them");
                self.server.abort();
            }
        }
        if let Some(mut task) = self.enroll_server.take() {
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        if let Err(e) = self.state.store.close().await {
            tracing::error!("closing the store: {e}");
        }
        tracing::info!(addr = %self.grpc_addr, "coordinator stopped");
    }
}

/// Writes the heartbeat every second (on the store thread), so the next start knows when
/// this coordinator stopped.
fn spawn_heartbeat(state: &Arc<State>) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = state.store.put_heartbeat(state::now_ms()).await {
                        tracing::warn!("could not write the heartbeat: {e}");
                    }
                }
            }
        }
    });
}

/// One retention pass (logged and counted by it); a failure is logged, the next pass tries
/// again.
async fn prune(state: &State, r: &Retention) {
    let now = state::now_ms();
    if let Err(e) = retention::prune(&state.store, &state.experiments, r, now).await {
        tracing::error!("retention: pruning the store failed: {e}");
    }
}

/// Retention at once, then every `prune_interval`, in the background: a first start on a long
/// history prunes while the coordinator already serves.
fn spawn_pruning(state: &Arc<State>, r: Retention) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(r.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => prune(&state, &r).await,
            }
        }
    });
}

fn endpoints(metrics: Option<PrometheusHandle>, ready: Arc<AtomicBool>) -> Endpoints {
    Endpoints {
        metrics: Arc::new(move || metrics.as_ref().map(|h| h.render()).unwrap_or_default()),
        ready: Arc::new(move || ready.load(Ordering::SeqCst)),
    }
}
