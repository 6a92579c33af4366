//! Experiments in the coordinator: the `Experiments` gRPC service, planning against the live
//! registry and policy, the run of each experiment (dispatch over the standing agent sessions,
//! guards, reverts, results), and the table of what runs now.
//!
//! - [`service`]: the gRPC edge (authorization, audit, one conversion of errors to `Status`).
//! - [`ops`]: create, start, abort, halt and shutdown, serialized by one planning lock.
//! - [`run`]: one task per running experiment; [`guards`] evaluates its guards.
//! - [`record`], [`convert`], [`report`]: the stored record, its wire form and its reports.

mod convert;
mod events;
mod guards;
pub mod ops;
mod plan_record;
mod planning;
mod probe;
pub mod record;
pub(crate) mod report;
pub mod run;
pub mod service;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_core::experiment::Phase;
use faultline_proto::pb;
use tokio::sync::{mpsc, watch as tokio_watch};

pub use events::{describe as describe_metrics, SECONDS_BUCKETS};
use record::ExperimentRecord;
pub use run::Trigger;

use crate::store::{Store, StoreError};

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
    pub status: mpsc::UnboundedSender<run::FromAgent>,
    pub snapshot: tokio_watch::Receiver<Snapshot>,
    /// The agents it targets (under fault until the run is over).
    pub agents: Vec<String>,
    /// The UIDs of the pods it targets (pod experiments).
    pub pods: Vec<String>,
    /// The ids of the faults it dispatches.
    pub fault_ids: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, Live>,
    /// Fault id -> experiment name, for statuses that do not name their experiment (an agent
    /// acknowledging a RevertFault for a fault it never applied).
    faults: HashMap<String, String>,
    /// The phase of every experiment known, by name.
    phases: BTreeMap<String, Phase>,
}

/// Every experiment's phase, and the running ones' handles.
#[derive(Debug, Default)]
pub struct Table {
    inner: Mutex<Inner>,
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
    pub fn recover(&self, store: &dyn Store) -> Result<Vec<ExperimentRecord>, StoreError> {
        let mut running = Vec::new();
        for mut rec in store.experiments()? {
            if rec.phase == Phase::Running {
                running.push(rec);
                continue;
            } else if rec.phase.is_terminal() && !rec.settled() {
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
                    store.put_experiment(&rec)?;
                }
            }
            self.lock().phases.insert(rec.name.clone(), rec.phase);
        }
        self.publish_phases();
        Ok(running)
    }

    fn publish_phases(&self) {
        let mut counts: BTreeMap<Phase, usize> = BTreeMap::new();
        for p in self.lock().phases.values() {
            *counts.entry(*p).or_default() += 1;
        }
        events::phases(&counts);
    }

    pub fn set_phase(&self, name: &str, phase: Phase) {
        self.lock().phases.insert(name.to_string(), phase);
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
        for id in &live.fault_ids {
            inner.faults.insert(id.clone(), name.to_string());
        }
        inner.live.insert(name.to_string(), live);
    }

    pub fn remove_live(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(live) = inner.live.remove(name) {
            for id in &live.fault_ids {
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
            let _ = live.status.send(run::FromAgent::Back {
                node: node.to_string(),
                held: held.iter().map(|(f, _)| f.clone()).collect(),
                at,
            });
        }
    }

    /// Hands a fault status from `node`'s session to the experiment it belongs to. Statuses
    /// of experiments no longer running (late revert acks) update the stored record.
    pub fn route(&self, store: &dyn Store, node: &str, status: pb::FaultStatus) {
        let sent = {
            let inner = self.lock();
            let live = inner.live.get(&status.experiment_id).or_else(|| {
                let name = inner.faults.get(&status.fault_id)?;
                inner.live.get(name)
            });
            live.map(|l| {
                l.status
                    .send(run::FromAgent::Status(node.to_string(), status.clone()))
                    .is_ok()
            })
        };
        if sent == Some(true) || status.experiment_id.is_empty() {
            return;
        }
        if let Err(e) = run::late_status(store, node, &status) {
            tracing::warn!(
                node,
                experiment = %status.experiment_id,
                "could not record a late fault status: {e}"
            );
        }
    }
}
