//! Experiments in the coordinator: the `Experiments` gRPC service, planning against the live
//! registry and policy, the run of each experiment (dispatch over the standing agent sessions,
//! guards, reverts, results), and the table of what runs now.
//!
//! - [`service`]: the gRPC edge (authorization, audit, one conversion of errors to `Status`).
//! - [`ops`]: create, start, abort, halt and shutdown, serialized by one planning lock.
//! - [`run`]: one task per running experiment; [`guards`] evaluates its guards; [`mailbox`] is
//!   its bounded queue of agent statuses, which [`Table::route`] fills only with the statuses of
//!   a fault from the agent that holds it.
//! - [`hypothesis`]: the steady-state checks before injection and the recovery watch after the
//!   revert, as functions any run (experiments, workflows) can call.
//! - [`record`], [`convert`], [`report`]: the stored record, its wire form and its reports.

mod convert;
pub(crate) use convert::hypothesis_to_pb;
mod events;
mod guards;
pub mod hypothesis;
mod kill_record;
pub mod mailbox;
pub mod ops;
mod plan_record;
mod planning;
mod probe;
pub mod record;
pub(crate) mod report;
mod report_steady;
pub mod run;
pub mod service;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_core::experiment::Phase;
use faultline_proto::pb;
use tokio::sync::{mpsc, watch as tokio_watch};

use events::Dropped;
pub use events::{describe as describe_metrics, SECONDS_BUCKETS};
use mailbox::Mailbox;
use record::ExperimentRecord;
pub use run::Trigger;

use crate::state::now_ms;
use crate::store::{StoreError, StoreHandle};

/// Late revert acknowledgements being recorded at once, at most; more are dropped (counted),
/// so that no agent can fill the store's queue with them.
pub const MAX_LATE_STATUSES: usize = 64;

/// The latest state of a running experiment, for Get and Watch.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub record: Arc<ExperimentRecord>,
    /// What just happened.
    pub message: String,
    /// The run is over: terminal phase and every revert settled (or waited for).
    pub finished: bool,
}

/// How to reach a running experiment's task.
#[derive(Debug)]
pub struct Live {
    pub control: mpsc::Sender<run::Control>,
    /// Statuses and Hellos from its agents (bounded; see [`mailbox`]).
    pub status: Arc<Mailbox>,
    pub snapshot: tokio_watch::Receiver<Snapshot>,
    /// The agents it targets (under fault until the run is over).
    pub agents: Vec<String>,
    /// The UIDs of the pods it targets (pod experiments).
    pub pods: Vec<String>,
    /// Each fault it dispatches: (fault id, the agent that holds it).
    pub faults: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, Live>,
    /// Fault id -> (experiment name, the agent that holds it) of every live run: a status is
    /// routed only when it comes from that agent.
    faults: HashMap<String, (String, String)>,
    /// The phase of every experiment known, by name.
    phases: BTreeMap<String, Phase>,
    /// When each ended experiment ended (unix ms), for retention.
    ended: HashMap<String, i64>,
}

/// Every experiment's phase, and the running ones' handles.
#[derive(Debug, Default)]
pub struct Table {
    inner: Mutex<Inner>,
    /// Late revert acknowledgements queued to the store and not yet recorded.
    late_in_flight: Arc<AtomicUsize>,
    /// Held while planning and starting, so two plans never see the same free capacity.
    pub plan_lock: tokio::sync::Mutex<()>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the phases of the stored experiments and returns the ones stored `running`: a
    /// coordinator stopped without ending them, and the caller resumes or ends each
    /// ([`run::resume`]).
    pub async fn recover(&self, store: &StoreHandle) -> Result<Vec<ExperimentRecord>, StoreError> {
        let mut running = Vec::new();
        for mut rec in store.experiments().await? {
            if rec.phase == Phase::Running {
                running.push(rec);
                continue;
            }
            if rec.phase.is_terminal() && hypothesis::pending(rec.hypothesis.as_ref()) {
                // Ended, but the coordinator stopped while it watched the recovery.
                if let Some(h) = rec.hypothesis.as_mut() {
                    h.fail("the coordinator stopped while it watched the recovery");
                }
                store.put_experiment_durable(&rec).await?;
            }
            if rec.phase.is_terminal() && !rec.settled() {
                // Ended, but the coordinator stopped before every revert was acknowledged.
                let mut changed = false;
                for t in rec
                    .targets
                    .iter_mut()
                    .filter(|t| !t.settled() && t.error.is_empty())
                {
                    t.error = "the coordinator stopped before the revert was acknowledged; \
                               nothing vouches for the fault any more, so its agent reverts it \
                               at its next Hello or lease renewal"
                        .into();
                    changed = true;
                }
                if changed {
                    store.put_experiment_durable(&rec).await?;
                }
            }
            let mut inner = self.lock();
            inner.phases.insert(rec.name.clone(), rec.phase);
            if rec.phase.is_terminal() {
                let at = match rec.ended_unix_ms {
                    0 => rec.created_unix_ms,
                    at => at,
                };
                inner.ended.insert(rec.name.clone(), at);
            }
        }
        self.publish_phases();
        Ok(running)
    }

