//! What the simulated agents share with the benchmark driver: session counters and, per
//! experiment, when the agents answered ApplyFault and RevertFault.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_proto::pb;
use tokio::sync::Notify;

use crate::SimError;

/// When the simulated agents answered, for one experiment.
#[derive(Debug, Clone, Default)]
pub struct Acks {
    pub applied: usize,
    pub reverted: usize,
    pub last_applied: Option<Instant>,
    pub last_reverted: Option<Instant>,
    pub last_reverted_unix_ms: i64,
}

/// State shared by every simulated agent and the driver.
#[derive(Default)]
pub struct Shared {
    pub connected: AtomicUsize,
    pub sessions_opened: AtomicU64,
    pub session_errors: AtomicU64,
    pub telemetry_sent: AtomicU64,
    pub leases: AtomicU64,
    acks: Mutex<HashMap<String, Acks>>,
    last_error: Mutex<Option<String>>,
    pub changed: Notify,
}

impl Shared {
    /// The answers recorded under any of `keys` (the experiment's id and its name: whichever
    /// the coordinator puts in ApplyFault.experiment_id), merged.
    pub fn acks(&self, keys: &[&str]) -> Acks {
        let all = self.lock_acks();
        let mut out = Acks::default();
        let mut seen: Vec<&str> = Vec::new();
        for key in keys.iter().filter(|k| !k.is_empty()) {
            if seen.contains(key) {
                continue;
            }
            seen.push(key);
            if let Some(a) = all.get(*key) {
                out.applied += a.applied;
                out.reverted += a.reverted;
                out.last_applied = out.last_applied.max(a.last_applied);
                out.last_reverted = out.last_reverted.max(a.last_reverted);
                out.last_reverted_unix_ms = out.last_reverted_unix_ms.max(a.last_reverted_unix_ms);
            }
        }
        out
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_error(&self, text: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Acks>> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that an agent answered `state` for a fault of `experiment_id`, now.
    pub fn record(&self, experiment_id: &str, state: pb::FaultState) {
        let now = Instant::now();
        {
            let mut acks = self.lock_acks();
            let a = acks.entry(experiment_id.to_string()).or_default();
            match state {
                pb::FaultState::Applied => {
                    a.applied += 1;
                    a.last_applied = Some(now);
                }
                _ => {
                    a.reverted += 1;
                    a.last_reverted = Some(now);
                    a.last_reverted_unix_ms = unix_ms();
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until `done(acks)` holds for the experiment known by `keys`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        keys: &[&str],
        timeout: Duration,
        done: impl Fn(&Acks) -> bool,
    ) -> Result<Acks, SimError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let experiment_id = keys.join("/");
        loop {
            let notified = self.changed.notified();
            let acks = self.acks(keys);
            if done(&acks) {
                return Ok(acks);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SimError(format!(
                    "experiment {experiment_id}: timed out after {timeout:?}; the agents \
                     acknowledged {} apply(s) and {} revert(s)",
                    acks.applied, acks.reverted
                )));
            }
        }
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
