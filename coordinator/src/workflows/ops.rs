//! What can be done to workflows — create (and start), approve a step, abort, delete, read —
//! and their recovery after a restart. Mutations are audited before they change anything,
//! except an abort, which reverts first and is audited after (as for experiments).

use std::sync::Arc;
use std::time::Duration;

use faultline_core::fault::SpecError;
use faultline_core::workflow::{parse_workflow, template, Progress, SpecValue, StepAction};
use faultline_core::Identity;
use tokio::sync::oneshot;
use tonic::Status;

use super::run::{self, Control};
use super::WorkflowRecord;
use crate::authz::Method;
use crate::state::{now_ms, State, Unaudited};
use crate::store::{ItemTree, StoreError};

/// How long Abort and Approve wait for the workflow's task.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0}")]
    Invalid(SpecError),
    #[error("the fleet is halted (by {by}: {reason}); new workflows are refused until an admin resumes it (faultctl resume)")]
    Halted { by: String, reason: String },
    #[error("name: workflow {0:?} does not exist")]
    NotFound(String),
    #[error("metadata.name: workflow {name:?} already exists (phase {phase}); choose another name or delete it first")]
    Exists { name: String, phase: &'static str },
    #[error("{path}: experiment {experiment:?} already exists (an earlier run's record); delete it (faultctl delete experiment {experiment}) or rename the workflow")]
    StepExists { path: String, experiment: String },
    #[error("workflow {name:?} is {phase}: {what}")]
    WrongPhase {
        name: String,
        phase: &'static str,
        what: &'static str,
    },
    #[error("{0}")]
    Approve(String),
    #[error("workflow {0:?} did not answer in time")]
    NoAnswer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
    #[error("{done}, but the audit log could not be written: {source}")]
    DoneUnaudited { done: String, source: StoreError },
}

impl WorkflowError {
    pub fn is_audit(&self) -> bool {
        matches!(
            self,
            WorkflowError::Unaudited(_) | WorkflowError::DoneUnaudited { .. }
        )
    }

    /// The one conversion into a gRPC status.
    pub fn status(&self) -> Status {
        let m = self.to_string();
        match self {
            WorkflowError::Invalid(_) | WorkflowError::Approve(_) => Status::invalid_argument(m),
            WorkflowError::Halted { .. } | WorkflowError::WrongPhase { .. } => {
                Status::failed_precondition(m)
            }
            WorkflowError::NotFound(_) => Status::not_found(m),
            WorkflowError::Exists { .. } | WorkflowError::StepExists { .. } => {
                Status::already_exists(m)
            }
            WorkflowError::NoAnswer(_) => Status::unavailable(m),
            WorkflowError::Store(_) | WorkflowError::DoneUnaudited { .. } => Status::internal(m),
            WorkflowError::Unaudited(e) => e.status(),
        }
    }
}

/// Creates and starts the workflow of `document`.
pub async fn create(
    state: &Arc<State>,
    identity: &Identity,
    document: &str,
) -> Result<WorkflowRecord, WorkflowError> {
    create_run(state, identity, document, "").await
}

/// Creates and starts the workflow run `name` of schedule `schedule` from its
/// `spec.workflow`.
pub async fn create_for_schedule(
    state: &Arc<State>,
    identity: &Identity,
    name: &str,
    spec: &SpecValue,
    schedule: &str,
) -> Result<WorkflowRecord, WorkflowError> {
    let document = template::document("Workflow", name, spec);
    create_run(state, identity, &document, schedule).await
}

