//! Instant steps: an experiment step whose faults are all one-shot kills (a process kill, a
//! container-kill or pod-kill without `interval`) is done once every kill was carried out, so
//! the step completes then instead of waiting out the experiment's duration (Chaos Mesh
//! #4539, #3345: workflows that stall after an instant step).
//!
//! A pod-kill is carried out by the coordinator, not by an agent: it is done when every
//! planned pod's delete was answered (deleted, gone or failed). The experiment then ends
//! `completed`, and its end still watches the replacements become Ready (the run is over, and
//! the step with it, once they are recorded or that wait has passed).

use std::collections::BTreeSet;

use faultline_core::experiment::ExperimentSpec;
use faultline_core::fault::{Fault, ProcessAction};

use super::run::Run;
use crate::experiments::record::{ExperimentRecord, TargetState};
use crate::experiments::run::Control as ExperimentControl;

/// Every fault of the experiment is a one-shot kill: nothing stays injected once it was
/// carried out (a process kill, or a container-kill or pod-kill without `interval`).
pub fn is_instant(spec: &ExperimentSpec) -> bool {
    spec.faults.iter().all(|f| match &f.fault {
        Fault::Process(p) => matches!(p.action, ProcessAction::Kill { .. }),
        Fault::ContainerKill(k) => k.interval.is_none(),
        Fault::PodKill(k) => k.interval.is_none(),
        _ => false,
    })
}

/// Every kill of an instant experiment was carried out: each agent target answered, and
/// each pod-kill fault has a first-round answer for every planned pod. False while nothing
/// at all was planned.
pub fn carried_out(spec: &ExperimentSpec, rec: &ExperimentRecord) -> bool {
    let pod_faults: Vec<usize> = spec
        .faults
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.fault, Fault::PodKill(_)))
        .map(|(i, _)| i)
        .collect();
    let planned: BTreeSet<&str> = rec
        .plan
        .selected
        .iter()
        .filter_map(|s| s.pod.as_ref().map(|p| p.uid.as_str()))
        .collect();
    if rec.targets.is_empty() && (pod_faults.is_empty() || planned.is_empty()) {
        return false;
    }
    let answered = rec.targets.iter().all(|t| t.state != TargetState::Pending);
    let deleted = pod_faults.iter().all(|i| {
        planned.iter().all(|uid| {
            rec.pod_kills
                .iter()
                .any(|k| k.fault_index == *i && k.round == 0 && k.uid == *uid)
        })
    });
    answered && deleted
}

impl Run {
    /// Tells an instant step's experiment to complete once every kill was carried out.
    pub(super) async fn complete_if_instant(&mut self, step: &str, run: &str) {
        let Some(snap) = self.state.experiments.snapshot(run) else {
            return;
        };
        let Ok(spec) = faultline_core::experiment::parse_stored_experiment(&snap.record.document)
        else {
            return;
        };
        if !is_instant(&spec) || !carried_out(&spec, &snap.record) {
            return;
        }
        if let Some(control) = self.state.experiments.control(run) {
            let reason = format!(
                "instant step {step} of workflow {}: every kill was carried out",
                self.rec.name
            );
            if control
                .send(ExperimentControl::Complete { reason })
                .await
                .is_ok()
            {
                self.completed.insert(step.to_string());
            }
        }
    }
}
