//! A fault manager that records every call and keeps applied faults in memory: for tests (ours
//! and the end-to-end ones) and demos. It touches nothing on the host.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use faultline_proto::pb;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{status, FaultManager, RevertReason};

/// One call the manager received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Capabilities,
    Held,
    Apply {
        fault_id: String,
    },
    Revert {
        fault_id: String,
        reason: RevertReason,
    },
    RevertAll {
        reason: RevertReason,
    },
}

impl Call {
    /// True for calls that change what is applied (apply, revert, revert-all).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Call::Apply { .. } | Call::Revert { .. } | Call::RevertAll { .. }
        )
    }
}

#[derive(Default)]
struct State {
    calls: Vec<(Instant, Call)>,
    held: BTreeMap<String, pb::HeldFault>,
    /// How long each apply takes (tokio time).
    apply_delay: std::time::Duration,
    /// When the lease was last renewed ([`FaultManager::lease_renewed`], tokio time) and how
    /// long it then had left on the wall clock.
    renewed: Option<(Instant, std::time::Duration)>,
    /// Each apply's fault and the lease renewal it started under: the kernel-side bound it
    /// would have been given is that renewal's.
    bounds: Vec<(String, Option<(Instant, std::time::Duration)>)>,
}

/// Records calls with the (tokio) time they arrived; `apply` succeeds and holds the fault until
/// it is reverted.
pub struct RecordingManager {
    capabilities: Vec<String>,
    state: Mutex<State>,
    count: watch::Sender<usize>,
}

impl std::fmt::Debug for RecordingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingManager")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl RecordingManager {
    pub fn new(capabilities: &[&str]) -> Self {
        RecordingManager {
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            state: Mutex::new(State::default()),
            count: watch::channel(0).0,
        }
    }

    /// Makes every later apply take `delay` (a slow driver).
    pub fn delay_apply(&self, delay: std::time::Duration) {
        self.lock().apply_delay = delay;
    }

    /// Pretends `fault` was applied before (for example by an earlier session).
    pub fn hold(&self, fault: pb::HeldFault) {
        self.lock().held.insert(fault.fault_id.clone(), fault);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: Call) {
        let n = {
            let mut s = self.lock();
            s.calls.push((Instant::now(), call));
            s.calls.len()
        };
        self.count.send_replace(n);
    }

    /// Every call so far, oldest first, with the time it arrived.
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.lock().calls.clone()
    }

    /// Only apply, revert and revert-all calls, oldest first.
    pub fn mutations(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .map(|(_, c)| c.clone())
            .filter(Call::is_mutation)
            .collect()
    }

    /// The times of every `revert_all(reason)` call.
    pub fn revert_alls(&self, reason: RevertReason) -> Vec<Instant> {
        self.lock()
            .calls
            .iter()
            .filter(|(_, c)| *c == Call::RevertAll { reason })
            .map(|(at, _)| *at)
            .collect()
    }

    /// The lease renewal each apply of `fault_id` started under (when, and how long it had
    /// left), oldest first.
    pub fn renewed_before(&self, fault_id: &str) -> Vec<Option<(Instant, std::time::Duration)>> {
        self.lock()
            .bounds
            .iter()
            .filter(|(id, _)| id == fault_id)
            .map(|(_, at)| *at)
            .collect()
    }

    /// The last lease renewal: when, and how long it had left.
    pub fn last_renewed(&self) -> Option<(Instant, std::time::Duration)> {
        self.lock().renewed
    }

    /// Waits until `pred` holds for the recorded calls.
    pub async fn wait_for(&self, pred: impl Fn(&[(Instant, Call)]) -> bool) {
        let mut rx = self.count.subscribe();
        loop {
            if pred(&self.lock().calls) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl FaultManager for RecordingManager {
    fn capabilities(&self) -> Vec<String> {
        self.record(Call::Capabilities);
        self.capabilities.clone()
    }

    fn held(&self) -> Vec<pb::HeldFault> {
        self.record(Call::Held);
        self.lock().held.values().cloned().collect()
    }

    fn apply(&self, req: pb::ApplyFault) -> BoxFuture<'_, pb::FaultStatus> {
        self.record(Call::Apply {
            fault_id: req.fault_id.clone(),
        });
        let out = status(
            req.fault_id.clone(),
            req.experiment_id.clone(),
            pb::FaultState::Applied,
            RevertReason::Unspecified,
            String::new(),
        );
        let held = pb::HeldFault {
            fault_id: req.fault_id.clone(),
            experiment_id: req.experiment_id,
            spec: req.spec,
            deadline_unix_ms: req.deadline_unix_ms,
            applied_unix_ms: out.at_unix_ms,
            remaining_ms: req.remaining_ms,
        };
        let delay = {
            let mut s = self.lock();
            let at = s.renewed;
            s.bounds.push((req.fault_id.clone(), at));
            s.apply_delay
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.lock().held.insert(req.fault_id, held);
            out
        })
    }

    fn revert(&self, fault_id: String, reason: RevertReason) -> BoxFuture<'_, pb::FaultStatus> {
        self.record(Call::Revert {
            fault_id: fault_id.clone(),
            reason,
        });
        let experiment = self
            .lock()
            .held
            .remove(&fault_id)
            .map(|h| h.experiment_id)
            .unwrap_or_default();
        let out = status(
            fault_id,
            experiment,
            pb::FaultState::Reverted,
            reason,
            String::new(),
        );
        Box::pin(async move { out })
    }

    fn lease_renewed(&self, until: std::time::SystemTime) {
        let left = until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        self.lock().renewed = Some((Instant::now(), left));
    }

    fn revert_all(&self, reason: RevertReason) -> BoxFuture<'_, Vec<pb::FaultStatus>> {
        self.record(Call::RevertAll { reason });
        let held = std::mem::take(&mut self.lock().held);
        let out = held
            .into_values()
            .map(|h| {
                status(
                    h.fault_id,
                    h.experiment_id,
                    pb::FaultState::Reverted,
                    reason,
                    String::new(),
                )
            })
            .collect();
        Box::pin(async move { out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_applied_faults_until_reverted() {
        let m = RecordingManager::new(&["test"]);
        assert_eq!(m.capabilities(), ["test"]);
        let s = m
            .apply(pb::ApplyFault {
                fault_id: "f1".into(),
                experiment_id: "e1".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(s.state, pb::FaultState::Applied as i32);
        m.apply(pb::ApplyFault {
            fault_id: "f2".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(m.held().len(), 2);
        let r = m.revert("f1".into(), RevertReason::Abort).await;
        assert_eq!(
            (r.experiment_id.as_str(), r.reason),
            ("e1", RevertReason::Abort as i32)
        );
        let all = m.revert_all(RevertReason::Lease).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].fault_id, "f2");
        assert_eq!(all[0].reason, RevertReason::Lease as i32);
        assert!(m.held().is_empty());
        assert_eq!(
            m.mutations(),
            vec![
                Call::Apply {
                    fault_id: "f1".into()
                },
                Call::Apply {
                    fault_id: "f2".into()
                },
                Call::Revert {
                    fault_id: "f1".into(),
                    reason: RevertReason::Abort
                },
                Call::RevertAll {
                    reason: RevertReason::Lease
                },
            ]
        );
    }
}