async fn create_run(
    state: &Arc<State>,
    identity: &Identity,
    document: &str,
    schedule: &str,
) -> Result<WorkflowRecord, WorkflowError> {
    let spec =
        parse_workflow(document, state.policy.max_duration).map_err(WorkflowError::Invalid)?;
    if let Some(h) = state.halted() {
        return Err(WorkflowError::Halted {
            by: h.by,
            reason: h.reason,
        });
    }
    let creating = state.workflows.create_lock.lock().await;
    match get(state, &spec.name).await {
        Ok(old) => {
            return Err(WorkflowError::Exists {
                name: spec.name.clone(),
                phase: old.progress.phase.as_str(),
            })
        }
        Err(WorkflowError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    for (path, experiment) in step_experiments(&spec.name, &spec.steps, "spec.steps") {
        if state.experiments.phase(&experiment).is_some()
            || state.store.experiment(&experiment).await?.is_some()
        {
            return Err(WorkflowError::StepExists { path, experiment });
        }
    }
    let by = identity.to_string();
    let detail = match schedule {
        "" => format!(
            "created workflow {} ({} steps)",
            spec.name,
            spec.steps.len()
        ),
        s => format!("created workflow {} for schedule {s}", spec.name),
    };
    state
        .audit_first(identity, Method::WorkflowCreate, detail)
        .await?;
    let mut rec = WorkflowRecord {
        name: spec.name.clone(),
        document: document.to_string(),
        created_by: by.clone(),
        created_unix_ms: now_ms(),
        schedule: schedule.to_string(),
        progress: Progress::new(&spec),
        log: Vec::new(),
        hypothesis: None,
    };
    rec.log(rec.created_unix_ms, format!("created by {by}"));
    state
        .store
        .put_item(ItemTree::Workflows, &rec.name, &rec)
        .await?;
    let mut snapshot = None;
    run::launch(state, spec, rec.clone());
    drop(creating);
    // Answer with the record once the first steps were started (or refused).
    if let Some(mut rx) = state.workflows.subscribe(&rec.name) {
        let _ = tokio::time::timeout(REPLY_TIMEOUT, rx.changed()).await;
        snapshot = Some(rx.borrow().clone());
    }
    Ok(snapshot.unwrap_or(rec))
}

/// The experiment each experiment step runs: (its field path, its name).
fn step_experiments(
    workflow: &str,
    steps: &[faultline_core::workflow::Step],
    at: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let path = format!("{at}[{i}]");
        match &s.action {
            StepAction::Experiment(_) => out.push((
                format!("{path}.name"),
                faultline_core::workflow::step_run_name(workflow, &s.name),
            )),
            StepAction::Parallel(children) => out.extend(step_experiments(
                workflow,
                children,
                &format!("{path}.parallel"),
            )),
            _ => {}
        }
    }
    out
}

/// The latest record of workflow `name`: the live one while it runs, else the stored one.
pub async fn get(state: &State, name: &str) -> Result<WorkflowRecord, WorkflowError> {
    if let Some(r) = state.workflows.snapshot(name) {
        return Ok(r);
    }
    state
        .store
        .item(ItemTree::Workflows, name)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(name.to_string()))
}

/// Every workflow, newest first.
pub async fn list(state: &State) -> Result<Vec<WorkflowRecord>, WorkflowError> {
    let stored: Vec<WorkflowRecord> = state.store.items(ItemTree::Workflows).await?;
    let mut out: Vec<WorkflowRecord> = stored
        .into_iter()
        .map(|r| state.workflows.snapshot(&r.name).unwrap_or(r))
        .collect();
    out.sort_by(|a, b| {
        b.created_unix_ms
            .cmp(&a.created_unix_ms)
            .then(a.name.cmp(&b.name))
    });
    Ok(out)
}

fn ended(rec: &WorkflowRecord, what: &'static str) -> WorkflowError {
    WorkflowError::WrongPhase {
        name: rec.name.clone(),
        phase: rec.progress.phase.as_str(),
        what,
    }
}

pub async fn approve(
    state: &State,
    identity: &Identity,
    name: &str,
    step: &str,
) -> Result<WorkflowRecord, WorkflowError> {
    let Some(control) = state.workflows.control(name) else {
        let rec = get(state, name).await?;
        return Err(ended(&rec, "it has ended; there is nothing to approve"));
    };
    state
        .audit_first(
            identity,
            Method::WorkflowApprove,
            format!("approved step {step} of workflow {name}"),
        )
        .await?;
    let (tx, rx) = oneshot::channel();
    let msg = Control::Approve {
        step: step.to_string(),
        by: identity.to_string(),
        reply: tx,
    };
    if control.send(msg).await.is_err() {
        return Err(WorkflowError::NoAnswer(name.to_string()));
    }
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(Ok(rec))) => Ok(rec),
        Ok(Ok(Err(e))) => Err(WorkflowError::Approve(e)),
        _ => Err(WorkflowError::NoAnswer(name.to_string())),
    }
}

