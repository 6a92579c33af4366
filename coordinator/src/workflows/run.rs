//! The task of one running workflow: carries out what the step state machine asks (create
//! and start an experiment, abort one), and feeds it what happens (experiments ending, the
//! clock, approvals, an abort). Experiments are watched every [`POLL`]; an abort acts at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::Phase;
use faultline_core::workflow::together::{self, Member, Room};
use faultline_core::workflow::{template, Action, SpecValue, WorkflowSpec};
use faultline_core::Identity;
use tokio::sync::{mpsc, oneshot, watch};

use super::restart;
use super::steady::Start;
use super::{Live, WorkflowRecord};
use crate::experiments::ops;
use crate::runs::{self, RunEvent};
use crate::state::{now_ms, State};
use crate::store::ItemTree;

/// How often running experiments, suspends and deadlines are checked.
pub const POLL: Duration = Duration::from_millis(100);

/// Requests to a running workflow.
#[derive(Debug)]
pub enum Control {
    Approve {
        step: String,
        by: String,
        reply: oneshot::Sender<Result<WorkflowRecord, String>>,
    },
    /// Ends it; the reply comes once every experiment in it was aborted (RevertFault sent).
    Abort {
        reason: String,
        reply: oneshot::Sender<WorkflowRecord>,
    },
}

pub(super) struct Run {
    pub(super) state: Arc<State>,
    pub(super) spec: WorkflowSpec,
    pub(super) rec: WorkflowRecord,
    pub(super) identity: Identity,
    pub(super) publish: watch::Sender<WorkflowRecord>,
    /// Instant experiment steps (every fault a kill) already told to complete.
    pub(super) completed: BTreeSet<String>,
    /// When this task started (experiments a graceful stop ended before it are run again).
    pub(super) launched_unix_ms: i64,
}

/// Starts the task of `rec` (new, or recovered running after a restart).
pub fn launch(state: &Arc<State>, spec: WorkflowSpec, rec: WorkflowRecord) {
    let (control_tx, control_rx) = mpsc::channel(8);
    let (publish, snapshot) = watch::channel(rec.clone());
    state.workflows.insert(
        &rec.name,
        Live {
            control: control_tx,
            snapshot,
        },
    );
    let run = Run {
        state: state.clone(),
        identity: runs::acting_as(&rec.created_by),
        spec,
        rec,
        publish,
        completed: BTreeSet::new(),
        launched_unix_ms: now_ms(),
    };
    tokio::spawn(run.run(control_rx));
}

