//! The fault engine: the crash-safe lifecycle of every fault on this node (limits, plan, journal,
//! apply, deadline, health, revert, retry, start-up recovery) over a set of [`Driver`]s.
//!
//! Lifecycle of one fault (DESIGN.md "Fault lifecycle in the agent"):
//! 1. `apply`: the wire spec is validated, the local [`Limits`] checked, and nothing has changed
//!    yet when either refuses. The driver plans a recipe, the recipe is journaled (flushed), and
//!    only then does the driver apply it; the completed recipe is journaled again.
//! 2. While applied, a watch task reverts the fault at its deadline and polls its health.
//! 3. `revert`: the driver reverts; the journal entry is removed only after a successful revert.
//!    A failed revert stays journaled and is retried every few seconds, by the next `revert_all`,
//!    and at the next start.
//! 4. Start-up (`revert_all(RECOVERY)`): every journal entry is reverted, then every driver
//!    sweeps for owned artifacts that no remaining entry names.
//!
//! Every mutation of a fault runs under that fault's lock ([`locks`]), so a deadline and an
//! order from the coordinator never revert the same fault twice, while different faults never
//! wait for each other. Every driver call has a time limit ([`EngineConfig::driver_timeout`]):
//! a call that overruns counts as failed, and an apply that finishes late is reverted again.

pub mod driver;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod journal;
pub mod limits;
mod locks;
mod ops;
mod recovery;
mod renewer;
mod revert;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_core::fault::FaultKind;
use faultline_proto::pb;
use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
pub use journal::{Entry, EntryState, Journal, JournalError};
pub use limits::Limits;

use crate::faults::{FaultManager, RevertReason};
use journal::Unreadable;

/// How often the health of each applied fault is polled.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// How often failed reverts are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How long one driver call (plan, apply, revert, health, sweep) may take.
pub const DRIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsolicited statuses buffered for the session (or the standalone runner).
pub const EVENTS_CAPACITY: usize = 1024;

/// How many finished reverts the engine remembers for repeated revert orders.
const RECENT_REVERTS: usize = 1024;

/// What the engine needs besides its drivers.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The journal's sled directory, `<state-dir>/journal`.
    pub journal_dir: PathBuf,
    pub limits: Limits,
    pub health_every: Duration,
    pub retry_every: Duration,
    /// How long one driver call may take before it counts as failed.
    pub driver_timeout: Duration,
    /// The lease the network drivers' kernel-side deadlines follow (none in standalone mode).
    pub lease: Option<crate::lease::KernelLease>,
}

impl EngineConfig {
    pub fn new(journal_dir: PathBuf, limits: Limits) -> Self {
        EngineConfig {
            journal_dir,
            limits,
            health_every: HEALTH_EVERY,
            retry_every: RETRY_EVERY,
            driver_timeout: DRIVER_TIMEOUT,
            lease: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What start-up recovery found and did.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// One status per journal entry: REVERTED (reason RECOVERY), or FAILED when the revert
    /// failed (the entry stays journaled and is retried).
    pub statuses: Vec<pb::FaultStatus>,
    /// Human lines, one per artifact: `recovery: reverted fault X (cpu)`, `sweep: ...`.
    pub lines: Vec<String>,
}

impl Recovery {
    /// True when the journal was empty and the sweep found nothing.
    pub fn found_nothing(&self) -> bool {
        self.lines.is_empty()
    }
}

/// One fault the engine holds (for progress displays and operators).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultView {
    pub fault_id: String,
    pub experiment_id: String,
    pub kind: String,
    pub state: EntryState,
    pub applied_unix_ms: i64,
    pub deadline_unix_ms: i64,
    /// The latest counters from the driver's health report.
    pub counters: Vec<(String, u64)>,
    pub last_error: String,
}

/// A journaled fault as the engine tracks it in memory (the journal is the truth on disk).
struct Held {
    entry: Entry,
    spec: Option<pb::FaultSpec>,
    /// Cancels the deadline/health task of this fault.
    watch: Option<CancellationToken>,
    counters: Vec<(String, u64)>,
    /// The fault's end on this process's monotonic clock (none for entries of an earlier run).
    until: Option<tokio::time::Instant>,
}

impl Held {
    fn from_entry(entry: Entry) -> Self {
        let spec = pb::FaultSpec::decode(entry.spec.as_slice()).ok();
        Held {
            entry,
            spec,
            watch: None,
            counters: Vec::new(),
            until: None,
        }
    }

