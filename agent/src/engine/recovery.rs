//! Start-up recovery: revert every journal entry (reason RECOVERY), then let every driver sweep
//! for artifacts it owns that no remaining entry names (how a lost journal still leaves nothing
//! behind).

use std::sync::Arc;

use faultline_core::fault::FaultKind;
use faultline_proto::pb;

use super::driver::Recipe;
use super::ops::call;
use super::{Inner, Recovery};
use crate::faults::RevertReason;
use crate::metrics;

impl Inner {
    pub(super) async fn recover(self: &Arc<Self>) -> Recovery {
        let _all = self.locks.all().await;
        let mut rec = Recovery::default();
        let unreadable =
            std::mem::take(&mut *self.unreadable.lock().unwrap_or_else(|p| p.into_inner()));
        for u in unreadable {
            let line = match self.remove(&u.key).await {
                Ok(()) => format!(
                    "recovery: journal entry {} is unreadable ({}); removed it, the sweep removes what it named",
                    u.key, u.error
                ),
                Err(e) => format!("recovery: journal entry {} is unreadable ({}): {e}", u.key, u.error),
            };
            metrics::recovery_problem(&line);
            rec.lines.push(line);
        }
        let held: Vec<(String, String)> = self
            .faults()
            .values()
            .map(|h| (h.entry.fault_id.clone(), h.entry.kind.clone()))
            .collect();
        for (id, kind) in held {
            let s = self
                .revert_locked(&id, RevertReason::Recovery, "recovery")
                .await;
            let line = if s.state == pb::FaultState::Reverted as i32 {
                format!("recovery: reverted fault {id} ({kind})")
            } else {
                let line = format!(
                    "recovery: could not revert fault {id} ({kind}): {}",
                    s.error
                );
                metrics::recovery_problem(&line);
                line
            };
            rec.lines.push(line);
            rec.statuses.push(s);
        }
        for d in self.drivers.clone() {
            let kinds: &'static [FaultKind] = d.kinds();
            let known: Vec<Recipe> = self
                .faults()
                .values()
                .filter(|h| kinds.iter().any(|k| k.as_str() == h.entry.kind))
                .map(|h| h.entry.recipe.clone())
                .collect();
            let lines = call("sweep", self.driver_timeout, move || Ok(d.sweep(&known)))
                .await
                .unwrap_or_else(|f| vec![format!("failed: {}", f.text())]);
            for line in lines {
                metrics::swept(&line);
                rec.lines.push(format!("sweep: {line}"));
            }
        }
        if rec.lines.is_empty() {
            tracing::info!(
                "recovery: nothing to revert (the journal is empty) and the sweep found nothing"
            );
        }
        rec
    }
}
