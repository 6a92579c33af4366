//! The running agent: state-dir lock, start-up recovery, metrics endpoint and the background
//! session loop, with one shutdown path that reverts everything.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faultline_admin::Endpoints;
use faultline_core::duration::DurationError;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::enroll::{Enroller, EnrollingTransport, Renewer};
use crate::faults::{FaultManager, RevertReason};
use crate::metrics;
use crate::session::{self, Renew, SessionStatus};
use crate::state_dir::{StateDir, StateDirError};
use crate::transport::{Grpc, Transport};

/// How long `shutdown` waits for the session loop to finish its current step.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The most SIGTERM waits for every fault to be reverted; what is left stays journaled and is
/// reverted by the next start (the journal recovery), and the log names it.
const SHUTDOWN_REVERT_BOUND: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] DurationError),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("--metrics-listen {addr}: cannot listen: {source}")]
    MetricsListen { addr: SocketAddr, source: io::Error },
}

/// A running agent. Stop it with [`Agent::shutdown`], which reverts everything; dropping it only
/// stops the background tasks.
pub struct Agent {
    status: watch::Receiver<SessionStatus>,
    metrics_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    manager: Arc<dyn FaultManager>,
    state_dir: Option<StateDir>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("status", &*self.status.borrow())
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Locks the state dir, calls `manager.revert_all(Recovery)` before anything else touches
    /// the manager, serves metrics, then runs the session loop in the background.
    pub async fn start(
        config: Config,
        manager: Arc<dyn FaultManager>,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Agent, AgentError> {
        Self::start_locked(config, None, manager, metrics).await
    }

    /// [`Agent::start`] with the state dir already locked by the caller (who opened the
    /// manager's journal inside it); `None` locks it here.
    pub async fn start_locked(
        config: Config,
        state_dir: Option<StateDir>,
        manager: Arc<dyn FaultManager>,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Agent, AgentError> {
        let transport = Arc::new(Grpc {
            url: config.coordinator.clone(),
            certs: config.tls.clone(),
        });
        let backoff = Backoff::new(config.max_backoff);
        Self::start_with(config, manager, metrics, transport, backoff, state_dir).await
    }

    /// [`Agent::start_locked`] for an agent whose identity the coordinator issues: each
    /// connection first enrolls again if the stored certificate is missing or expired (and a
    /// token is available), and the session renews the certificate at two thirds of its
    /// lifetime. `config.tls` must be the enroller's files.
    pub async fn start_enrolled(
        config: Config,
        state_dir: Option<StateDir>,
        manager: Arc<dyn FaultManager>,
        metrics: Option<PrometheusHandle>,
        enroller: Arc<Enroller>,
    ) -> Result<Agent, AgentError> {
        let renewer: Arc<dyn Renew> = Arc::new(Renewer::new(
            enroller.files.clone(),
            config.node_name.clone(),
        ));
        let transport = Arc::new(EnrollingTransport {
            inner: Grpc {
                url: config.coordinator.clone(),
                certs: config.tls.clone(),
            },
            enroller,
        });
        let backoff = Backoff::new(config.max_backoff);
        Self::start_inner(
            config,
            manager,
            metrics,
            transport,
            backoff,
            state_dir,
            Some(renewer),
        )
        .await
    }

    /// [`Agent::start`] over any transport (tests use in-memory streams).
    pub(crate) async fn start_with(
        config: Config,
        manager: Arc<dyn FaultManager>,
        metrics: Option<PrometheusHandle>,
        transport: Arc<dyn Transport>,
        backoff: Backoff,
        state_dir: Option<StateDir>,
    ) -> Result<Agent, AgentError> {
        Self::start_inner(
            config, manager, metrics, transport, backoff, state_dir, None,
        )
        .await
    }

    async fn start_inner(
        config: Config,
        manager: Arc<dyn FaultManager>,
        metrics: Option<PrometheusHandle>,
        transport: Arc<dyn Transport>,
        backoff: Backoff,
        state_dir: Option<StateDir>,
        renewer: Option<Arc<dyn Renew>>,
    ) -> Result<Agent, AgentError> {
        config.validate()?;
        tracing::info!(
            "faultline-agent {} starting as {} for {} (labels {:?}, state dir {})",
            faultline_core::VERSION,
            config.node_name,
            config.coordinator,
            config.labels.to_string(),
            config.state_dir.display()
        );
        let state_dir = match state_dir {
            Some(held) => held,
            None => StateDir::open(&config.state_dir)?,
        };
        metrics::describe();
        let recovered = manager.revert_all(RevertReason::Recovery).await;
        metrics::reverted_all(RevertReason::Recovery, &recovered);

        let (status_tx, status_rx) = watch::channel(SessionStatus::default());
        let cancel = CancellationToken::new();
        let metrics_addr = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let ready_rx = status_rx.clone();
                let endpoints = Endpoints {
                    metrics: Arc::new(move || match &metrics {
                        Some(h) => h.render(),
                        None => String::new(),
                    }),
                    ready: Arc::new(move || ready_rx.borrow().connected),
                };
                let bound =
                    faultline_admin::serve(addr, endpoints, cancel.clone().cancelled_owned())
                        .await
                        .map_err(|source| AgentError::MetricsListen { addr, source })?;
                tracing::info!("serving /metrics, /healthz and /readyz on {bound}");
                Some(bound)
            }
        };
        let ctx = session::Ctx {
            node_name: config.node_name,
            labels: config.labels,
            telemetry_interval: config.telemetry_interval,
            manager: manager.clone(),
            transport,
            status: status_tx,
            cancel: cancel.clone(),
            backoff,
            pending: VecDeque::from(recovered),
            events: manager.take_events(),
            renewer,
        };
        let task = tokio::spawn(session::run(ctx));
        Ok(Agent {
            status: status_rx,
            metrics_addr,
            cancel,
            task: Some(task),
            manager,
            state_dir: Some(state_dir),
        })
    }

    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Ends the session and calls manager.revert_all(Shutdown) before returning.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("session loop did not stop within {SHUTDOWN_GRACE:?}; aborting it");
                task.abort();
            }
        }
        tracing::info!("shutting down: reverting all faults");
        let reverting = self.manager.revert_all(RevertReason::Shutdown);
        match tokio::time::timeout(SHUTDOWN_REVERT_BOUND, reverting).await {
            Ok(statuses) => metrics::reverted_all(RevertReason::Shutdown, &statuses),
            Err(_) => {
                let left: Vec<String> = self
                    .manager
                    .held()
                    .into_iter()
                    .map(|h| h.fault_id)
                    .collect();
                metrics::shutdown_revert_overran(SHUTDOWN_REVERT_BOUND, &left);
            }
        }
        // Releases the state-dir lock only after everything is reverted.
        self.state_dir.take();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // An agent dropped without shutdown() still stops its background tasks.
        self.cancel.cancel();
    }
}
