//! The session loop: dial the coordinator, say Hello, wait for Welcome, then stream telemetry and
//! carry out fault orders while keeping the lease; reconnect with backoff when anything breaks.
//!
//! Lease rule: a broken stream does not revert anything (faults survive a reconnect inside the
//! lease); only a lapse does, once per lapse, wherever the loop is at that moment (in a session,
//! connecting, or waiting to retry).
//!
//! Vouch rule ([`vouch`]): the agent holds a fault only while the coordinator vouches for it.
//! Every Welcome and renewal names the faults it wants held; anything else is reverted at once,
//! and a fault whose vouch runs out is reverted even while the session stays up.
//!
//! Fault orders run beside the loop ([`orders`]): a slow apply never delays a renewal, telemetry
//! or another fault's revert.
//!
//! Idle rule (Hello's `lease_while_holding`): the lease guards faults, so in a session a lease
//! that runs out while nothing is held, applied or reverted only disarms it; the coordinator
//! stops renewing an agent it vouches nothing to. An ApplyFault is word from the coordinator as
//! much as a renewal is: it arms the lease (and the kernel-side bound) before the apply starts.
//!
//! Anchor rule: renewals and orders name the latest telemetry the coordinator had
//! (`telemetry_sequence`); the lease they grant runs one lease from when this agent *sent* that
//! telemetry, on its own clock. Time a message spent in flight is never added to the lease, and
//! an order that waited out a partition (sent from telemetry a lease or more ago) is refused:
//! by then the coordinator may have given the target up.

use std::collections::{BTreeSet, VecDeque};
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
mod orders;
mod renew;
mod vouch;
mod wire;

use error::FailureLog;
pub use error::SessionError;
use orders::{Done, Op, Orders};
pub use renew::Renew;
use vouch::Vouches;
use wire::{agent_msg, coordinator_reason, open, send};

/// How long the coordinator has to answer Hello with Welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Fault statuses kept for the next session while disconnected (oldest dropped first).
const PENDING_LIMIT: usize = 1000;
/// How often held faults are checked against their vouch.
const VOUCH_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Reconnect attempts at least this many times within what is left of a held lease.
const LEASE_ATTEMPTS: u32 = 3;
/// Hello and telemetry send times are kept for the anchor rule for two leases, and at least
/// the last this many whatever their age.
const SENT_KEPT: usize = 64;

/// What the agent's session looks like right now.
#[derive(Clone, Debug, Default)]
pub struct SessionStatus {
    /// Welcome received, and the session has not ended (while the agent holds a fault, its
    /// lease is valid; an idle agent's lease may have run out without ending anything).
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
    /// The certificate to renew over the session (an enrolled agent); `None` for certificates
    /// managed outside the agent.
    pub renewer: Option<Arc<dyn Renew>>,
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
    vouches: Vouches,
    orders: Orders,
    done: mpsc::UnboundedReceiver<Done>,
    vouch_check: tokio::time::Interval,
    /// When to ask for a new certificate next (in a session).
    renew_at: Option<Instant>,
    /// The last telemetry sequence number used, and when recent ones were sent (anchor rule).
    telemetry_seq: u64,
    sent: VecDeque<(u64, Instant)>,
}

enum End {
    Cancelled,
    Lapsed,
    Broken(SessionError),
}

