//! A workflow across a graceful coordinator stop. The stop first freezes the running
//! workflows (no step starts or ends from then on), then aborts every running experiment
//! (trigger `shutdown`: RevertFault to every target, as for any experiment, so no fault is
//! left to its lease), and a workflow step's experiment is no exception. The workflow itself
//! is not failed by that: its step stays `running` in the stored record, and the coordinator
//! that starts next runs the rest of the step's experiment (the duration it had left) under
//! the same name and the step's own deadline, as an experiment resumed after a crash honours
//! its remaining duration. It waits for the agents of the stopped experiment to reconnect
//! (up to two leases) before it plans the rest.

use std::time::Duration;

use faultline_core::experiment::parse_stored_experiment;
use faultline_core::workflow::{template, Action, SpecValue, Step, StepAction};

use super::run::Run;
use crate::experiments::record::ExperimentRecord;
use crate::runs;
use crate::state::now_ms;

/// Ended by the coordinator's graceful stop (not by its own course, a guard or a caller).
pub(super) fn stopped_by_shutdown(r: &ExperimentRecord) -> bool {
    r.abort.as_ref().is_some_and(|a| a.trigger == "shutdown")
}

/// What the stopped experiment had left of `duration`: all of it when nothing was applied
/// yet (stopped while planning or checking its steady state), else what its faults had not
/// run yet.
fn remaining(duration: Duration, r: &ExperimentRecord) -> Duration {
    let first = r
        .targets
        .iter()
        .map(|t| t.applied_unix_ms)
        .filter(|t| *t > 0)
        .min();
    match first {
        None => duration,
        Some(_) if r.started_unix_ms <= 0 => duration,
        Some(_) => {
            let ran = (r.ended_unix_ms - r.started_unix_ms).max(0);
            duration.saturating_sub(Duration::from_millis(ran as u64))
        }
    }
}

fn find<'a>(steps: &'a [Step], name: &str) -> Option<&'a SpecValue> {
    steps.iter().find_map(|s| match &s.action {
        StepAction::Experiment(v) if s.name == name => Some(v),
        StepAction::Parallel(children) => find(children, name),
        _ => None,
    })
}

impl Run {
    /// `step`'s experiment `r` was aborted by a graceful stop. While this coordinator is the
    /// one stopping, nothing happens (`None`: the step stays running, the record stored so).
    /// After a restart, the old record is removed (its course is kept in the workflow's log)
    /// and the rest of the experiment is started under the same name.
    pub(super) async fn after_graceful_stop(
        &mut self,
        step: &str,
        r: &ExperimentRecord,
    ) -> Option<Vec<Action>> {
        if r.ended_unix_ms >= self.launched_unix_ms {
            return None;
        }
        let now = now_ms();
        // Its agents reconnect within their lease; planning before they are back would find
        // no target. Past two leases, whoever is back is planned as any experiment is.
        let back = r
            .agents()
            .iter()
            .all(|a| self.state.registry.get(a).is_some_and(|e| e.connected));
        let waited = now - self.launched_unix_ms;
        if !back && waited < 2 * i64::try_from(self.state.lease_ms()).unwrap_or(i64::MAX / 4) {
            return None;
        }
        let Some(spec) = find(&self.spec.steps, step).cloned() else {
            return Some(self.rec.progress.experiment_ended(
                &self.spec,
                step,
                r.phase,
                "its step is not in the workflow's document",
                now,
            ));
        };
        let duration = parse_stored_experiment(&r.document)
            .map(|s| s.duration)
            .unwrap_or_default();
        let left = remaining(duration, r);
        self.rec.log(
            now,
            format!(
                "step {step}: experiment {} was stopped by the coordinator's graceful stop after {:.1} s (its faults reverted: {}); running the {:.1} s it had left",
                r.name,
                duration.saturating_sub(left).as_secs_f64(),
                r.verdict_reason,
                left.as_secs_f64().max(1.0),
            ),
        );
        if let Err(e) = runs::delete_experiment(&self.state, &self.identity, &r.name).await {
            let why = format!(
                "its experiment was stopped by a coordinator stop and cannot be run again: {e}"
            );
            return Some(
                self.rec
                    .progress
                    .experiment_ended(&self.spec, step, r.phase, &why, now),
            );
        }
        self.completed.remove(step);
        let rest = template::with_duration(&spec, left);
        Some(
            self.start(vec![(step.to_string(), r.name.clone(), rest)])
                .await,
        )
    }
}
