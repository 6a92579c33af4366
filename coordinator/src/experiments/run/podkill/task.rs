//! The pod-kill task: the rounds (the planned pods first, then a fresh selection every
//! interval), the deletes and their records, and the bounded wait for replacements at the end.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::pod_kill::{kill_round, Victim};
use faultline_core::experiment::{ExperimentSpec, PodPlanInput, PodSelector};
use faultline_core::fault::PodKillFault;
use metrics::counter;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::watch::watch;
use super::{Update, POD_KILLS};
use crate::experiments::planning;
use crate::experiments::record::PodKillRecord;
use crate::experiments::run::REVERT_WAIT;
use crate::kube::podkill::Deleted;
use crate::kube::{self, Cluster};
use crate::state::{now_ms, State};

/// A deleted pod's replacement bookkeeping.
pub(super) struct Pending {
    pub(super) controller_uid: String,
    /// Pods of the selector that existed when it was deleted: none of them is a replacement.
    pub(super) known: BTreeSet<String>,
}

pub(super) struct Task {
    pub(super) state: Arc<State>,
    pub(super) cluster: Arc<dyn Cluster>,
    pub(super) spec: ExperimentSpec,
    pub(super) selector: PodSelector,
    pub(super) faults: Vec<(usize, PodKillFault)>,
    pub(super) planned: Vec<Victim>,
    pub(super) tx: mpsc::Sender<Update>,
    pub(super) stop: CancellationToken,
    pub(super) deadline: Instant,
    pub(super) kills: Vec<PodKillRecord>,
    /// Index in `kills` -> what its replacement must look like.
    pub(super) pending: HashMap<usize, Pending>,
    /// Replacements already credited to a kill.
    pub(super) assigned: BTreeSet<String>,
}

impl Task {
    pub(super) async fn log(&self, message: String) {
        tracing::info!(experiment = %self.spec.name, "{message}");
        let _ = self.tx.send(Update::Log(now_ms(), message)).await;
    }

    pub(super) async fn publish(&self) {
        let _ = self.tx.send(Update::Records(self.kills.clone())).await;
    }

    pub(super) async fn run(mut self) {
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
            // The run may have ended while this round was listing or deleting.
            if self.stop.is_cancelled() || self.state.shutdown.is_cancelled() {
                break;
            }
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
}