    fn view(&self) -> FaultView {
        let e = &self.entry;
        FaultView {
            fault_id: e.fault_id.clone(),
            experiment_id: e.experiment_id.clone(),
            kind: e.kind.clone(),
            state: e.state,
            applied_unix_ms: e.applied_unix_ms,
            deadline_unix_ms: e.deadline_unix_ms,
            counters: self.counters.clone(),
            last_error: e.last_error.clone(),
        }
    }
}

pub(crate) struct Inner {
    drivers: Vec<Arc<dyn Driver>>,
    capabilities: Vec<String>,
    /// Kinds with a driver that cannot work here, and why.
    unavailable: BTreeMap<FaultKind, String>,
    journal: Journal,
    limits: Limits,
    health_every: Duration,
    retry_every: Duration,
    driver_timeout: Duration,
    faults: Mutex<BTreeMap<String, Held>>,
    /// Applies past the limits check that are not in `faults` yet (counted against max_faults).
    applying: Mutex<usize>,
    /// Applies kernel-side lease renewals on a thread of its own (none in standalone mode).
    renewer: Option<renewer::Renewer>,
    /// The statuses of the latest reverts, so reverting a fault again (the coordinator's order
    /// crossing the agent's own deadline revert) answers with the same status.
    recent: Mutex<std::collections::VecDeque<pb::FaultStatus>>,
    /// Journal entries that could not be decoded; removed by the next recovery.
    unreadable: Mutex<Vec<Unreadable>>,
    /// Serializes the mutations of each fault (apply, revert, deadline, health, retry), and
    /// recovery against all of them.
    locks: locks::Locks,
    events_tx: mpsc::Sender<pb::FaultStatus>,
    events_rx: Mutex<Option<mpsc::Receiver<pb::FaultStatus>>>,
    cancel: CancellationToken,
}

impl Inner {
    fn faults(&self) -> MutexGuard<'_, BTreeMap<String, Held>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a finished revert (the latest RECENT_REVERTS of them).
    fn remember_revert(&self, s: &pb::FaultStatus) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|r| r.fault_id != s.fault_id);
        if recent.len() >= RECENT_REVERTS {
            recent.pop_front();
        }
        recent.push_back(s.clone());
    }

    /// The status of an earlier revert of `fault_id`, if it is recent.
    fn recent_revert(&self, fault_id: &str) -> Option<pb::FaultStatus> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .find(|r| r.fault_id == fault_id)
            .cloned()
    }

    fn driver_for(&self, kind: &str) -> Option<Arc<dyn Driver>> {
        let kind: FaultKind = kind.parse().ok()?;
        self.drivers
            .iter()
            .find(|d| d.kinds().contains(&kind))
            .cloned()
    }
}

/// The agent's [`FaultManager`]: see the module documentation.
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("journal", &self.inner.journal)
            .field("capabilities", &self.inner.capabilities)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the journal (its entries are held until recovery reverts them), works out the
    /// capabilities, and starts the retry timer. Must be called inside a tokio runtime.
    pub fn open(
        config: EngineConfig,
        drivers: Vec<Arc<dyn Driver>>,
    ) -> Result<Engine, EngineError> {
        let journal = Journal::open(&config.journal_dir)?;
        let (entries, unreadable) = journal.load()?;
        let (capabilities, unavailable) = capabilities(&drivers, &config.limits);
        let faults = entries
            .into_iter()
            .map(|e| (e.fault_id.clone(), Held::from_entry(e)))
            .collect::<BTreeMap<_, _>>();
        if !faults.is_empty() || !unreadable.is_empty() {
            tracing::warn!(
                "journal {} holds {} fault(s) from an earlier run; recovery reverts them",
                config.journal_dir.display(),
                faults.len() + unreadable.len()
            );
        }
        let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
        let inner = Arc::new(Inner {
            drivers,
            capabilities,
            unavailable,
            journal,
            limits: config.limits,
            health_every: config.health_every,
            retry_every: config.retry_every,
            driver_timeout: config.driver_timeout,
            faults: Mutex::new(faults),
            applying: Mutex::new(0),
            renewer: config.lease.map(renewer::Renewer::start),
            recent: Mutex::new(std::collections::VecDeque::new()),
            unreadable: Mutex::new(unreadable),
            locks: locks::Locks::default(),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            cancel: CancellationToken::new(),
        });
        watch::spawn_retry(&inner);
        Ok(Engine { inner })
    }

    /// Stops every timer and waits (up to 5 s) until nothing uses the journal any more, so the
    /// same journal can be opened again at once. Dropping the engine also stops the timers, but
    /// does not wait.
    pub async fn close(self) {
        self.inner.cancel.cancel();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.inner) > 1 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reverts every journal entry (reason RECOVERY), then sweeps for orphans; reports both.
    pub async fn recover(&self) -> Recovery {
        self.inner.recover().await
    }

    /// Every fault the journal holds, in fault-id order.
    pub fn faults(&self) -> Vec<FaultView> {
        self.inner.faults().values().map(Held::view).collect()
    }

    /// The local limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Kinds that have a driver which cannot work on this host, with the reason.
    pub fn unavailable(&self) -> &BTreeMap<FaultKind, String> {
        &self.inner.unavailable
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Stops the retry timer and every deadline/health task; the journal closes once they end.
        self.inner.cancel.cancel();
    }
}

