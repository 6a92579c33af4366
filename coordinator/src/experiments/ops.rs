//! What can be done to experiments — create (with dry run), start, abort, read — plus the
//! fleet-wide halt and the graceful shutdown, with errors that say why.
//!
//! Every mutation writes its audit entry, durably, before it changes anything, and is refused
//! (`UNAVAILABLE`) when the entry cannot be written. The one exception is the abort of a
//! running experiment: reverting faults is never held up by the audit log, so that abort is
//! carried out first and audited after; when that entry cannot be written the caller gets an
//! error saying the experiment was aborted but not audited.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{parse_experiment, Phase, Refusal};
use faultline_core::fault::SpecError;
use faultline_core::Identity;
use tokio::sync::oneshot;
use tonic::Status;

use super::planning;
use super::record::ExperimentRecord;
use super::run::{self, Control, Trigger, SHUTDOWN_REVERT_WAIT};
use crate::authz::Method;
use crate::kube::KubeError;
use crate::state::{now_ms, State, Unaudited};
use crate::store::StoreError;

/// How long Abort waits for the run to confirm RevertFault went out.
const ABORT_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Invalid(SpecError),
    #[error("the fleet is halted (by {by}: {reason}); new experiments are refused until an admin resumes it (faultctl resume)")]
    Halted { by: String, reason: String },
    #[error("{0}")]
    Refused(Refusal),
    #[error("name: experiment {0:?} does not exist")]
    NotFound(String),
    #[error(
        "metadata.name: experiment {name:?} already exists (phase {phase}); choose another name"
    )]
    Exists { name: String, phase: Phase },
    #[error("experiment {name:?} is {phase}: {what}")]
    WrongPhase {
        name: String,
        phase: Phase,
        what: &'static str,
    },
    #[error("{field}: {message}")]
    Argument {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the run of experiment {0:?} did not answer in time")]
    NoAnswer(String),
    #[error("spec.targets.pods: pod targets are not available: {0}")]
    NoKubernetes(String),
    #[error("spec.targets.pods: could not resolve the pods: {0}")]
    Kubernetes(KubeError),
    /// Refused: its audit entry could not be written; nothing changed.
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
    /// Carried out (a safety action), but its audit entry could not be written.
    #[error("{done}, but the audit log could not be written: {source}")]
    DoneUnaudited { done: String, source: StoreError },
}

impl OpError {
    /// True when the error is about the audit log itself (there is no point auditing it).
    pub fn is_audit(&self) -> bool {
        matches!(self, OpError::Unaudited(_) | OpError::DoneUnaudited { .. })
    }
}

impl OpError {
    /// The one conversion into a gRPC status.
    pub fn status(&self) -> Status {
        let m = self.to_string();
        match self {
            OpError::Invalid(_) | OpError::Argument { .. } => Status::invalid_argument(m),
            OpError::Halted { .. }
            | OpError::Refused(_)
            | OpError::WrongPhase { .. }
            | OpError::NoKubernetes(_) => Status::failed_precondition(m),
            OpError::Kubernetes(_) => Status::unavailable(m),
            OpError::NotFound(_) => Status::not_found(m),
            OpError::Exists { .. } => Status::already_exists(m),
            OpError::Store(_) => Status::internal(m),
            OpError::NoAnswer(_) => Status::unavailable(m),
            OpError::Unaudited(e) => e.status(),
            OpError::DoneUnaudited { .. } => Status::internal(m),
        }
    }
}

/// The answer to Create.
#[derive(Debug)]
pub struct Created {
    pub record: ExperimentRecord,
    /// False for a dry run.
    pub stored: bool,
}

/// The audit line of an experiment that is (about to be) in `phase`.
pub fn summary(rec: &ExperimentRecord, phase: Phase) -> String {
    format!(
        "{} is {}: {} fault(s) on {}, {} excluded",
        rec.name,
        phase,
        rec.plan.faults.len(),
        rec.plan.targets_phrase(),
        rec.plan.excluded.len()
    )
}

fn halted(state: &State) -> Result<(), OpError> {
    match state.halted() {
        Some(h) => Err(OpError::Halted {
            by: h.by,
            reason: h.reason,
        }),
        None => Ok(()),
    }
}

