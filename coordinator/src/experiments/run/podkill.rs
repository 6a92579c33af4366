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
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::pod_kill::{kill_round, Victim};
use faultline_core::experiment::{ExperimentSpec, PodPlanInput, PodSelector};
use faultline_core::fault::{Fault, PodKillFault};
use futures::StreamExt;
use metrics::{counter, describe_counter, describe_histogram, histogram};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{Run, REVERT_WAIT};
use crate::experiments::planning;
use crate::experiments::record::PodKillRecord;
use crate::kube::podkill::{Deleted, PodEvent, PodState};
use crate::kube::{self, Cluster, PodAccess};
use crate::state::{now_ms, State};

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

/// A deleted pod's replacement bookkeeping.
struct Pending {
    controller_uid: String,
    /// Pods of the selector that existed when it was deleted: none of them is a replacement.
    known: BTreeSet<String>,
}

struct Task {
    state: Arc<State>,
    cluster: Arc<dyn Cluster>,
    spec: ExperimentSpec,
    selector: PodSelector,
    faults: Vec<(usize, PodKillFault)>,
    planned: Vec<Victim>,
    tx: mpsc::Sender<Update>,
    stop: CancellationToken,
    deadline: Instant,
    kills: Vec<PodKillRecord>,
    /// Index in `kills` -> what its replacement must look like.
    pending: HashMap<usize, Pending>,
    /// Replacements already credited to a kill.
    assigned: BTreeSet<String>,
}

enum Watched {
    Event(PodEvent),
    Failed(String),
}

/// Watches one namespace until `stop`, re-opening the watch from the last resource version.
async fn watch(
    cluster: Arc<dyn Cluster>,
    namespace: String,
    labels: Option<String>,
    tx: mpsc::Sender<Watched>,
    stop: CancellationToken,
) {
    let mut version = "0".to_string();
    while !stop.is_cancelled() {
        let opened = Instant::now();
        match cluster
            .watch_pods(&namespace, labels.as_deref(), &version)
            .await
        {
            Ok(mut events) => loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = events.next() => ev,
                };
                match ev {
                    None => break,
                    Some(Ok(ev)) => {
                        match &ev {
                            PodEvent::Changed(p) | PodEvent::Deleted(p) => {
                                version = p.resource_version.clone()
                            }
                            PodEvent::Bookmark(v) => version = v.clone(),
                            PodEvent::Expired(_) => version = "0".to_string(),
                        }
                        if tx.send(Watched::Event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Watched::Failed(e.to_string())).await;
                        break;
                    }
                }
            },
            Err(e) => {
                let _ = tx.send(Watched::Failed(e.to_string())).await;
            }
        }
        // A watch that ended at once (an error, or nothing to say) is not re-opened in a loop.
        if opened.elapsed() < Duration::from_secs(1) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

impl Task {
    async fn log(&self, message: String) {
        tracing::info!(experiment = %self.spec.name, "{message}");
        let _ = self.tx.send(Update::Log(now_ms(), message)).await;
    }

    async fn publish(&self) {
        let _ = self.tx.send(Update::Records(self.kills.clone())).await;
    }

