//! The engine's timers: one task per applied fault (its deadline and its health poll) and one
//! engine-wide task that retries failed reverts. Tasks hold only a weak reference to the engine
//! and stop when it is dropped.

use std::sync::{Arc, Weak};

use faultline_proto::pb;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::driver::Health;
use super::journal::EntryState;
use super::ops::call;
use super::revert::reason_from_label;
use super::Inner;
use crate::faults::{status, RevertReason};
use crate::metrics;

/// Starts the deadline/health task of an applied fault; cancel the token to stop it.
pub(super) fn spawn_watch(
    inner: &Arc<Inner>,
    fault_id: String,
    deadline: Instant,
) -> CancellationToken {
    let token = inner.cancel.child_token();
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let every = inner.health_every;
    let mine = token.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = mine.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(inner) = weak.upgrade() {
                        inner.on_deadline(&fault_id, &mine).await;
                    }
                    return;
                }
                _ = tick.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    if let Some(Health::Failed { error, counters }) = inner.poll_health(&fault_id).await {
                        inner.on_health_failed(&fault_id, &mine, error, counters).await;
                        return;
                    }
                }
            }
        }
    });
    token
}

/// Starts the engine-wide retry timer for failed reverts.
pub(super) fn spawn_retry(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let every = inner.retry_every;
    let cancel = inner.cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.retry_failed().await;
                    inner.publish_overdue();
                }
            }
        }
    });
}

impl Inner {
    /// The fault's deadline passed: revert it (reason DEADLINE) and report it.
    pub(super) async fn on_deadline(self: &Arc<Self>, fault_id: &str, token: &CancellationToken) {
        let _op = self.locks.fault(fault_id).await;
        if token.is_cancelled() {
            return;
        }
        let s = self
            .revert_locked(fault_id, RevertReason::Deadline, "deadline")
            .await;
        self.emit(s);
    }

    /// One health poll; `None` when the fault is no longer applied.
    pub(super) async fn poll_health(self: &Arc<Self>, fault_id: &str) -> Option<Health> {
        let (kind, recipe) = {
            let f = self.faults();
            let h = f
                .get(fault_id)
                .filter(|h| h.entry.state == EntryState::Applied)?;
            (h.entry.kind.clone(), h.entry.recipe.clone())
        };
        let d = self.driver_for(&kind)?;
        let health = call("health", self.driver_timeout, move || Ok(d.health(&recipe))).await;
        let health = match health {
            Ok(h) => h,
            Err(f) => {
                tracing::warn!("health of fault {fault_id}: {}", f.text());
                return None;
            }
        };
        if let Health::Ok(counters) = &health {
            if let Some(h) = self.faults().get_mut(fault_id) {
                h.counters = counters.clone();
            }
        }
        Some(health)
    }

    /// The fault stopped working (e.g. OOM-killed): revert the rest and report FAILED.
    pub(super) async fn on_health_failed(
        self: &Arc<Self>,
        fault_id: &str,
        token: &CancellationToken,
        error: String,
        counters: Vec<(String, u64)>,
    ) {
        let _op = self.locks.fault(fault_id).await;
        if token.is_cancelled() {
            return;
        }
        let kind = match self.faults().get_mut(fault_id) {
            Some(h) => {
                for (k, v) in &counters {
                    match h.counters.iter_mut().find(|(hk, _)| hk == k) {
                        Some(slot) => slot.1 = *v,
                        None => h.counters.push((k.clone(), *v)),
                    }
                }
                h.entry.kind.clone()
            }
            None => return,
        };
        metrics::fault_health_failed(&kind, fault_id, &error);
        let reverted = self
            .revert_locked(fault_id, RevertReason::Unspecified, "failed")
            .await;
        let mut text = error;
        if reverted.state != pb::FaultState::Reverted as i32 {
            text = format!("{text}; {}", reverted.error);
        }
        let mut s = status(
            fault_id.to_string(),
            reverted.experiment_id.clone(),
            pb::FaultState::Failed,
            RevertReason::Unspecified,
            text,
        );
        s.counters = reverted.counters;
        for (k, v) in counters {
            s.counters.insert(k, v);
        }
        self.emit(s);
    }

    /// Counts, per kind, the faults still held that should be gone: past their end on the
    /// monotonic clock, or with a failed revert (what `FaultlineFaultPastDeadline` alerts on).
    pub(super) fn publish_overdue(&self) {
        let now = Instant::now();
        let mut overdue: std::collections::BTreeMap<String, usize> = self
            .drivers
            .iter()
            .flat_map(|d| d.kinds().iter().map(|k| (k.as_str().to_string(), 0)))
            .collect();
        for h in self.faults().values() {
            let late = h.entry.state == EntryState::RevertFailed
                || (h.entry.state == EntryState::Applied && h.until.is_some_and(|u| u <= now));
            if late {
                *overdue.entry(h.entry.kind.clone()).or_default() += 1;
            }
        }
        for (kind, n) in overdue {
            metrics::faults_overdue(&kind, n);
        }
    }

    /// Retries every failed revert; a success is reported as REVERTED with the first reason.
    pub(super) async fn retry_failed(self: &Arc<Self>) {
        let failed: Vec<(String, String)> = self
            .faults()
            .values()
            .filter(|h| h.entry.state == EntryState::RevertFailed)
            .map(|h| {
                let label = h
                    .entry
                    .revert_reason
                    .clone()
                    .unwrap_or_else(|| "unspecified".into());
                (h.entry.fault_id.clone(), label)
            })
            .collect();
        for (id, label) in failed {
            tracing::info!("retrying the revert of fault {id}");
            let _op = self.locks.fault(&id).await;
            let still_failed = self
                .faults()
                .get(&id)
                .is_some_and(|h| h.entry.state == EntryState::RevertFailed);
            if !still_failed {
                continue;
            }
            let s = self
                .revert_locked(&id, reason_from_label(&label), &label)
                .await;
            if s.state == pb::FaultState::Reverted as i32 {
                self.emit(s);
            }
        }
    }
}