impl Run {
    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let now = now_ms();
        if self.rec.progress.started_unix_ms == 0 {
            self.rec
                .log(now, format!("started by {}", self.rec.created_by));
            runs::emit(
                &self.state,
                &RunEvent::Started {
                    kind: "workflow",
                    name: self.rec.name.clone(),
                    by: self.rec.created_by.clone(),
                },
            );
            match self.check_start(&mut control).await {
                Start::Go => {
                    let actions = self.rec.progress.start(&self.spec, now_ms());
                    self.carry_out(actions).await;
                }
                Start::Ended(actions) => self.carry_out(actions).await,
                Start::Shutdown => {
                    // Still pending: the next start checks again.
                    self.save().await;
                    self.state.workflows.remove(&self.rec.name);
                    return;
                }
            }
        } else {
            self.rec.log(now, "resumed after a coordinator restart");
        }
        self.save().await;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.rec.progress.phase.is_terminal() {
            tokio::select! {
                Some(c) = control.recv() => self.on_control(c).await,
                // Frozen by a graceful stop: what the stop does to the step experiments is
                // read by the next coordinator (see `restart`), not here.
                _ = tick.tick(), if !self.state.workflows.is_frozen() => self.on_tick().await,
                _ = self.state.shutdown.cancelled() => {
                    // The record stays `running`; the next start resumes it.
                    self.state.workflows.remove(&self.rec.name);
                    return;
                }
            }
        }
        self.watch_recovery(&mut control).await;
        let verdict = self
            .rec
            .hypothesis
            .as_ref()
            .map_or("none", |h| h.verdict.as_str())
            .to_string();
        runs::emit(
            &self.state,
            &RunEvent::Ended {
                kind: "workflow",
                name: self.rec.name.clone(),
                phase: self.rec.progress.phase.as_str().to_string(),
                reason: self.rec.progress.reason.clone(),
                verdict: verdict.clone(),
            },
        );
        if verdict == "failed" {
            let reason = self
                .rec
                .hypothesis
                .as_ref()
                .map(|h| h.reason.clone())
                .unwrap_or_default();
            runs::workflow_hypothesis_failed(
                &self.state,
                &self.rec.name,
                self.rec.progress.phase.as_str(),
                &reason,
            );
        }
        self.save().await;
        self.state.workflows.remove(&self.rec.name);
    }

    pub(super) async fn save(&mut self) {
        self.publish.send_replace(self.rec.clone());
        let put = self
            .state
            .store
            .put_item(ItemTree::Workflows, &self.rec.name, &self.rec)
            .await;
        if let Err(e) = put {
            tracing::error!(workflow = %self.rec.name, "could not store the workflow: {e}");
        }
    }

    async fn on_control(&mut self, c: Control) {
        let now = now_ms();
        match c {
            Control::Approve { step, by, reply } => {
                match self.rec.progress.approve(&self.spec, &step, &by, now) {
                    Ok(actions) => {
                        self.rec.log(now, format!("step {step} approved by {by}"));
                        self.carry_out(actions).await;
                        self.save().await;
                        let _ = reply.send(Ok(self.rec.clone()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Control::Abort { reason, reply } => {
                let actions = self.rec.progress.abort(&reason, now);
                self.rec.log(now, format!("aborted: {reason}"));
                self.carry_out(actions).await;
                self.save().await;
                let _ = reply.send(self.rec.clone());
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = now_ms();
        let before = self.rec.progress.clone();
        let mut actions = Vec::new();
        for (step, run) in self.rec.progress.running_experiments() {
            let Some(phase) = self.state.experiments.phase(&run) else {
                // Created and then gone: its record was deleted (only an ended one can be).
                actions.extend(self.rec.progress.experiment_ended(
                    &self.spec,
                    &step,
                    Phase::Interrupted,
                    "its record was deleted before the workflow read its verdict",
                    now,
                ));
                continue;
            };
            if phase.is_terminal() {
                // The run is over once its reverts are settled (or waited for).
                if self.state.experiments.snapshot(&run).is_some() {
                    continue;
                }
                let reason = match ops::get(&self.state, &run).await {
                    Ok(r) if restart::stopped_by_shutdown(&r) => {
                        if let Some(next) = self.after_graceful_stop(&step, &r).await {
                            actions.extend(next);
                        }
                        continue;
                    }
                    Ok(r) => r.verdict_reason.clone(),
                    Err(e) => e.to_string(),
                };
                self.rec
                    .log(now, format!("step {step}: experiment {run} ended {phase}"));
                runs::emit(
                    &self.state,
                    &RunEvent::Ended {
                        kind: "experiment",
                        name: run.clone(),
                        phase: phase.as_str().to_string(),
                        reason: reason.clone(),
                        // An experiment's run notifies for itself; this is the log and count.
                        verdict: "none".into(),
                    },
                );
                actions.extend(
                    self.rec
                        .progress
                        .experiment_ended(&self.spec, &step, phase, &reason, now),
                );
            } else if phase == Phase::Running && !self.completed.contains(&step) {
                self.complete_if_instant(&step, &run).await;
            }
        }
        actions.extend(self.rec.progress.tick(&self.spec, now));
        // A suspend that ends or an approval gate that opens asks for no action, but is news.
        if !actions.is_empty() || self.rec.progress != before {
            self.carry_out(actions).await;
            self.save().await;
        }
    }

    /// Carries out `actions` and whatever the state machine answers to their outcome.
    pub(super) async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let batch = std::mem::take(&mut queue);
            let mut starts = Vec::new();
            let mut stops = Vec::new();
            for a in batch {
                match a {
                    Action::StartExperiment {
                        step, run, spec, ..
                    } => starts.push((step, run, spec)),
                    Action::StopExperiment { step, run, reason } => stops.push((step, run, reason)),
                    Action::Finished { phase, reason } => {
                        self.rec
                            .log(now_ms(), format!("{}: {reason}", phase.as_str()));
                    }
                }
            }
            self.stop(stops).await;
            queue.extend(self.start(starts).await);
        }
    }

    /// Aborts the experiments at once, all together (the experiments service reverts their
    /// faults on every agent).
    async fn stop(&mut self, stops: Vec<(String, String, String)>) {
        let identity = &self.identity;
        let state = &self.state;
        let aborts = stops.iter().map(|(_, run, reason)| async move {
            (run, ops::abort(state, identity, run, reason).await)
        });
        for (run, r) in futures::future::join_all(aborts).await {
            let line = match r {
                Ok(rec) => format!("experiment {run} aborted: {}", rec.verdict_reason),
                Err(e) => format!("experiment {run}: abort: {e}"),
            };
            self.rec.log(now_ms(), line);
        }
    }

    /// Creates and starts the experiments of `starts` (several: a parallel step, planned
    /// together first); returns what the state machine answers to failures.
    pub(super) async fn start(&mut self, starts: Vec<(String, String, SpecValue)>) -> Vec<Action> {
        let mut out = Vec::new();
        if starts.is_empty() {
            return out;
        }
        let docs: Vec<(String, String, String)> = starts
            .into_iter()
            .map(|(step, run, spec)| {
                let doc = template::document("Experiment", &run, &spec);
                (step, run, doc)
            })
            .collect();
        if docs.len() > 1 {
            if let Err(why) = self.plan_together(&docs).await {
                let now = now_ms();
                self.rec.log(now, format!("refused: {why}"));
                for (step, _, _) in &docs {
                    out.extend(self.rec.progress.start_failed(&self.spec, step, &why, now));
                }
                return out;
            }
        }
        for (step, run, doc) in docs {
            let now = now_ms();
            match ops::create(&self.state, &self.identity, &doc, false, true).await {
                Ok(c) => {
                    self.rec.log(
                        now,
                        format!(
                            "step {step}: experiment {run} started on {}",
                            c.record.plan.targets_phrase()
                        ),
                    );
                    runs::emit(
                        &self.state,
                        &RunEvent::Started {
                            kind: "experiment",
                            name: run.clone(),
                            by: format!("workflow {}", self.rec.name),
                        },
                    );
                }
                Err(e) => {
                    self.rec.log(
                        now,
                        format!("step {step}: experiment {run} not started: {e}"),
                    );
                    out.extend(self.rec.progress.start_failed(
                        &self.spec,
                        &step,
                        &e.to_string(),
                        now,
                    ));
                }
            }
        }
        out
    }

    /// Plans every experiment of a parallel step alone (dry run), then checks the combined
    /// selection against the policy and each one's blast radius.
    async fn plan_together(&self, docs: &[(String, String, String)]) -> Result<(), String> {
        let mut members = Vec::new();
        for (step, _, doc) in docs {
            let c = ops::create(&self.state, &self.identity, doc, true, false)
                .await
                .map_err(|e| format!("step {step}: {e}"))?;
            let spec = faultline_core::experiment::parse_stored_experiment(doc)
                .map_err(|e| format!("step {step}: {e}"))?;
            members.push(Member {
                step: step.clone(),
                agents: c
                    .record
                    .plan
                    .selected
                    .iter()
                    .map(|s| s.agent.clone())
                    .collect(),
                blast_radius: spec.blast_radius,
            });
        }
        let parent = self
            .rec
            .progress
            .step(&docs[0].0)
            .and_then(|s| s.parent.clone())
            .unwrap_or_default();
        let under_fault = self.state.experiments.under_fault();
        let p = &self.state.policy;
        let room = Room {
            connected: self.state.registry.connected_count(),
            under_fault: &under_fault,
            running_experiments: self.state.experiments.running_count() as u32,
            max_concurrent_experiments: p.max_concurrent_experiments,
            max_fleet_percent_under_fault: p.max_fleet_percent_under_fault,
        };
        together::check(&parent, &members, &room)
    }
}