impl FaultManager for Engine {
    fn capabilities(&self) -> Vec<String> {
        self.inner.capabilities.clone()
    }

    fn held(&self) -> Vec<pb::HeldFault> {
        self.inner
            .faults()
            .values()
            .filter(|h| {
                matches!(
                    h.entry.state,
                    EntryState::Applied | EntryState::RevertFailed
                )
            })
            .map(|h| pb::HeldFault {
                fault_id: h.entry.fault_id.clone(),
                experiment_id: h.entry.experiment_id.clone(),
                spec: h.spec.clone(),
                deadline_unix_ms: h.entry.deadline_unix_ms,
                applied_unix_ms: h.entry.applied_unix_ms,
                remaining_ms: h
                    .until
                    .map(|u| u.saturating_duration_since(tokio::time::Instant::now()))
                    .map_or(0, |d| d.as_millis() as u64),
            })
            .collect()
    }

    fn apply(&self, req: pb::ApplyFault) -> BoxFuture<'_, pb::FaultStatus> {
        Box::pin(self.inner.apply(req))
    }

    fn revert(&self, fault_id: String, reason: RevertReason) -> BoxFuture<'_, pb::FaultStatus> {
        Box::pin(async move { self.inner.revert(&fault_id, reason).await })
    }

    fn revert_all(&self, reason: RevertReason) -> BoxFuture<'_, Vec<pb::FaultStatus>> {
        Box::pin(async move {
            if reason == RevertReason::Recovery {
                self.inner.recover().await.statuses
            } else {
                self.inner.revert_all(reason).await
            }
        })
    }

    fn lease_renewed(&self, until: std::time::SystemTime) {
        if let Some(r) = &self.inner.renewer {
            r.renew(until);
        }
    }

    fn take_events(&self) -> Option<mpsc::Receiver<pb::FaultStatus>> {
        self.inner
            .events_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Kinds whose driver is available here and allowed by the limits; logs why others are not.
fn capabilities(
    drivers: &[Arc<dyn Driver>],
    limits: &Limits,
) -> (Vec<String>, BTreeMap<FaultKind, String>) {
    let mut caps = Vec::new();
    let mut unavailable = BTreeMap::new();
    for d in drivers {
        let ok = d.available();
        for kind in d.kinds() {
            match &ok {
                Err(why) => {
                    tracing::warn!("fault kind {kind} is unavailable on this host: {why}");
                    unavailable.insert(*kind, why.clone());
                }
                Ok(()) if !limits.allowed_kinds.contains(kind) => {
                    tracing::info!(
                        "fault kind {kind} is not offered: not in the agent config's allowed_kinds"
                    );
                }
                Ok(()) => caps.push(*kind),
            }
        }
    }
    caps.sort();
    caps.dedup();
    let caps: Vec<String> = caps.iter().map(|k| k.as_str().to_string()).collect();
    tracing::info!("fault kinds offered: {}", caps.join(", "));
    (caps, unavailable)
}

#[cfg(test)]
mod tests;
