//! The step state machine of one workflow run. It holds the state of every step (stored as
//! part of the run's record) and, told what happened (started, a tick of the clock, an
//! experiment ended, an approval, an abort), returns what to do next.
//!
//! Steps run in document order; a `parallel` step starts all its steps together and is done
//! when all are. Deadlines cascade: a step's effective deadline is the earliest of its own
//! (from its start), its parallel parent's and the workflow's, and an experiment step whose
//! deadline passes is stopped. Every state can be left by an abort.

use serde::{Deserialize, Serialize};

pub use super::state::{Action, ApproveError, StepState, StepStatus, WorkflowPhase};
use super::{step_run_name, OnStepFailure, Step, StepAction, WorkflowSpec};
use crate::experiment::Phase;

/// The state of one workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub workflow: String,
    pub phase: WorkflowPhase,
    pub started_unix_ms: i64,
    pub ended_unix_ms: i64,
    /// The workflow's deadline (unix ms; 0: none).
    pub deadline_unix_ms: i64,
    pub reason: String,
    /// Every step in document order (a parallel step before its steps).
    pub steps: Vec<StepStatus>,
    /// Index into the spec's top-level steps of the one running (or next).
    pub cursor: usize,
}

fn flatten(steps: &[Step], parent: Option<&str>, out: &mut Vec<StepStatus>) {
    for s in steps {
        out.push(StepStatus {
            name: s.name.clone(),
            parent: parent.map(str::to_string),
            kind: s.action.kind().to_string(),
            state: StepState::Waiting,
            started_unix_ms: 0,
            ended_unix_ms: 0,
            deadline_unix_ms: 0,
            until_unix_ms: 0,
            experiment: String::new(),
            message: String::new(),
        });
        if let StepAction::Parallel(children) = &s.action {
            flatten(children, Some(&s.name), out);
        }
    }
}

