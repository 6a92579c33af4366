//! The session loop: dial the coordinator, say Hello, wait for Welcome, then stream telemetry and
//! carry out fault orders while keeping the lease; reconnect with backoff when anything breaks.
//!
//! Lease rule: a broken stream does not revert anything (faults survive a reconnect inside the
//! lease); only a lapse does, once per lapse, wherever the loop is at that moment (in a session,
//! connecting, or waiting to retry).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::{Labels, NodeName};
use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::coordinator_message::Msg as In;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::faults::{FaultManager, RevertReason};
use crate::lease::Lease;
use crate::metrics;
use crate::telemetry::Sampler;
use crate::transport::{Inbound, Transport};

mod error;
mod wire;

use error::FailureLog;
pub use error::SessionError;
use wire::{agent_msg, coordinator_reason, open, send};

/// How long the coordinator has to answer Hello with Welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Fault statuses kept for the next session while disconnected (oldest dropped first).
const PENDING_LIMIT: usize = 1000;

/// What the agent's session looks like right now.
#[derive(Clone, Debug, Default)]
pub struct SessionStatus {
    /// Welcome received and lease valid.
    pub connected: bool,
    pub session_id: String,
    /// Total LeaseRenewal messages received since start.
    pub lease_renewals: u64,
    /// Successful sessions since start.
    pub connects: u64,
    pub telemetry_sent: u64,
    /// Why the last connect/session failed.
    pub last_error: Option<String>,
}

/// Everything the session loop needs.
pub struct Ctx {
    pub node_name: NodeName,
    pub labels: Labels,
    pub telemetry_interval: Duration,
    pub manager: Arc<dyn FaultManager>,
    pub transport: Arc<dyn Transport>,
    pub status: watch::Sender<SessionStatus>,
    pub cancel: CancellationToken,
    pub backoff: Backoff,
    /// Statuses to send once a session is up (e.g. from the start-up recovery).
    pub pending: VecDeque<pb::FaultStatus>,
    /// Statuses the manager produces on its own (deadline reverts, failed faults, retried
    /// reverts): sent at once while connected, queued in `pending` while not.
    pub events: Option<mpsc::Receiver<pb::FaultStatus>>,
}

/// The next unsolicited status; never completes when there is no (more) event source.
async fn next_event(events: &mut Option<mpsc::Receiver<pb::FaultStatus>>) -> pb::FaultStatus {
    if let Some(rx) = events {
        if let Some(s) = rx.recv().await {
            return s;
        }
        *events = None;
    }
    std::future::pending().await
}

struct Loop {
    ctx: Ctx,
    target: String,
    lease: Lease,
    lease_ms: u64,
    sampler: Sampler,
    sampler_failed: bool,
}

enum End {
    Cancelled,
    Lapsed,
    Broken(SessionError),
}

/// Runs sessions until `ctx.cancel` fires.
pub async fn run(ctx: Ctx) {
    let target = ctx.transport.target();
    let mut l = Loop {
        ctx,
        target,
        lease: Lease::new(),
        lease_ms: 0,
        sampler: Sampler::new(),
        sampler_failed: false,
    };
    l.run().await;
    l.ctx.status.send_modify(|s| s.connected = false);
}