pub async fn create(
    state: &Arc<State>,
    identity: &Identity,
    document: &str,
    dry_run: bool,
    start: bool,
) -> Result<Created, OpError> {
    let spec = parse_experiment(document, state.policy.max_duration).map_err(OpError::Invalid)?;
    if !dry_run {
        halted(state)?;
    }
    let _planning = state.experiments.plan_lock.lock().await;
    if !dry_run {
        let known = state.experiments.phase(&spec.name);
        let known = match known {
            Some(p) => Some(p),
            None => state.store.experiment(&spec.name).await?.map(|r| r.phase),
        };
        if let Some(phase) = known {
            return Err(OpError::Exists {
                name: spec.name.clone(),
                phase,
            });
        }
    }
    let mut plan = planning::plan_now(state, &spec).await?;
    let now = now_ms();
    if dry_run {
        if let Some(h) = state.halted() {
            plan.selection = format!(
                "the fleet is halted (by {}: {}), so a real run is refused until resumed; {}",
                h.by, h.reason, plan.selection
            );
        }
    }
    let by = identity.to_string();
    let mut rec = planning::new_record(&spec, document, &by, now, plan);
    if dry_run {
        return Ok(Created {
            record: rec,
            stored: false,
        });
    }
    rec.log(now, format!("created by {by}: {}", rec.plan.selection));
    let phase = if start {
        Phase::Running
    } else {
        Phase::Pending
    };
    state
        .audit_first(
            identity,
            Method::ExperimentCreate,
            format!("created {}", summary(&rec, phase)),
        )
        .await?;
    state.store.put_experiment_durable(&rec).await?;
    state.experiments.set_phase(&rec.name, Phase::Pending);
    if !start {
        return Ok(Created {
            record: rec,
            stored: true,
        });
    }
    let snapshot = run::start(state, spec, rec, &by).await?;
    Ok(Created {
        record: (*snapshot.record).clone(),
        stored: true,
    })
}

pub async fn start(
    state: &Arc<State>,
    identity: &Identity,
    name: &str,
) -> Result<ExperimentRecord, OpError> {
    halted(state)?;
    let _planning = state.experiments.plan_lock.lock().await;
    let mut rec = state
        .store
        .experiment(name)
        .await?
        .ok_or_else(|| OpError::NotFound(name.to_string()))?;
    if rec.phase != Phase::Pending {
        return Err(OpError::WrongPhase {
            name: name.to_string(),
            phase: rec.phase,
            what: "only a pending experiment can be started",
        });
    }
    let spec =
        parse_experiment(&rec.document, state.policy.max_duration).map_err(OpError::Invalid)?;
    rec.plan = planning::plan_now(state, &spec).await?;
    rec.log(
        now_ms(),
        format!("planned again at start: {}", rec.plan.selection),
    );
    state
        .audit_first(
            identity,
            Method::ExperimentStart,
            format!("started {}", summary(&rec, Phase::Running)),
        )
        .await?;
    let snapshot = run::start(state, spec, rec, &identity.to_string()).await?;
    Ok((*snapshot.record).clone())
}