    /// Ended experiments that retention removes: those that ended before `ended_before`
    /// (unix ms), and beyond the newest `keep_at_most`, those that ended first. Never a
    /// pending or running one, nor one whose run is still live.
    pub fn prunable(&self, ended_before: i64, keep_at_most: u64) -> Vec<String> {
        let inner = self.lock();
        let mut ended: Vec<(i64, &String)> = inner
            .ended
            .iter()
            .filter(|(name, _)| !inner.live.contains_key(*name))
            .filter(|(name, _)| inner.phases.get(*name).is_some_and(|p| p.is_terminal()))
            .map(|(name, at)| (*at, name))
            .collect();
        ended.sort();
        let excess = ended
            .len()
            .saturating_sub(usize::try_from(keep_at_most).unwrap_or(usize::MAX));
        ended
            .iter()
            .enumerate()
            .filter(|(i, (at, _))| *i < excess || *at < ended_before)
            .map(|(_, (_, name))| (*name).clone())
            .collect()
    }

    /// Forgets experiments whose records retention removed.
    pub fn forget(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for name in names {
                inner.phases.remove(name);
                inner.ended.remove(name);
            }
        }
        self.publish_phases();
    }

    fn publish_phases(&self) {
        let mut counts: BTreeMap<Phase, usize> = BTreeMap::new();
        for p in self.lock().phases.values() {
            *counts.entry(*p).or_default() += 1;
        }
        events::phases(&counts);
    }

    pub fn set_phase(&self, name: &str, phase: Phase) {
        {
            let mut inner = self.lock();
            inner.phases.insert(name.to_string(), phase);
            if phase.is_terminal() {
                inner.ended.entry(name.to_string()).or_insert_with(now_ms);
            } else {
                inner.ended.remove(name);
            }
        }
        self.publish_phases();
    }

    pub fn phase(&self, name: &str) -> Option<Phase> {
        self.lock().phases.get(name).copied()
    }

    pub fn running_count(&self) -> usize {
        self.lock()
            .phases
            .values()
            .filter(|p| **p == Phase::Running)
            .count()
    }

    /// Agents targeted by runs that are not over.
    pub fn under_fault(&self) -> BTreeSet<String> {
        self.lock()
            .live
            .values()
            .flat_map(|l| l.agents.iter().cloned())
            .collect()
    }

    /// UIDs of the pods targeted by runs that are not over.
    pub fn pods_under_fault(&self) -> BTreeSet<String> {
        self.lock()
            .live
            .values()
            .flat_map(|l| l.pods.iter().cloned())
            .collect()
    }

    pub fn insert_live(&self, name: &str, live: Live) {
        let mut inner = self.lock();
        for (id, agent) in &live.faults {
            inner
                .faults
                .insert(id.clone(), (name.to_string(), agent.clone()));
        }
        inner.live.insert(name.to_string(), live);
    }

    pub fn remove_live(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(live) = inner.live.remove(name) {
            for (id, _) in &live.faults {
                inner.faults.remove(id);
            }
        }
    }

    pub fn snapshot(&self, name: &str) -> Option<Snapshot> {
        self.lock()
            .live
            .get(name)
            .map(|l| l.snapshot.borrow().clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<tokio_watch::Receiver<Snapshot>> {
        self.lock().live.get(name).map(|l| l.snapshot.clone())
    }

    pub fn control(&self, name: &str) -> Option<mpsc::Sender<run::Control>> {
        self.lock().live.get(name).map(|l| l.control.clone())
    }

    /// Every live run's name and control channel.
    pub fn controls(&self) -> Vec<(String, mpsc::Sender<run::Control>)> {
        let mut v: Vec<_> = self
            .lock()
            .live
            .iter()
            .map(|(n, l)| (n.clone(), l.control.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Messages waiting in the queue of run `name`.
    #[cfg(test)]
    pub fn queued(&self, name: &str) -> Option<usize> {
        self.lock().live.get(name).map(|l| l.status.len())
    }

    pub fn live_names(&self) -> Vec<String> {
        self.lock().live.keys().cloned().collect()
    }

    /// `node` opened a new session holding `held` (fault id, experiment id): every running
    /// experiment that targets it hears of it, to adopt what it owns and to notice what is gone.
    pub fn agent_back(&self, node: &str, held: &[(String, String)], at: i64) {
        let inner = self.lock();
        for live in inner
            .live
            .values()
            .filter(|l| l.agents.iter().any(|a| a == node))
        {
            live.status.push(run::FromAgent::Back {
                node: node.to_string(),
                held: held.iter().map(|(f, _)| f.clone()).collect(),
                at,
            });
        }
    }

    /// Hands a fault status from `node`'s session to the experiment it belongs to; never
    /// waits. Only the agent that holds a fault may report on it: a status for a live run's
    /// fault from any other agent is dropped here (counted), so it cannot take room in the
    /// run's queue. A late revert acknowledgement (its run is over) updates the stored record,
    /// on the store thread.
    pub fn route(&self, store: &StoreHandle, node: &str, status: pb::FaultStatus) {
        enum To {
            Run(Arc<Mailbox>),
            Foreign,
            Late,
            Nowhere,
        }
        let to = {
            let inner = self.lock();
            match inner.faults.get(&status.fault_id) {
                Some((name, agent)) if agent == node => inner
                    .live
                    .get(name)
                    .map_or(To::Nowhere, |l| To::Run(l.status.clone())),
                Some(_) => To::Foreign,
                None => {
                    let ended = inner
                        .phases
                        .get(&status.experiment_id)
                        .is_some_and(|p| *p != Phase::Running);
                    if ended && status.state == pb::FaultState::Reverted as i32 {
                        To::Late
                    } else {
                        To::Nowhere
                    }
                }
            }
        };
        match to {
            To::Run(mailbox) => mailbox.push(run::FromAgent::Status(node.to_string(), status)),
            To::Foreign => events::status_dropped(node, &status.fault_id, Dropped::Foreign),
            To::Late => self.record_late(store, node, status),
            To::Nowhere => {}
        }
    }

    fn record_late(&self, store: &StoreHandle, node: &str, status: pb::FaultStatus) {
        let Some(slot) = LateSlot::take(&self.late_in_flight) else {
            events::status_dropped(node, &status.fault_id, Dropped::LateBusy);
            return;
        };
        let node = node.to_string();
        let queued = store.queue_write("late fault status", move |s| {
            let _slot = slot;
            run::late_status(s, &node, &status).inspect_err(|e| {
                tracing::warn!(
                    node,
                    experiment = %status.experiment_id,
                    "could not record a late fault status: {e}"
                )
            })
        });
        if let Err(e) = queued {
            tracing::warn!("could not queue a late fault status: {e}");
        }
    }
}

/// One of the [`MAX_LATE_STATUSES`] places; given back when dropped (recorded or not).
struct LateSlot(Arc<AtomicUsize>);

impl LateSlot {
    fn take(in_flight: &Arc<AtomicUsize>) -> Option<LateSlot> {
        let taken = in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_LATE_STATUSES).then_some(n + 1)
        });
        taken.ok().map(|_| LateSlot(in_flight.clone()))
    }
}

impl Drop for LateSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod route_tests;
