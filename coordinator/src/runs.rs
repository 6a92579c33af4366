//! What the continuous-chaos modules share about their runs (experiments and workflows
//! started by a schedule or a workflow): the one place a run's start and end are announced
//! ([`emit`]; notifications and workflow-level checks hook in here), the identity runs act
//! under, and the removal of an ended run's record.

use faultline_core::experiment::Phase;
use faultline_core::{Identity, Role};

use crate::experiments::ops::OpError;
use crate::notify::{EventKind, RunEvent as NotifyEvent, RunKind};
use crate::state::State;

pub const RUNS_STARTED: &str = "faultline_coordinator_runs_started_total";
pub const RUNS_ENDED: &str = "faultline_coordinator_runs_ended_total";
pub const SCHEDULE_FIRES: &str = "faultline_coordinator_schedule_fires_total";
pub const SCHEDULE_LATENESS: &str = "faultline_coordinator_schedule_fire_lateness_seconds";

/// Registers the HELP text of the run metrics.
pub fn describe() {
    metrics::describe_counter!(
        RUNS_STARTED,
        "Runs started by schedules and workflows, by kind (experiment, workflow)."
    );
    metrics::describe_counter!(
        RUNS_ENDED,
        "Runs of schedules and workflows that ended, by kind and final phase."
    );
    metrics::describe_counter!(
        SCHEDULE_FIRES,
        "Schedule fire times, by outcome: run, or skipped (forbidden, missed, refused)."
    );
    metrics::describe_histogram!(
        SCHEDULE_LATENESS,
        metrics::Unit::Seconds,
        "How late a scheduled run was started after its fire time."
    );
}

/// A schedule's fire time ran (`run`) or was skipped (`skipped`).
pub fn schedule_fire(outcome: &'static str) {
    metrics::counter!(SCHEDULE_FIRES, "outcome" => outcome).increment(1);
}

/// A scheduled fire was handled `seconds` after its fire time.
pub fn schedule_lateness(seconds: f64) {
    metrics::histogram!(SCHEDULE_LATENESS).record(seconds);
}

/// A run of a schedule or workflow started or ended.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Started {
        /// `experiment` or `workflow`.
        kind: &'static str,
        name: String,
        /// What started it: `schedule <name>`, `workflow <name>`, or the caller.
        by: String,
    },
    Ended {
        kind: &'static str,
        name: String,
        /// The run's final phase (`completed`, `aborted`, `succeeded`, ...).
        phase: String,
        reason: String,
        /// Its steady-state hypothesis' verdict (`passed`, `failed`), `none` without one.
        verdict: String,
    },
}

/// Announces a run's start or end: logged and counted here, once, and a workflow's start and
/// end are sent to the notification destinations (an experiment's run notifies for itself,
/// whatever started it). Never blocks.
pub fn emit(state: &State, event: &RunEvent) {
    match event {
        RunEvent::Started { kind, name, by } => {
            tracing::info!(kind, run = %name, by = %by, "run started");
            metrics::counter!(RUNS_STARTED, "kind" => *kind).increment(1);
            if *kind == "workflow" {
                notify_workflow(
                    state,
                    EventKind::Started,
                    name,
                    "running",
                    "none",
                    format!("workflow {name} started by {by}"),
                );
            }
        }
        RunEvent::Ended {
            kind,
            name,
            phase,
            reason,
            verdict,
        } => {
            tracing::info!(kind, run = %name, phase = %phase, "run ended: {reason}");
            metrics::counter!(RUNS_ENDED, "kind" => *kind, "phase" => phase.clone()).increment(1);
            let event = match phase.as_str() {
                "succeeded" | "completed" => Some(EventKind::Completed),
                "aborted" => Some(EventKind::Aborted),
                "failed" | "interrupted" => Some(EventKind::Failed),
                _ => None,
            };
            if let (true, Some(event)) = (*kind == "workflow", event) {
                let mut summary = format!("workflow {name} {phase}: {reason}");
                if verdict != "none" {
                    summary.push_str(&format!("; steady-state hypothesis {verdict}"));
                }
                notify_workflow(state, event, name, phase, verdict, summary);
            }
        }
    }
}

/// A workflow's own steady-state hypothesis failed (sent beside its end, like an
/// experiment's).
pub fn workflow_hypothesis_failed(state: &State, name: &str, phase: &str, reason: &str) {
    notify_workflow(
        state,
        EventKind::HypothesisFailed,
        name,
        phase,
        "failed",
        format!("workflow {name}: steady-state hypothesis failed: {reason}"),
    );
}

fn notify_workflow(
    state: &State,
    event: EventKind,
    name: &str,
    phase: &str,
    verdict: &str,
    summary: String,
) {
    state.notifier.emit(NotifyEvent {
        event,
        kind: RunKind::Workflow,
        name: name.to_string(),
        phase: phase.to_string(),
        verdict: verdict.to_string(),
        summary,
        at_unix_ms: crate::state::now_ms(),
    });
}

/// The identity a schedule's or workflow's runs act under: the one that created it (as
/// stored, `<role>/<name>`), so its runs are authorized and audited as that caller.
pub fn acting_as(created_by: &str) -> Identity {
    match created_by.split_once('/') {
        Some((role, name)) => Identity::new(role.parse().unwrap_or(Role::Operator), name),
        None => Identity::new(Role::Operator, created_by),
    }
}

/// Removes the record of experiment `name`, which must have ended (audited first).
pub async fn delete_experiment(
    state: &State,
    identity: &Identity,
    name: &str,
) -> Result<(), OpError> {
    let _planning = state.experiments.plan_lock.lock().await;
    let rec = state
        .store
        .experiment(name)
        .await?
        .ok_or_else(|| OpError::NotFound(name.to_string()))?;
    let live = state.experiments.snapshot(name).is_some();
    if !rec.phase.is_terminal() || live {
        return Err(OpError::WrongPhase {
            name: name.to_string(),
            phase: if live { Phase::Running } else { rec.phase },
            what: "only an experiment that has ended can be deleted; abort it first (faultctl abort experiment NAME)",
        });
    }
    state
        .audit_first(
            identity,
            crate::authz::Method::ExperimentDelete,
            format!("deleted experiment {name} ({})", rec.phase),
        )
        .await?;
    state.store.remove_experiment(name).await?;
    state.experiments.forget(&[name.to_string()]);
    Ok(())
}