    async fn run(mut self) {
        let (wtx, mut wrx) = mpsc::channel(256);
        let watch_stop = CancellationToken::new();
        for ns in &self.selector.namespaces {
            tokio::spawn(watch(
                self.cluster.clone(),
                ns.clone(),
                self.selector.label_selector.clone(),
                wtx.clone(),
                watch_stop.clone(),
            ));
        }
        drop(wtx);
        let start = Instant::now();
        let mut next: Vec<Option<Instant>> = self
            .faults
            .iter()
            .map(|(_, k)| k.interval.map(|i| start + i))
            .collect();
        for f in 0..self.faults.len() {
            self.round(f, 0).await;
        }
        let mut rounds = vec![0u32; self.faults.len()];
        loop {
            let due = next.iter().flatten().min().copied();
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.state.shutdown.cancelled() => break,
                Some(w) = wrx.recv() => self.on_watched(w).await,
                _ = sleep_until(due.unwrap_or(self.deadline)), if due.is_some() => {
                    let now = Instant::now();
                    for f in 0..self.faults.len() {
                        let Some(at) = next[f] else { continue };
                        if at > now {
                            continue;
                        }
                        let interval = self.faults[f].1.interval.unwrap_or(Duration::MAX);
                        next[f] = Some(at + interval).filter(|n| *n < self.deadline);
                        if at < self.deadline {
                            rounds[f] += 1;
                            self.round(f, rounds[f]).await;
                        }
                    }
                }
            }
        }
        // The run is over: no more deletes; wait (bounded) for the missing replacements.
        let until = Instant::now() + REVERT_WAIT;
        while !self.pending.is_empty() && !self.state.shutdown.is_cancelled() {
            tokio::select! {
                Some(w) = wrx.recv() => self.on_watched(w).await,
                _ = sleep_until(until) => break,
                _ = self.state.shutdown.cancelled() => break,
            }
        }
        watch_stop.cancel();
        if !self.pending.is_empty() {
            self.log(format!(
                "pod-kill: {} deleted pod(s) had no Ready replacement by the end of the experiment (+{} s)",
                self.pending.len(),
                REVERT_WAIT.as_secs()
            ))
            .await;
        }
        let _ = self.tx.send(Update::Done).await;
    }

    /// Round `round` of fault `f`: the planned pods (round 0), or a fresh selection.
    async fn round(&mut self, f: usize, round: u32) {
        let (index, fault) = self.faults[f].clone();
        let view = match kube::resolve(self.cluster.as_ref(), &self.selector).await {
            Ok(v) => v,
            Err(e) => {
                self.log(format!(
                    "pod-kill round {round}: could not list the pods: {e}"
                ))
                .await;
                return;
            }
        };
        let known: BTreeSet<String> = view.pods.iter().map(|p| p.uid.clone()).collect();
        let killed: BTreeSet<String> = self.kills.iter().map(|k| k.uid.clone()).collect();
        let victims = if round == 0 {
            // The plan's pods, unless one is terminating already (never counted twice).
            let (victims, skipped): (Vec<Victim>, Vec<Victim>) =
                self.planned.iter().cloned().partition(|v| {
                    !killed.contains(&v.uid)
                        && !view.pods.iter().any(|p| p.uid == v.uid && p.terminating)
                });
            if !skipped.is_empty() {
                let names: Vec<String> = skipped
                    .iter()
                    .map(|v| format!("{}/{}", v.namespace, v.name))
                    .collect();
                self.log(format!(
                    "pod-kill round 0: {} already terminating, not deleted again",
                    names.join(", ")
                ))
                .await;
            }
            victims
        } else {
            let agents = planning::agent_views(&self.state);
            let policy = planning::plan_policy(&self.state.policy);
            let (under_fault, pods_under_fault) = self.state.experiments.others(&self.spec.name);
            let running = self.state.experiments.running_count().saturating_sub(1) as u32;
            let r = kill_round(
                &PodPlanInput {
                    spec: &self.spec,
                    selector: &self.selector,
                    pods: &view.pods,
                    nodes: &view.nodes,
                    agents: &agents,
                    policy: &policy,
                    running_experiments: running,
                    under_fault: &under_fault,
                    pods_under_fault: &pods_under_fault,
                },
                round,
                &killed,
            );
            self.log(format!("pod-kill round {round}: {}", r.selection))
                .await;
            r.victims
        };
        for v in victims {
            self.delete(index, round, &fault, v, &known).await;
        }
        self.publish().await;
    }

    async fn delete(
        &mut self,
        index: usize,
        round: u32,
        fault: &PodKillFault,
        v: Victim,
        known: &BTreeSet<String>,
    ) {
        let grace = fault.grace_period_seconds();
        let at = now_ms();
        let answer = self
            .cluster
            .delete_pod(&v.namespace, &v.name, &v.uid, grace)
            .await;
        let mut rec = PodKillRecord {
            fault_index: index,
            round,
            pod: format!("{}/{}", v.namespace, v.name),
            uid: v.uid.clone(),
            node: v.node.clone(),
            killed_unix_ms: at,
            grace_period_seconds: grace,
            ..PodKillRecord::default()
        };
        let mut controller_uid = None;
        match answer {
            Ok(Deleted::Accepted(pod)) => {
                rec.outcome = "deleted".into();
                if let Some(c) = pod.as_ref().and_then(|p| p.controller.as_ref()) {
                    rec.controller = format!("{}/{}", c.kind, c.name);
                    controller_uid = Some(c.uid.clone());
                }
                if let Some(n) = pod.as_ref().and_then(|p| p.node.clone()) {
                    rec.node = n;
                }
            }
            Ok(Deleted::Gone(why)) => {
                rec.outcome = "gone".into();
                rec.error = why;
            }
            Err(e) => {
                rec.outcome = "failed".into();
                rec.error = e.to_string();
            }
        }
        counter!(POD_KILLS, "outcome" => rec.outcome.clone()).increment(1);
        tracing::info!(
            experiment = %self.spec.name,
            "pod-kill: delete {} (uid {}, node {}, grace {:?}): {}{}",
            rec.pod, rec.uid, rec.node, grace, rec.outcome,
            if rec.error.is_empty() { String::new() } else { format!(": {}", rec.error) }
        );
        self.kills.push(rec);
        if let Some(controller_uid) = controller_uid {
            self.pending.insert(
                self.kills.len() - 1,
                Pending {
                    controller_uid,
                    known: known.clone(),
                },
            );
        }
    }

    async fn on_watched(&mut self, w: Watched) {
        match w {
            Watched::Failed(e) => self.log(format!("pod-kill: watch: {e}")).await,
            Watched::Event(PodEvent::Deleted(p)) => {
                let at = now_ms();
                let mut changed = false;
                for k in self
                    .kills
                    .iter_mut()
                    .filter(|k| k.uid == p.uid && k.gone_unix_ms == 0)
                {
                    k.gone_unix_ms = at;
                    changed = true;
                }
                if changed {
                    self.publish().await;
                }
            }
            Watched::Event(PodEvent::Changed(p)) => {
                if self.replaced(&p) {
                    self.publish().await;
                }
            }
            Watched::Event(_) => {}
        }
    }

    /// Credits `p` (Ready, of a controller whose pod was deleted, new since) to the oldest
    /// deletion still waiting for it.
    fn replaced(&mut self, p: &PodState) -> bool {
        if !p.ready || p.terminating || self.assigned.contains(&p.uid) {
            return false;
        }
        let Some(owner) = p.controller.as_ref() else {
            return false;
        };
        let mut waiting: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, w)| w.controller_uid == owner.uid && !w.known.contains(&p.uid))
            .map(|(i, _)| *i)
            .collect();
        waiting.sort_unstable();
        let Some(i) = waiting.first().copied() else {
            return false;
        };
        self.pending.remove(&i);
        self.assigned.insert(p.uid.clone());
        let k = &mut self.kills[i];
        k.replacement = p.key();
        k.replacement_uid = p.uid.clone();
        k.replacement_node = p.node.clone().unwrap_or_default();
        k.ready_unix_ms = now_ms();
        if let Some(ms) = k.recover_ms() {
            histogram!(POD_KILL_RECOVER_SECONDS).record(ms as f64 / 1000.0);
            tracing::info!(
                experiment = %self.spec.name,
                "pod-kill: {} replaced by {} on {}, Ready {} ms after the delete",
                k.pod, k.replacement, k.replacement_node, ms
            );
        }
        true
    }
}