/// Runs sessions until `ctx.cancel` fires.
pub async fn run(ctx: Ctx) {
    let target = ctx.transport.target();
    let (orders, done) = Orders::new(ctx.manager.clone());
    let mut vouch_check = tokio::time::interval(VOUCH_CHECK_EVERY);
    vouch_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut l = Loop {
        ctx,
        target,
        lease: Lease::new(),
        lease_ms: 0,
        sampler: Sampler::new(),
        sampler_failed: false,
        vouches: Vouches::default(),
        orders,
        done,
        vouch_check,
        renew_at: None,
        telemetry_seq: 0,
        sent: VecDeque::with_capacity(SENT_KEPT),
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
                // While the lease still holds faults, try at least three times before it runs
                // out: a coordinator back within the lease then finds the agent (and vouches
                // for its faults again) instead of the backoff outlasting the lease.
                let now = Instant::now();
                let limit = self
                    .lease
                    .deadline()
                    .filter(|d| *d > now)
                    .map(|d| (d - now) / LEASE_ATTEMPTS);
                let delay = self.ctx.backoff.next_delay_within(limit);
                metrics::reconnecting(delay);
                if self.guarded(tokio::time::sleep(delay)).await.is_none() {
                    return;
                }
            }
            first = false;
            let (hello, hello_sent) = self.hello();
            let opening = open(self.ctx.transport.clone(), hello);
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
            // Anchor rule: the Welcome answers the Hello, so its lease counts from when the
            // Hello went out (a Welcome that waited out a partition grants only what is left).
            self.lease_ms = welcome.lease_ms;
            let until = hello_sent + Duration::from_millis(self.lease_ms);
            self.extend_lease(until);
            self.vouched(&welcome.vouched_fault_ids, Some(until));
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
                Some(d) = self.done.recv() => {
                    if let Some(s) = self.finished(d) {
                        metrics::fault_status("order (queued while disconnected)", &s);
                        self.queue(vec![s]);
                    }
                }
                _ = self.vouch_check.tick() => self.check_vouches(),
            }
        }
    }

    /// Every fault this agent holds or is applying now.
    fn present(&mut self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .ctx
            .manager
            .held()
            .into_iter()
            .map(|h| h.fault_id)
            .collect();
        ids.extend(self.orders.in_flight());
        ids
    }

    /// A Welcome or renewal named `ids`, vouched for until `until` (`None`: a renewal too old
    /// to extend anything, which leaves the named vouches as they were): whatever else is held
    /// or being applied is reverted.
    fn vouched(&mut self, ids: &[String], until: Option<Instant>) {
        let present = self.present();
        for id in self.vouches.renewed(ids, until, &present) {
            metrics::unvouched(&id);
            self.revert(id, RevertReason::Unvouched);
        }
    }

    /// Held faults whose vouch ran out are reverted (reason LEASE).
    fn check_vouches(&mut self) {
        let held: BTreeSet<String> = self
            .ctx
            .manager
            .held()
            .into_iter()
            .map(|h| h.fault_id)
            .collect();
        self.vouches.forget_gone(&held);
        let in_flight = self.orders.in_flight();
        let held: BTreeSet<String> = held.difference(&in_flight).cloned().collect();
        for id in self.vouches.expired(&held, Instant::now()) {
            metrics::vouch_expired(&id, self.lease_ms);
            self.revert(id, RevertReason::Lease);
        }
    }

    fn revert(&mut self, id: String, reason: RevertReason) {
        self.vouches.reverting(&id);
        self.orders.revert(id, reason);
    }

    /// An order finished: its status to send, if any. An apply that finished after its fault
    /// was withdrawn is reverted at once.
    fn finished(&mut self, d: Done) -> Option<pb::FaultStatus> {
        let id = d.status.fault_id.clone();
        match d.op {
            Op::Apply => {
                let applied = d.status.state == pb::FaultState::Applied as i32;
                if applied && !self.vouches.holds(&id, Instant::now()) {
                    metrics::unvouched(&id);
                    self.revert(id, RevertReason::Unvouched);
                }
            }
            Op::Revert => {
                let gone = d.status.state == pb::FaultState::Reverted as i32;
                self.vouches.revert_ended(&id, gone);
            }
        }
        Some(d.status)
    }

    async fn on_lapse(&mut self) {
        metrics::lease_lapsed(self.lease_ms);
        self.vouches.lapsed();
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

    /// The Hello for a new session, numbered like telemetry, and its send time: the coordinator
    /// names it in what it sends before it hears telemetry, and the Welcome's lease counts
    /// from that time.
    fn hello(&mut self) -> (pb::Hello, Instant) {
        let (sequence, sent) = self.number();
        let hello = pb::Hello {
            sequence,
            node_name: self.ctx.node_name.to_string(),
            labels: self.ctx.labels.0.clone().into_iter().collect(),
            capabilities: self.ctx.manager.capabilities(),
            version: faultline_core::VERSION.to_string(),
            held_faults: self.ctx.manager.held(),
            lease_while_holding: true,
        };
        (hello, sent)
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
        // A lease counts from the telemetry a renewal answers: send at least three a lease.
        let every = self.ctx.telemetry_interval;
        let third = Duration::from_millis(self.lease_ms / 3).max(Duration::from_millis(100));
        if every > third {
            tracing::warn!(
                "--telemetry-interval {every:?} is more than a third of the coordinator's lease ({} ms): sending telemetry every {third:?} in this session, since the lease counts from the telemetry a renewal answers",
                self.lease_ms
            );
        }
        let every = every.min(third);
        let mut tick = tokio::time::interval_at(Instant::now(), every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.renew_at = self.next_renewal();
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return End::Cancelled,
                _ = renew::until(self.renew_at) => {
                    if let Err(e) = self.request_certificate(&tx).await {
                        return End::Broken(e);
                    }
                }
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => self.handle(m),
                    Some(Err(status)) => return End::Broken(SessionError::from_status(status)),
                    None => return End::Broken(SessionError::Closed),
                },
                _ = self.lease.lapsed() => {
                    if self.lease.check_lapse(Instant::now()) {
                        if self.present().is_empty() {
                            // Idle rule: nothing to guard, so nothing lapses; the session goes
                            // on and the next ApplyFault arms the lease again.
                            tracing::debug!("lease ran out with no fault held; idle until the next order");
                        } else {
                            self.on_lapse().await;
                            return End::Lapsed;
                        }
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
                Some(d) = self.done.recv() => {
                    let op = match d.op { Op::Apply => "apply", Op::Revert => "revert" };
                    if let Some(s) = self.finished(d) {
                        metrics::fault_status(op, &s);
                        if send(&tx, Out::FaultStatus(s.clone())).await.is_err() {
                            self.queue(vec![s]);
                            return End::Broken(SessionError::Closed);
                        }
                    }
                }
                _ = self.vouch_check.tick() => self.check_vouches(),
            }
        }
    }

    /// One message from the coordinator; fault orders start here and report through `done`.
    fn handle(&mut self, msg: pb::CoordinatorMessage) {
        match msg.msg {
            Some(In::Lease(renewal)) => {
                if renewal.lease_ms > 0 {
                    self.lease_ms = renewal.lease_ms;
                }
                // Anchor rule: from when the telemetry it answers was sent (now, from a
                // coordinator that names none); nothing from one naming telemetry long gone.
                let until = self
                    .anchor(renewal.telemetry_sequence)
                    .map(|at| at + Duration::from_millis(self.lease_ms));
                if let Some(until) = until {
                    self.extend_lease(until);
                }
                metrics::lease_renewed(renewal.sequence, self.lease_ms);
                self.ctx.status.send_modify(|s| s.lease_renewals += 1);
                self.vouched(&renewal.vouched_fault_ids, until);
            }
            Some(In::Apply(req)) => {
                let now = Instant::now();
                let lease = Duration::from_millis(self.lease_ms);
                // Anchor rule: an order from telemetry sent a lease or more ago may have waited
                // out a partition after the coordinator gave the target up; one naming no
                // telemetry (an older coordinator, or none heard yet) stands only under the
                // lease in force, and does not extend it.
                // The lease it holds, and how long it vouches for its fault.
                let granted = match req.telemetry_sequence {
                    0 => self
                        .lease
                        .deadline()
                        .filter(|d| *d > now)
                        .map(|d| (d, now + lease)),
                    seq => self
                        .anchor(seq)
                        .map(|at| at + lease)
                        .filter(|until| *until > now)
                        .map(|until| (until, until)),
                };
                let Some((until, vouched)) = granted else {
                    let why = format!(
                        "refused: the order names telemetry {} and this agent's lease ({} ms) does not cover it; it may have waited out a partition after the coordinator gave this target up",
                        req.telemetry_sequence, self.lease_ms
                    );
                    tracing::warn!(fault_id = %req.fault_id, "{why}");
                    self.orders.refuse(req, why);
                    return;
                };
                // The order holds the lease (idle rule) and vouches for its fault until then;
                // the kernel-side bound moves before the apply can read it.
                self.extend_lease(until);
                self.vouches.ordered(&req.fault_id, vouched);
                self.orders.apply(req, now);
            }
            Some(In::Revert(r)) => {
                let reason = coordinator_reason(r.reason);
                self.revert(r.fault_id, reason);
            }
            Some(In::RevertAll(r)) => {
                let reason = coordinator_reason(r.reason);
                tracing::warn!(
                    reason = crate::faults::reason_label(reason),
                    message = %r.message,
                    "coordinator ordered every fault reverted: {}",
                    r.message
                );
                for id in self.present() {
                    self.vouches.withdraw(&id);
                    self.revert(id, reason);
                }
            }
            Some(In::Welcome(w)) => {
                tracing::warn!(session_id = %w.session_id, "ignoring a second Welcome in one session");
            }
            Some(In::Certificate(issued)) => self.certificate_issued(issued),
            None => tracing::debug!("ignoring an empty coordinator message"),
        }
    }

    /// When the Hello or telemetry numbered `seq` was sent: the instant a renewal or order
    /// naming it counts its lease from. `0` (a coordinator that names none) counts from now;
    /// a number no longer kept (or never sent) counts from nothing.
    fn anchor(&self, seq: u64) -> Option<Instant> {
        if seq == 0 {
            return Some(Instant::now());
        }
        self.sent
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, at)| *at)
    }

    /// The next number for a Hello or telemetry message and its send time (now), recorded for
    /// the anchor rule; times older than two leases are forgotten once more than
    /// [`SENT_KEPT`] are kept.
    fn number(&mut self) -> (u64, Instant) {
        let now = Instant::now();
        let keep = Duration::from_millis(self.lease_ms.max(1000)) * 2;
        while self.sent.len() >= SENT_KEPT
            && self
                .sent
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) > keep)
        {
            self.sent.pop_front();
        }
        self.telemetry_seq += 1;
        self.sent.push_back((self.telemetry_seq, now));
        (self.telemetry_seq, now)
    }

    /// The lease runs until at least `until` (never shortened), and the kernel-side bound with
    /// it, in force for faults applied from now on before this returns.
    fn extend_lease(&mut self, until: Instant) {
        let now = Instant::now();
        let until = match self.lease.deadline() {
            Some(d) if d > until && d > now => d,
            _ => until,
        };
        self.lease.renew(now, until.saturating_duration_since(now));
        self.ctx
            .manager
            .lease_renewed(std::time::SystemTime::now() + until.saturating_duration_since(now));
    }

    /// When the certificate is due for renewal, if there is one to renew.
    fn next_renewal(&self) -> Option<Instant> {
        let due = self.ctx.renewer.as_ref()?.due()?;
        Some(renew::instant_of(due))
    }

    /// Sends a CSR for a new key; asks again after a while if no usable answer comes.
    async fn request_certificate(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let Some(renewer) = self.ctx.renewer.clone() else {
            self.renew_at = None;
            return Ok(());
        };
        self.renew_at = Some(Instant::now() + renewer.retry_after());
        match renewer.request() {
            Ok(csr_der) => {
                tracing::info!("asking the coordinator for a new certificate");
                send(tx, Out::RenewCertificate(pb::RenewCertificate { csr_der })).await
            }
            Err(e) => {
                tracing::warn!("cannot make a key for the certificate renewal: {e}");
                Ok(())
            }
        }
    }

    fn certificate_issued(&mut self, issued: pb::CertificateIssued) {
        let Some(renewer) = self.ctx.renewer.clone() else {
            tracing::warn!("ignoring a certificate this agent did not ask for");
            return;
        };
        match renewer.answer(issued) {
            Ok(_) => self.renew_at = self.next_renewal(),
            Err(e) => tracing::warn!(
                "certificate renewal failed: {e}; asking again in {:?}",
                renewer.retry_after()
            ),
        }
    }

    async fn send_telemetry(
        &mut self,
        tx: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        // Held or being applied: the coordinator keeps renewing while this is not zero, so a
        // slow apply whose vouch was withdrawn never loses the lease under a live coordinator.
        let active = u32::try_from(self.present().len()).unwrap_or(u32::MAX);
        match self.sampler.sample(active) {
            Ok(mut t) => {
                // Recorded before it goes out: an answer can come before `send` returns.
                t.sequence = self.number().0;
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
#[cfg(test)]
mod tests_vouch;
