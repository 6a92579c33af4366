//! The run's notifications (see [`crate::notify`]): started when it starts, aborted or failed
//! the moment its end is decided (after RevertFault went out; emitting never waits), and
//! completed, hypothesis failed or recovered once the run is over.

use faultline_core::experiment::steady::HypothesisVerdict;
use faultline_core::experiment::Phase;

use super::Run;
use crate::experiments::record::ExperimentRecord;
use crate::notify::{EventKind, RunEvent, RunKind};
use crate::state::{now_ms, State};

/// The event `event` about the experiment `rec`.
pub fn run_event(rec: &ExperimentRecord, event: EventKind, summary: String) -> RunEvent {
    RunEvent {
        event,
        kind: RunKind::Experiment,
        name: rec.name.clone(),
        phase: rec.phase.to_string(),
        verdict: rec
            .hypothesis
            .as_ref()
            .map_or("none", |h| h.verdict.as_str())
            .to_string(),
        summary,
        at_unix_ms: now_ms(),
    }
}

/// The experiment started.
pub fn started(state: &State, rec: &ExperimentRecord, by: &str) {
    let summary = format!(
        "experiment {} started by {by} on {}",
        rec.name,
        rec.plan.targets_phrase()
    );
    state
        .notifier
        .emit(run_event(rec, EventKind::Started, summary));
}

impl Run {
    /// The end was decided: aborted or failed (completion waits for [`Run::notify_finish`]).
    pub(super) fn notify_end(&self) {
        let event = match self.rec.phase {
            Phase::Aborted => EventKind::Aborted,
            Phase::Failed => EventKind::Failed,
            _ => return,
        };
        let summary = format!("experiment {} {}", self.rec.name, self.rec.verdict_reason);
        self.state
            .notifier
            .emit(run_event(&self.rec, event, summary));
    }

    /// The run is over: completed, the hypothesis failed, or, after an abort or failure, the
    /// steady state is back (every fault reverted and the hypothesis, if any, passed).
    pub(super) fn notify_finish(&self) {
        let rec = &self.rec;
        let verdict = rec.hypothesis.as_ref().map(|h| h.verdict);
        if rec.phase == Phase::Completed {
            let summary = format!("experiment {} {}", rec.name, rec.verdict_reason);
            self.state
                .notifier
                .emit(run_event(rec, EventKind::Completed, summary));
        }
        if verdict == Some(HypothesisVerdict::Failed) {
            let reason = rec.hypothesis.as_ref().map_or("", |h| h.reason.as_str());
            let summary = format!(
                "experiment {}: steady-state hypothesis failed: {reason}",
                rec.name
            );
            self.state
                .notifier
                .emit(run_event(rec, EventKind::HypothesisFailed, summary));
        } else if matches!(rec.phase, Phase::Aborted | Phase::Failed) && rec.settled() {
            let summary = match verdict {
                Some(_) => format!(
                    "experiment {}: every fault reverted and the steady state holds again",
                    rec.name
                ),
                None => format!("experiment {}: every fault reverted", rec.name),
            };
            self.state
                .notifier
                .emit(run_event(rec, EventKind::Recovered, summary));
        }
    }
}