pub async fn abort(
    state: &Arc<State>,
    identity: &Identity,
    name: &str,
    reason: &str,
) -> Result<ExperimentRecord, OpError> {
    let reason = match reason.trim() {
        "" => format!("aborted by {identity}"),
        r => format!("aborted by {identity}: {r}"),
    };
    if let Some(control) = state.experiments.control(name) {
        let (tx, rx) = oneshot::channel();
        let sent = control
            .send(Control::Abort {
                trigger: Trigger::Api,
                by: identity.to_string(),
                reason: reason.clone(),
                reply: Some(tx),
            })
            .await;
        if sent.is_ok() {
            return match tokio::time::timeout(ABORT_REPLY_TIMEOUT, rx).await {
                Ok(Ok((rec, true))) => {
                    // Reverting came first; now the audit entry, which cannot undo it.
                    let detail = format!("aborted {}: {}", rec.name, rec.verdict_reason);
                    let audited = state
                        .audit_durable(identity, Method::ExperimentAbort.name(), detail, true)
                        .await;
                    match audited {
                        Ok(()) => Ok(rec),
                        Err(source) => Err(OpError::DoneUnaudited {
                            done: format!(
                                "experiment {name:?} was aborted (RevertFault sent to its targets)"
                            ),
                            source,
                        }),
                    }
                }
                Ok(Ok((rec, false))) => Err(OpError::WrongPhase {
                    name: name.to_string(),
                    phase: rec.phase,
                    what: "it has ended already (its reverts are being acknowledged)",
                }),
                _ => Err(OpError::NoAnswer(name.to_string())),
            };
        }
    }
    let _planning = state.experiments.plan_lock.lock().await;
    let mut rec = state
        .store
        .experiment(name)
        .await?
        .ok_or_else(|| OpError::NotFound(name.to_string()))?;
    if rec.phase != Phase::Pending {
        return Err(OpError::WrongPhase {
            name: name.to_string(),
            phase: rec.phase,
            what: "it has ended already",
        });
    }
    let now = now_ms();
    rec.phase = Phase::Aborted;
    rec.ended_unix_ms = now;
    rec.verdict_reason = format!("aborted before it started: {reason}");
    rec.log(now, rec.verdict_reason.clone());
    // Nothing runs yet, so nothing to revert: an ordinary mutation, audited first.
    state
        .audit_first(
            identity,
            Method::ExperimentAbort,
            format!("aborted {}: {}", rec.name, rec.verdict_reason),
        )
        .await?;
    state.store.put_experiment_durable(&rec).await?;
    state.experiments.set_phase(name, Phase::Aborted);
    Ok(rec)
}

/// Aborts every running experiment (Fleet.HaltAll); returns how many.
pub async fn abort_all(state: &State, trigger: Trigger, by: &str, reason: &str) -> u32 {
    let waits = state
        .experiments
        .controls()
        .into_iter()
        .map(|(name, control)| async move {
            if state.experiments.phase(&name) != Some(Phase::Running) {
                return false;
            }
            let (tx, rx) = oneshot::channel();
            let msg = Control::Abort {
                trigger,
                by: by.to_string(),
                reason: reason.to_string(),
                reply: Some(tx),
            };
            if control.send(msg).await.is_err() {
                return false;
            }
            matches!(
                tokio::time::timeout(ABORT_REPLY_TIMEOUT, rx).await,
                Ok(Ok((_, true)))
            )
        });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .filter(|a| *a)
        .count() as u32
}

/// Graceful shutdown: aborts every running experiment (RevertFault SHUTDOWN) and waits a
/// little for the runs to record their end.
pub async fn shutdown_all(state: &State) {
    let n = abort_all(
        state,
        Trigger::Shutdown,
        "coordinator",
        "the coordinator is shutting down",
    )
    .await;
    if n > 0 {
        tracing::warn!(
            "aborted {n} running experiment(s) because the coordinator is shutting down"
        );
    }
    let until = tokio::time::Instant::now() + SHUTDOWN_REVERT_WAIT + Duration::from_secs(1);
    while !state.experiments.live_names().is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The latest record of `name`: the live one while it runs, else the stored one.
pub async fn get(state: &State, name: &str) -> Result<Arc<ExperimentRecord>, OpError> {
    if let Some(s) = state.experiments.snapshot(name) {
        return Ok(s.record);
    }
    state
        .store
        .experiment(name)
        .await?
        .map(Arc::new)
        .ok_or_else(|| OpError::NotFound(name.to_string()))
}

/// Every experiment (live ones as they are now), optionally of one phase, newest first.
pub async fn list(state: &State, phase: &str) -> Result<Vec<Arc<ExperimentRecord>>, OpError> {
    let phase = match phase.trim() {
        "" => None,
        p => Some(p.parse::<Phase>().map_err(|message| OpError::Argument {
            field: "phase",
            message,
        })?),
    };
    let mut out: Vec<Arc<ExperimentRecord>> = state
        .store
        .experiments()
        .await?
        .into_iter()
        .map(|r| match state.experiments.snapshot(&r.name) {
            Some(s) => s.record,
            None => Arc::new(r),
        })
        .filter(|r| phase.is_none_or(|p| r.phase == p))
        .collect();
    out.sort_by(|a, b| {
        b.created_unix_ms
            .cmp(&a.created_unix_ms)
            .then(a.name.cmp(&b.name))
    });
    Ok(out)
}