/// Aborts the workflow: every experiment in it is aborted (fleet-wide revert) before this
/// returns; audited after, so the audit log never holds up a revert.
pub async fn abort(
    state: &State,
    identity: &Identity,
    name: &str,
    reason: &str,
) -> Result<WorkflowRecord, WorkflowError> {
    let reason = match reason.trim() {
        "" => format!("aborted by {identity}"),
        r => format!("aborted by {identity}: {r}"),
    };
    let Some(control) = state.workflows.control(name) else {
        let rec = get(state, name).await?;
        return Err(ended(&rec, "it has ended already"));
    };
    let (tx, rx) = oneshot::channel();
    let msg = Control::Abort {
        reason: reason.clone(),
        reply: tx,
    };
    if control.send(msg).await.is_err() {
        return Err(WorkflowError::NoAnswer(name.to_string()));
    }
    let rec = match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(rec)) => rec,
        _ => return Err(WorkflowError::NoAnswer(name.to_string())),
    };
    let detail = format!("aborted workflow {name}: {reason}");
    state
        .audit_durable(identity, Method::WorkflowAbort.name(), detail, true)
        .await
        .map_err(|source| WorkflowError::DoneUnaudited {
            done: format!("workflow {name:?} was aborted"),
            source,
        })?;
    Ok(rec)
}

/// Removes an ended workflow's record and those of the experiments it ran.
pub async fn delete(state: &State, identity: &Identity, name: &str) -> Result<(), WorkflowError> {
    let rec = get(state, name).await?;
    if state.workflows.is_live(name) || !rec.progress.phase.is_terminal() {
        return Err(ended(
            &rec,
            "only a workflow that has ended can be deleted; abort it first (faultctl abort workflow NAME)",
        ));
    }
    state
        .audit_first(
            identity,
            Method::WorkflowDelete,
            format!("deleted workflow {name} ({})", rec.progress.phase.as_str()),
        )
        .await?;
    remove_ended(state, &rec).await
}

/// Removes the record of ended workflow `rec` and those of its ended experiments (no audit:
/// the caller's business, e.g. a schedule's history limit).
pub async fn remove_ended(state: &State, rec: &WorkflowRecord) -> Result<(), WorkflowError> {
    state
        .store
        .remove_item(ItemTree::Workflows, &rec.name)
        .await?;
    let mut gone = Vec::new();
    for s in rec
        .progress
        .steps
        .iter()
        .filter(|s| !s.experiment.is_empty())
    {
        let ended = state
            .experiments
            .phase(&s.experiment)
            .is_none_or(|p| p.is_terminal());
        if ended && state.experiments.snapshot(&s.experiment).is_none() {
            state.store.remove_experiment(&s.experiment).await?;
            gone.push(s.experiment.clone());
        }
    }
    state.experiments.forget(&gone);
    Ok(())
}

/// At start: every workflow stored running is resumed (its experiments were resumed or ended
/// by the experiments' own recovery, which runs first).
pub async fn recover(state: &Arc<State>) -> Result<usize, StoreError> {
    let stored: Vec<WorkflowRecord> = state.store.items(ItemTree::Workflows).await?;
    let mut n = 0;
    for rec in stored
        .into_iter()
        // Ended but still watching its steady state (a crash during the watch): resumed too.
        .filter(|r| {
            !r.progress.phase.is_terminal()
                || crate::experiments::hypothesis::pending(r.hypothesis.as_ref())
        })
    {
        match parse_workflow(&rec.document, state.policy.max_duration) {
            Ok(spec) => {
                run::launch(state, spec, rec);
                n += 1;
            }
            Err(e) => tracing::error!(workflow = %rec.name, "cannot resume: {e}"),
        }
    }
    Ok(n)
}
