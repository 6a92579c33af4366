//! Workflows in the coordinator: the `Workflows` gRPC service and one task per running
//! workflow that drives the step state machine of `faultline_core::workflow` on top of the
//! experiments service (each experiment step is an ordinary experiment, created, aborted and
//! read through `experiments::ops`).
//!
//! - [`service`]: the gRPC edge (authorization, audit of refusals, errors to `Status`).
//! - [`ops`]: create, approve, abort, delete, read; recovery after a restart.
//! - [`run`]: the task of one running workflow; [`steady`]: its own steady-state hypothesis;
//!   [`restart`]: a step's experiment across a graceful coordinator stop; [`instant`]: steps
//!   that complete once their kills were carried out.

pub mod instant;
pub mod ops;
mod restart;
pub mod run;
pub mod service;
mod steady;

use std::collections::HashMap;
use std::sync::Mutex;

use faultline_core::experiment::steady::Hypothesis;
use faultline_core::workflow::Progress;
use faultline_proto::pb;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Log lines kept per workflow.
const MAX_LOG: usize = 200;

/// A workflow run as stored (tree `workflows`, by name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub name: String,
    /// The whole document (for a schedule's run: generated from its `spec.workflow`).
    pub document: String,
    pub created_by: String,
    pub created_unix_ms: i64,
    /// The schedule that started it, if any.
    #[serde(default)]
    pub schedule: String,
    pub progress: Progress,
    #[serde(default)]
    pub log: Vec<(i64, String)>,
    /// The workflow's own steady-state hypothesis (`spec.steadyState`), when it has one.
    #[serde(default)]
    pub hypothesis: Option<Hypothesis>,
}

impl WorkflowRecord {
    pub fn log(&mut self, at: i64, message: impl Into<String>) {
        self.log.push((at, message.into()));
        if self.log.len() > MAX_LOG {
            let excess = self.log.len() - MAX_LOG;
            self.log.drain(..excess);
        }
    }

    pub fn to_pb(&self) -> pb::Workflow {
        let p = &self.progress;
        pb::Workflow {
            name: self.name.clone(),
            document: self.document.clone(),
            phase: p.phase.as_str().to_string(),
            created_by: self.created_by.clone(),
            created_unix_ms: self.created_unix_ms,
            started_unix_ms: p.started_unix_ms,
            ended_unix_ms: p.ended_unix_ms,
            reason: p.reason.clone(),
            steps: p
                .steps
                .iter()
                .map(|s| pb::WorkflowStep {
                    name: s.name.clone(),
                    parent: s.parent.clone().unwrap_or_default(),
                    kind: s.kind.clone(),
                    state: s.state.as_str().to_string(),
                    started_unix_ms: s.started_unix_ms,
                    ended_unix_ms: s.ended_unix_ms,
                    deadline_unix_ms: s.deadline_unix_ms,
                    experiment: s.experiment.clone(),
                    message: s.message.clone(),
                })
                .collect(),
            log: self
                .log
                .iter()
                .map(|(at, m)| pb::ExperimentLogEntry {
                    at_unix_ms: *at,
                    message: m.clone(),
                })
                .collect(),
            schedule: self.schedule.clone(),
            deadline_unix_ms: p.deadline_unix_ms,
            hypothesis: self
                .hypothesis
                .as_ref()
                .map(crate::experiments::hypothesis_to_pb),
        }
    }
}

/// How to reach a running workflow's task.
#[derive(Debug)]
pub struct Live {
    pub control: mpsc::Sender<run::Control>,
    pub snapshot: watch::Receiver<WorkflowRecord>,
}

/// The running workflows.
#[derive(Debug, Default)]
pub struct Table {
    live: Mutex<HashMap<String, Live>>,
    /// Held while a workflow is created, so two creations of one name never both pass the
    /// existence checks.
    pub create_lock: tokio::sync::Mutex<()>,
    /// Set when a graceful stop begins: running workflows stop acting (no step starts or
    /// ends while the stop aborts the experiments), so what is stored is what the next
    /// coordinator resumes.
    frozen: tokio_util::sync::CancellationToken,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, name: &str, live: Live) {
        self.lock().insert(name.to_string(), live);
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    pub fn control(&self, name: &str) -> Option<mpsc::Sender<run::Control>> {
        self.lock().get(name).map(|l| l.control.clone())
    }

    pub fn snapshot(&self, name: &str) -> Option<WorkflowRecord> {
        self.lock().get(name).map(|l| l.snapshot.borrow().clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<WorkflowRecord>> {
        self.lock().get(name).map(|l| l.snapshot.clone())
    }

    pub fn is_live(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// A graceful stop begins (before the running experiments are aborted).
    pub fn freeze(&self) {
        self.frozen.cancel();
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.is_cancelled()
    }
}