fn earliest(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Progress {
    pub fn new(spec: &WorkflowSpec) -> Progress {
        let mut steps = Vec::new();
        flatten(&spec.steps, None, &mut steps);
        Progress {
            workflow: spec.name.clone(),
            phase: WorkflowPhase::Pending,
            started_unix_ms: 0,
            ended_unix_ms: 0,
            deadline_unix_ms: 0,
            reason: String::new(),
            steps,
            cursor: 0,
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn at(&mut self, name: &str) -> Option<&mut StepStatus> {
        self.steps.iter_mut().find(|s| s.name == name)
    }

    /// Experiment steps running now: (step, experiment).
    pub fn running_experiments(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .filter(|s| s.kind == "experiment" && s.state == StepState::Running)
            .map(|s| (s.name.clone(), s.experiment.clone()))
            .collect()
    }

    /// Starts the run at `now`.
    pub fn start(&mut self, spec: &WorkflowSpec, now: i64) -> Vec<Action> {
        if self.phase != WorkflowPhase::Pending {
            return Vec::new();
        }
        self.phase = WorkflowPhase::Running;
        self.started_unix_ms = now;
        self.deadline_unix_ms = spec.deadline.map_or(0, |d| now + ms(d));
        self.advance(spec, now)
    }

    /// Starts the top-level step under the cursor when nothing runs; finishes after the last.
    fn advance(&mut self, spec: &WorkflowSpec, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        while self.phase == WorkflowPhase::Running {
            let Some(step) = spec.steps.get(self.cursor) else {
                let failed: Vec<String> = spec
                    .steps
                    .iter()
                    .filter_map(|s| self.step(&s.name))
                    .filter(|s| s.state != StepState::Succeeded)
                    .map(|s| s.name.clone())
                    .collect();
                let (phase, reason) = if failed.is_empty() {
                    (WorkflowPhase::Succeeded, "every step succeeded".to_string())
                } else {
                    (
                        WorkflowPhase::Failed,
                        format!("step(s) failed: {}", failed.join(", ")),
                    )
                };
                out.push(self.finish(phase, reason, now));
                break;
            };
            let state = self.step(&step.name).map(|s| s.state);
            match state {
                Some(StepState::Waiting) => {
                    let top = self.deadline_unix_ms;
                    self.begin(step, top, &mut out, now);
                    // A step that finished at once (it cannot today) falls through.
                }
                Some(s) if s.is_terminal() => {
                    self.cursor += 1;
                    continue;
                }
                _ => {}
            }
            break;
        }
        out
    }

    fn begin(&mut self, step: &Step, outer: i64, out: &mut Vec<Action>, now: i64) {
        let deadline = earliest(outer, step.deadline.map_or(0, |d| now + ms(d)));
        let run = step_run_name(&self.workflow, &step.name);
        let approve = format!(
            "waiting for faultctl workflow approve {} {}",
            self.workflow, step.name
        );
        let Some(st) = self.at(&step.name) else {
            return;
        };
        st.started_unix_ms = now;
        st.deadline_unix_ms = deadline;
        match &step.action {
            StepAction::Experiment(spec) => {
                st.state = StepState::Running;
                st.experiment = run.clone();
                out.push(Action::StartExperiment {
                    step: step.name.clone(),
                    run,
                    spec: spec.clone(),
                    deadline_unix_ms: deadline,
                });
            }
            StepAction::Wait(d) => {
                st.state = StepState::Running;
                st.until_unix_ms = now + ms(*d);
            }
            StepAction::Approval => {
                st.state = StepState::AwaitingApproval;
                st.message = approve;
            }
            StepAction::Parallel(children) => {
                st.state = StepState::Running;
                for c in children {
                    self.begin(c, deadline, out, now);
                }
            }
        }
    }

    /// The experiment of `step` could not be created or started.
    pub fn start_failed(
        &mut self,
        spec: &WorkflowSpec,
        step: &str,
        why: &str,
        now: i64,
    ) -> Vec<Action> {
        self.end_step(step, StepState::Failed, format!("not started: {why}"), now);
        self.settle(spec, now)
    }

    /// The experiment of `step` ended in `phase`.
    pub fn experiment_ended(
        &mut self,
        spec: &WorkflowSpec,
        step: &str,
        phase: Phase,
        reason: &str,
        now: i64,
    ) -> Vec<Action> {
        let (state, msg) = if phase == Phase::Completed {
            (
                StepState::Succeeded,
                format!("experiment completed: {reason}"),
            )
        } else {
            (StepState::Failed, format!("experiment {phase}: {reason}"))
        };
        self.end_step(step, state, msg, now);
        self.settle(spec, now)
    }

    /// `step` was approved.
    pub fn approve(
        &mut self,
        spec: &WorkflowSpec,
        step: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<Action>, ApproveError> {
        let st = self
            .step(step)
            .ok_or_else(|| ApproveError::NoSuchStep(step.to_string()))?;
        if st.state != StepState::AwaitingApproval {
            return Err(ApproveError::NotWaiting {
                step: step.to_string(),
                state: st.state.as_str(),
            });
        }
        self.end_step(step, StepState::Succeeded, format!("approved by {by}"), now);
        Ok(self.settle(spec, now))
    }

    /// The clock: timed suspends end, deadlines pass.
    pub fn tick(&mut self, spec: &WorkflowSpec, now: i64) -> Vec<Action> {
        if self.phase != WorkflowPhase::Running {
            return Vec::new();
        }
        if self.deadline_unix_ms != 0 && now >= self.deadline_unix_ms {
            return self.stop_all(
                WorkflowPhase::Failed,
                "the workflow's deadline passed".into(),
                "stopped: the workflow's deadline passed",
                now,
            );
        }
        let mut out = Vec::new();
        let due: Vec<(String, bool)> = self
            .steps
            .iter()
            .filter(|s| s.state.is_active() && s.kind != "parallel")
            .filter_map(|s| {
                if s.deadline_unix_ms != 0 && now >= s.deadline_unix_ms {
                    Some((s.name.clone(), true))
                } else if s.kind == "suspend" && now >= s.until_unix_ms {
                    Some((s.name.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (name, late) in due {
            if !late {
                self.end_step(&name, StepState::Succeeded, "suspend ended".into(), now);
                continue;
            }
            let why = "its deadline passed";
            if let Some(st) = self.step(&name) {
                if st.kind == "experiment" {
                    out.push(Action::StopExperiment {
                        step: name.clone(),
                        run: st.experiment.clone(),
                        reason: format!("step {name} of workflow {}: {why}", self.workflow),
                    });
                }
            }
            self.end_step(&name, StepState::Failed, format!("stopped: {why}"), now);
        }
        out.extend(self.settle(spec, now));
        out
    }

    /// Ends the run now: every active step is stopped (its experiment aborted).
    pub fn abort(&mut self, reason: &str, now: i64) -> Vec<Action> {
        if self.phase.is_terminal() {
            return Vec::new();
        }
        self.stop_all(
            WorkflowPhase::Aborted,
            reason.to_string(),
            "aborted with the workflow",
            now,
        )
    }

    fn stop_all(
        &mut self,
        phase: WorkflowPhase,
        reason: String,
        step_msg: &str,
        now: i64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for st in &mut self.steps {
            if st.state.is_active() {
                if st.kind == "experiment" {
                    out.push(Action::StopExperiment {
                        step: st.name.clone(),
                        run: st.experiment.clone(),
                        reason: format!("{reason} (workflow {})", self.workflow),
                    });
                }
                st.state = if phase == WorkflowPhase::Aborted {
                    StepState::Aborted
                } else {
                    StepState::Failed
                };
                st.ended_unix_ms = now;
                st.message = step_msg.to_string();
            } else if st.state == StepState::Waiting {
                st.state = StepState::Skipped;
            }
        }
        out.push(self.finish(phase, reason, now));
        out
    }

    fn end_step(&mut self, name: &str, state: StepState, message: String, now: i64) {
        if let Some(st) = self.at(name) {
            if st.state.is_terminal() {
                return;
            }
            st.state = state;
            st.ended_unix_ms = now;
            st.message = message;
        }
    }

    /// Parallel parents of finished children end; a failure under `onStepFailure: abort`
    /// ends the workflow; otherwise the next step starts.
    fn settle(&mut self, spec: &WorkflowSpec, now: i64) -> Vec<Action> {
        if self.phase != WorkflowPhase::Running {
            return Vec::new();
        }
        let mut out = Vec::new();
        let failed = self
            .steps
            .iter()
            .find(|s| s.state == StepState::Failed && s.kind != "parallel")
            .map(|s| s.name.clone());
        if let (Some(f), OnStepFailure::Abort) = (&failed, spec.on_step_failure) {
            return self.stop_all(
                WorkflowPhase::Failed,
                format!("step {f} failed (onStepFailure: abort)"),
                "stopped: another step failed (onStepFailure: abort)",
                now,
            );
        }
        for s in &spec.steps {
            let StepAction::Parallel(children) = &s.action else {
                continue;
            };
            let states: Vec<StepState> = children
                .iter()
                .filter_map(|c| self.step(&c.name).map(|c| c.state))
                .collect();
            if states.iter().all(|s| s.is_terminal()) {
                let bad: Vec<&str> = children
                    .iter()
                    .filter(|c| self.step(&c.name).map(|c| c.state) != Some(StepState::Succeeded))
                    .map(|c| c.name.as_str())
                    .collect();
                let (state, msg) = if bad.is_empty() {
                    (StepState::Succeeded, "every parallel step succeeded".into())
                } else {
                    (StepState::Failed, format!("failed: {}", bad.join(", ")))
                };
                self.end_step(&s.name, state, msg, now);
            }
        }
        out.extend(self.advance(spec, now));
        out
    }

    fn finish(&mut self, phase: WorkflowPhase, reason: String, now: i64) -> Action {
        self.phase = phase;
        self.ended_unix_ms = now;
        self.reason = reason.clone();
        Action::Finished { phase, reason }
    }
}
