//! Reverting: one fault, all of them, and the journal bookkeeping around it (a failed revert
//! stays journaled as revert_failed and is retried).

use std::sync::Arc;
use std::time::Instant as StdInstant;

use faultline_proto::pb;

use super::driver::RevertOutcome;
use super::journal::{Entry, EntryState};
use super::ops::{call, with_counters, Failure};
use super::Inner;
use crate::faults::{reason_label, status, RevertReason};
use crate::metrics;

/// The revert reason stored in the journal (a label) back as the wire enum.
pub(super) fn reason_from_label(label: &str) -> RevertReason {
    faultline_proto::convert::revert_reason_from_name(label)
}

impl Inner {
    /// Journals a failed revert (state revert_failed) so it is retried, here and after a restart.
    pub(super) async fn mark_failed(
        self: &Arc<Self>,
        entry: &mut Entry,
        label: &str,
        error: String,
    ) {
        entry.state = EntryState::RevertFailed;
        entry.last_error = error.clone();
        if entry.revert_reason.is_none() {
            entry.revert_reason = Some(label.to_string());
        }
        if let Err(e) = self.put(entry).await {
            tracing::error!("{e}; the fault stays known in memory and is retried");
        }
        if let Some(h) = self.faults().get_mut(&entry.fault_id) {
            h.entry = entry.clone();
            h.watch = None;
        }
        metrics::fault_revert_failed(&entry.kind, &entry.fault_id, &error);
    }

    pub(super) async fn revert(
        self: &Arc<Self>,
        fault_id: &str,
        reason: RevertReason,
    ) -> pb::FaultStatus {
        let _op = self.locks.fault(fault_id).await;
        self.revert_locked(fault_id, reason, reason_label(reason))
            .await
    }

    /// Reverts one fault; the caller holds its lock. `label` is the reason in metrics and the journal.
    pub(super) async fn revert_locked(
        self: &Arc<Self>,
        fault_id: &str,
        reason: RevertReason,
        label: &str,
    ) -> pb::FaultStatus {
        let found = self.faults().get(fault_id).map(|h| {
            if let Some(w) = &h.watch {
                w.cancel();
            }
            (h.entry.clone(), h.counters.clone())
        });
        let Some((mut entry, counters)) = found else {
            // Reverted a moment ago (e.g. at its deadline, while the coordinator's order was on
            // its way): the same answer again, not a new event.
            if let Some(earlier) = self.recent_revert(fault_id) {
                return earlier;
            }
            return status(
                fault_id.to_string(),
                String::new(),
                pb::FaultState::Reverted,
                reason,
                "already gone".into(),
            );
        };
        let started = StdInstant::now();
        let out = match self.driver_for(&entry.kind) {
            Some(d) => {
                let r = entry.recipe.clone();
                call("revert", self.driver_timeout, move || d.revert(&r)).await
            }
            None => Err(Failure::Error(format!("no driver for kind {}", entry.kind))),
        };
        let outcome = match out {
            Ok(o) => o,
            Err(f) => {
                let error = format!(
                    "revert failed: {}; the fault stays in the journal and is retried every {:?}",
                    f.text(),
                    self.retry_every
                );
                self.mark_failed(&mut entry, label, f.text().to_string())
                    .await;
                self.update_active(&entry.kind);
                let s = status(
                    entry.fault_id,
                    entry.experiment_id,
                    pb::FaultState::Failed,
                    reason,
                    error,
                );
                return with_counters(s, &counters);
            }
        };
        let mut warning = String::new();
        match self.remove(fault_id).await {
            Ok(()) => {
                self.faults().remove(fault_id);
            }
            Err(e) => {
                warning = format!("reverted, but {e}; retried every {:?}", self.retry_every);
                self.mark_failed(&mut entry, label, e.to_string()).await;
            }
        }
        self.update_active(&entry.kind);
        metrics::fault_reverted(
            &entry.kind,
            fault_id,
            label,
            outcome == RevertOutcome::AlreadyGone,
            started.elapsed(),
        );
        let s = status(
            entry.fault_id,
            entry.experiment_id,
            pb::FaultState::Reverted,
            reason,
            warning,
        );
        let s = with_counters(s, &counters);
        self.remember_revert(&s);
        s
    }

    /// Reverts every fault, all at once (each under its own lock, so one slow revert does not
    /// hold up the others).
    pub(super) async fn revert_all(self: &Arc<Self>, reason: RevertReason) -> Vec<pb::FaultStatus> {
        let ids: Vec<String> = self.faults().keys().cloned().collect();
        let reverts = ids.iter().map(|id| async move {
            let _op = self.locks.fault(id).await;
            self.revert_locked(id, reason, reason_label(reason)).await
        });
        futures::future::join_all(reverts).await
    }

    pub(super) fn update_active(&self, kind: &str) {
        let n = self
            .faults()
            .values()
            .filter(|h| h.entry.kind == kind && h.entry.state != EntryState::Planned)
            .count();
        metrics::faults_active(kind, n);
    }

    /// Sends an unsolicited status to whoever listens (the session or the standalone runner).
    pub(super) fn emit(&self, s: pb::FaultStatus) {
        use tokio::sync::mpsc::error::TrySendError;
        match self.events_tx.try_send(s) {
            Ok(()) => {}
            Err(TrySendError::Full(s)) => tracing::warn!(
                "status queue full: dropped the status of fault {} (state {})",
                s.fault_id,
                s.state
            ),
            Err(TrySendError::Closed(_)) => {}
        }
    }

    pub(super) async fn put(self: &Arc<Self>, entry: &Entry) -> Result<(), super::JournalError> {
        let inner = self.clone();
        let entry = entry.clone();
        let id = entry.fault_id.clone();
        tokio::task::spawn_blocking(move || inner.journal.put(&entry))
            .await
            .unwrap_or_else(|e| {
                Err(super::JournalError::Write {
                    fault_id: id,
                    message: e.to_string(),
                })
            })
    }

    pub(super) async fn remove(
        self: &Arc<Self>,
        fault_id: &str,
    ) -> Result<(), super::JournalError> {
        let inner = self.clone();
        let id = fault_id.to_string();
        tokio::task::spawn_blocking(move || inner.journal.remove(&id))
            .await
            .unwrap_or_else(|e| {
                Err(super::JournalError::Write {
                    fault_id: fault_id.to_string(),
                    message: e.to_string(),
                })
            })
    }
}