impl Loop {
    async fn run(&mut self) {
        let mut failures = FailureLog::default();
        let mut first = true;
        loop {
            if !first {
                let delay = self.ctx.backoff.next_delay();
                metrics::reconnecting(delay);
                if self.guarded(tokio::time::sleep(delay)).await.is_none() {
                    return;
                }
            }
            first = false;
            let opening = open(self.ctx.transport.clone(), self.hello());
            let opened = match self.guarded(opening).await {
                None => return,
                Some(r) => r,
            };
            let (tx, inbound, welcome) = match opened {
                Ok(x) => x,
                Err(e) => {
                    metrics::connect_failed(&self.target, &e.to_string(), failures.level(&e));
                    self.ctx
                        .status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                    continue;
                }
            };
            failures = FailureLog::default();
            self.ctx.backoff.reset();
            self.lease_ms = welcome.lease_ms;
            self.lease
                .renew(Instant::now(), Duration::from_millis(welcome.lease_ms));
            self.ctx.manager.lease_renewed(
                std::time::SystemTime::now() + Duration::from_millis(welcome.lease_ms),
            );
            metrics::connected(
                &self.target,
                self.ctx.node_name.as_str(),
                &welcome.session_id,
                welcome.lease_ms,
            );
            self.ctx.status.send_modify(|s| {
                s.connected = true;
                s.session_id = welcome.session_id.clone();
                s.connects += 1;
                s.last_error = None;
            });
            match self.serve(tx, inbound).await {
                End::Cancelled => return,
                End::Lapsed => {
                    let why = "lease lapsed".to_string();
                    self.ctx.status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(why);
                    });
                }
                End::Broken(e) => {
                    metrics::disconnected(&e.to_string());
                    self.ctx.status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(e.to_string());
                    });
                }
            }
        }
    }

    /// Drives `fut` to completion while reverting everything if the lease lapses meanwhile.
    /// `None` when cancelled.
    async fn guarded<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return None,
                out = &mut fut => return Some(out),
                _ = self.lease.lapsed() => {
                    if self.lease.check_lapse(Instant::now()) {
                        self.on_lapse().await;
                    }
                }
                s = next_event(&mut self.ctx.events) => {
                    metrics::fault_status("event (queued while disconnected)", &s);
                    self.queue(vec![s]);
                }
            }
        }
    }

    async fn on_lapse(&mut self) {
        metrics::lease_lapsed(self.lease_ms);
        self.ctx.status.send_modify(|s| s.connected = false);
        let statuses = self.ctx.manager.revert_all(RevertReason::Lease).await;
        metrics::reverted_all(RevertReason::Lease, &statuses);
        self.queue(statuses);
    }

    fn queue(&mut self, statuses: Vec<pb::FaultStatus>) {
        for s in statuses {
            if self.ctx.pending.len() >= PENDING_LIMIT {
                self.ctx.pending.pop_front();
            }
            self.ctx.pending.push_back(s);
        }
    }

    fn hello(&self) -> pb::Hello {
        pb::Hello {
            node_name: self.ctx.node_name.to_string(),
            labels: self.ctx.labels.0.clone().into_iter().collect(),
            capabilities: self.ctx.manager.capabilities(),
            version: faultline_core::VERSION.to_string(),
            held_faults: self.ctx.manager.held(),
        }
    }

    /// One established session, until it breaks, the lease lapses or the agent stops.
    async fn serve(&mut self, tx: mpsc::Sender<pb::AgentMessage>, mut inbound: Inbound) -> End {
        while let Some(s) = self.ctx.pending.pop_front() {
            if tx.send(agent_msg(Out::FaultStatus(s))).await.is_err() {
                return End::Broken(SessionError::Closed);
            }
        }
        // The first sample goes out with the session: the coordinator (and any guard about to
        // evaluate this node) never has to wait a whole interval for data.
        let every = self.ctx.telemetry_interval;
        let mut tick = tokio::time::interval_at(Instant::now(), every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return End::Cancelled,
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => {
                        if let Err(e) = self.handle(m, &tx).await {
                            return End::Broken(e);
                        }
                    }
                    Some(Err(status)) => return End::Broken(SessionError::from_status(status)),
                    None => return End::Broken(SessionError::Closed),
                },
                _ = self.lease.lapsed() => {
                    if self.lease.check_lapse(Instant::now()) {
                        self.on_lapse().await;
                        return End::Lapsed;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.send_telemetry(&tx).await {
                        return End::Broken(e);
                    }
                }
                s = next_event(&mut self.ctx.events) => {
                    metrics::fault_status("event", &s);
                    if send(&tx, Out::FaultStatus(s.clone())).await.is_err() {
                        // Not lost: the next session sends it.
                        self.queue(vec![s]);
                        return End::Broken(SessionError::Closed);
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        msg: pb::CoordinatorMessage,
        tx: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let manager = self.ctx.manager.clone();
        match msg.msg {
            Some(In::Lease(renewal)) => {
                if renewal.lease_ms > 0 {
                    self.lease_ms = renewal.lease_ms;
                }
                self.lease
                    .renew(Instant::now(), Duration::from_millis(self.lease_ms));
                manager.lease_renewed(
                    std::time::SystemTime::now() + Duration::from_millis(self.lease_ms),
                );
                metrics::lease_renewed(renewal.sequence, self.lease_ms);
                self.ctx.status.send_modify(|s| s.lease_renewals += 1);
            }
            Some(In::Apply(req)) => {
                let s = manager.apply(req).await;
                metrics::fault_status("apply", &s);
                send(tx, Out::FaultStatus(s)).await?;
            }
            Some(In::Revert(r)) => {
                let reason = coordinator_reason(r.reason);
                let s = manager.revert(r.fault_id, reason).await;
                metrics::fault_status("revert", &s);
                send(tx, Out::FaultStatus(s)).await?;
            }
            Some(In::RevertAll(r)) => {
                let reason = coordinator_reason(r.reason);
                tracing::warn!(
                    reason = crate::faults::reason_label(reason),
                    message = %r.message,
                    "coordinator ordered every fault reverted: {}",
                    r.message
                );
                let statuses = manager.revert_all(reason).await;
                metrics::reverted_all(reason, &statuses);
                for s in statuses {
                    send(tx, Out::FaultStatus(s)).await?;
                }
            }
            Some(In::Welcome(w)) => {
                tracing::warn!(session_id = %w.session_id, "ignoring a second Welcome in one session");
            }
            None => tracing::debug!("ignoring an empty coordinator message"),
        }
        Ok(())
    }

    async fn send_telemetry(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let active = u32::try_from(self.ctx.manager.held().len()).unwrap_or(u32::MAX);
        match self.sampler.sample(active) {
            Ok(t) => {
                send(tx, Out::Telemetry(t)).await?;
                metrics::telemetry_sent();
                self.ctx.status.send_modify(|s| s.telemetry_sent += 1);
                self.sampler_failed = false;
            }
            Err(e) => {
                metrics::telemetry_failed(&e.to_string(), !self.sampler_failed);
                self.sampler_failed = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_events;
#[cfg(test)]
mod tests_lease;
