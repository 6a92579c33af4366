//! The coordinator's side of `pod-kill`: a task beside the run that deletes the planned pods at
//! the start, and with an `interval` re-selects and deletes again (see
//! [`faultline_core::experiment::pod_kill`]) until the run ends; a watch of the selected
//! namespaces sees each deleted pod go and its replacement (a new pod of the same controller)
//! become Ready, which the record shows as the time to recover. The task reports to the run
//! with full snapshots of its records; the run stores them.
//!
//! The task stops deleting as soon as the run ends (deadline, abort, shutdown), then watches
//! for the replacements still missing for at most [`super::REVERT_WAIT`]. A coordinator that
//! restarts mid-run does not start deleting again (its record keeps the kills so far).

use std::collections::{BTreeSet, HashMap};

use faultline_core::experiment::pod_kill::Victim;
use faultline_core::fault::{Fault, PodKillFault};
use metrics::{counter, describe_counter, describe_histogram};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod task;
mod watch;

use super::Run;
use crate::experiments::record::PodKillRecord;
use crate::kube::PodAccess;
use crate::state::now_ms;
use task::Task;

pub const POD_KILLS: &str = "faultline_coordinator_pod_kills_total";
pub const POD_KILL_RECOVER_SECONDS: &str = "faultline_coordinator_pod_kill_recover_seconds";
const OUTCOMES: [&str; 3] = ["deleted", "gone", "failed"];

/// Registers the pod-kill series.
pub fn describe_metrics() {
    describe_counter!(
        POD_KILLS,
        "Pods deleted by pod-kill faults, by outcome (deleted, gone: already gone or replaced, failed)."
    );
    describe_histogram!(
        POD_KILL_RECOVER_SECONDS,
        "Time from a pod-kill's delete until a replacement pod of the same controller was Ready."
    );
    for o in OUTCOMES {
        counter!(POD_KILLS, "outcome" => o).absolute(0);
    }
}

/// What the task tells the run.
#[derive(Debug)]
pub(super) enum Update {
    Records(Vec<PodKillRecord>),
    Log(i64, String),
    /// No more updates will come.
    Done,
}

/// The run's handle on its pod-kill task.
pub(super) struct PodKills {
    pub rx: Option<mpsc::Receiver<Update>>,
    stop: CancellationToken,
    done: bool,
}

impl PodKills {
    pub fn none() -> PodKills {
        PodKills {
            rx: None,
            stop: CancellationToken::new(),
            done: true,
        }
    }

    /// The run ended: stop deleting (idempotent).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The task has nothing more to report.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// The next update, or never when there is no task.
pub(super) async fn next(rx: &mut Option<mpsc::Receiver<Update>>) -> Update {
    match rx {
        Some(r) => r.recv().await.unwrap_or(Update::Done),
        None => std::future::pending().await,
    }
}

impl crate::experiments::Table {
    /// Agents and pod UIDs under fault by the live runs other than `name` (a pod-kill's next
    /// round re-selects as if its own experiment were not holding them).
    pub(super) fn others(&self, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let inner = self.lock();
        let others = inner.live.iter().filter(|(n, _)| n.as_str() != name);
        let mut agents = BTreeSet::new();
        let mut pods = BTreeSet::new();
        for (_, l) in others {
            agents.extend(l.agents.iter().cloned());
            pods.extend(l.pods.iter().cloned());
        }
        (agents, pods)
    }
}

impl Run {
    /// Starts the pod-kill task when the experiment has pod-kill faults.
    pub(super) fn start_pod_kills(&mut self) {
        let faults: Vec<(usize, PodKillFault)> = self
            .spec
            .faults
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match &f.fault {
                Fault::PodKill(k) => Some((i, k.clone())),
                _ => None,
            })
            .collect();
        let (Some(selector), false) = (self.spec.pods.clone(), faults.is_empty()) else {
            return;
        };
        let PodAccess::Cluster(cluster) = self.state.pods.clone() else {
            self.rec.log(
                now_ms(),
                "pod-kill: the coordinator has no Kubernetes access; no pod was deleted",
            );
            return;
        };
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let planned: Vec<Victim> = {
            let mut v: Vec<Victim> = Vec::new();
            for p in self.rec.plan.selected.iter().filter_map(|s| s.pod.as_ref()) {
                if !v.iter().any(|x| x.uid == p.uid) {
                    let node = self
                        .rec
                        .plan
                        .selected
                        .iter()
                        .find(|s| s.pod.as_ref().is_some_and(|q| q.uid == p.uid))
                        .map(|s| s.agent.clone())
                        .unwrap_or_default();
                    v.push(Victim {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                        node,
                    });
                }
            }
            v
        };
        let task = Task {
            state: self.state.clone(),
            cluster,
            spec: self.spec.clone(),
            selector,
            faults,
            planned,
            tx,
            stop: stop.clone(),
            deadline: self.deadline,
            kills: Vec::new(),
            pending: HashMap::new(),
            assigned: BTreeSet::new(),
        };
        tokio::spawn(task.run());
        self.pod_kills = PodKills {
            rx: Some(rx),
            stop,
            done: false,
        };
    }

    pub(super) fn on_pod_kill(&mut self, u: Update) {
        match u {
            Update::Records(r) => {
                self.rec.pod_kills = r;
                self.dirty = true;
                self.publish("pod-kill", false);
            }
            Update::Log(at, m) => {
                self.rec.log(at, m);
                self.dirty = true;
            }
            Update::Done => {
                self.pod_kills.done = true;
                self.pod_kills.rx = None;
            }
        }
    }
}
