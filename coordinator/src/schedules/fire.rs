//! One fire of a schedule: the concurrency policy against its runs still in progress, the
//! run itself (an ordinary experiment or workflow, under the schedule creator's identity, so
//! policy, blast radius and the audit log apply as to any other), and the history limit.

use std::sync::Arc;

use faultline_core::schedule::{run_name, ConcurrencyPolicy, RunTemplate, ScheduleSpec};
use faultline_core::workflow::template;

use super::{RunRef, ScheduleRecord};
use crate::experiments::ops as experiments;
use crate::runs::{self, RunEvent};
use crate::state::{now_ms, State};
use crate::workflows::ops as workflows;

/// How long Replace waits for the replaced runs' reverts before it starts the new run (the
/// experiments' own wait for revert acknowledgements is as long).
const REPLACE_WAIT: std::time::Duration = crate::experiments::run::REVERT_WAIT;

/// True while run `r` is not over (an experiment still reverting counts).
pub fn is_active(state: &State, r: &RunRef) -> bool {
    match r.kind.as_str() {
        "workflow" => state.workflows.is_live(&r.name),
        _ => {
            state
                .experiments
                .phase(&r.name)
                .is_some_and(|p| !p.is_terminal())
                || state.experiments.snapshot(&r.name).is_some()
        }
    }
}

/// Where run `r` is now, for people.
pub async fn phase_of(state: &State, r: &RunRef) -> String {
    match r.kind.as_str() {
        "workflow" => match workflows::get(state, &r.name).await {
            Ok(w) => w.progress.phase.as_str().to_string(),
            Err(_) => "gone".into(),
        },
        _ => match state.experiments.phase(&r.name) {
            Some(p) => p.as_str().to_string(),
            None => "gone".into(),
        },
    }
}

/// Fires `rec` for `fire_ms` (`trigger`: `schedule` or `manual`); returns the run started, or
/// `None` when the fire was skipped (recorded in `rec`). The caller stores `rec`.
pub async fn fire(
    state: &Arc<State>,
    rec: &mut ScheduleRecord,
    spec: &ScheduleSpec,
    fire_ms: i64,
    trigger: &str,
) -> Option<String> {
    let now = now_ms();
    if trigger == "schedule" {
        let late = (now - fire_ms).max(0) as f64 / 1000.0;
        runs::schedule_lateness(late);
    }
    let identity = runs::acting_as(&rec.created_by);
    let active: Vec<RunRef> = rec
        .runs
        .iter()
        .filter(|r| is_active(state, r))
        .cloned()
        .collect();
    if !active.is_empty() {
        let names: Vec<&str> = active.iter().map(|r| r.name.as_str()).collect();
        match spec.concurrency {
            ConcurrencyPolicy::Forbid => {
                rec.skip(
                    fire_ms,
                    now,
                    format!(
                        "forbidden: {} still running (concurrencyPolicy: Forbid)",
                        names.join(", ")
                    ),
                );
                return None;
            }
            ConcurrencyPolicy::Allow => {}
            ConcurrencyPolicy::Replace => {
                let reason = format!("replaced by the next run of schedule {}", rec.name);
                for r in &active {
                    let done = match r.kind.as_str() {
                        "workflow" => workflows::abort(state, &identity, &r.name, &reason)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        _ => experiments::abort(state, &identity, &r.name, &reason)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    };
                    if let Err(e) = done {
                        tracing::warn!(schedule = %rec.name, run = %r.name, "replace: {e}");
                    }
                }
                // The replaced runs' agents are under fault until their reverts are
                // acknowledged (milliseconds): the new run is planned after that.
                let until = tokio::time::Instant::now() + REPLACE_WAIT;
                while active.iter().any(|r| is_active(state, r))
                    && tokio::time::Instant::now() < until
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
    let run = run_name(&rec.name, fire_ms);
    let started = match &spec.run {
        RunTemplate::Experiment(v) => {
            let doc = template::document("Experiment", &run, v);
            experiments::create(state, &identity, &doc, false, true)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        RunTemplate::Workflow(v) => {
            workflows::create_for_schedule(state, &identity, &run, v, &rec.name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = started {
        rec.skip(fire_ms, now_ms(), format!("refused: {e}"));
        return None;
    }
    runs::schedule_fire("run");
    if spec.run.kind() == "experiment" {
        runs::emit(
            state,
            &RunEvent::Started {
                kind: "experiment",
                name: run.clone(),
                by: format!("schedule {}", rec.name),
            },
        );
    }
    rec.runs.push(RunRef {
        name: run.clone(),
        kind: spec.run.kind().to_string(),
        fire_unix_ms: fire_ms,
        started_unix_ms: now_ms(),
        trigger: trigger.to_string(),
    });
    rec.runs_total += 1;
    rec.last_fire_unix_ms = fire_ms;
    prune_history(state, rec, spec).await;
    Some(run)
}

/// Beyond `historyLimit` runs, the oldest ended ones go, records and all.
async fn prune_history(state: &State, rec: &mut ScheduleRecord, spec: &ScheduleSpec) {
    let limit = spec.history_limit as usize;
    while rec.runs.len() > limit {
        let Some(i) = rec.runs.iter().position(|r| !is_active(state, r)) else {
            return;
        };
        let r = rec.runs.remove(i);
        let removed = match r.kind.as_str() {
            "workflow" => match workflows::get(state, &r.name).await {
                Ok(w) => workflows::remove_ended(state, &w)
                    .await
                    .map_err(|e| e.to_string()),
                Err(_) => Ok(()),
            },
            _ => state
                .store
                .remove_experiment(&r.name)
                .await
                .map(|_| state.experiments.forget(std::slice::from_ref(&r.name)))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = removed {
            tracing::warn!(schedule = %rec.name, run = %r.name, "history limit: {e}");
        }
    }
}
