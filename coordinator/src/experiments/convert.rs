//! Experiment records to wire messages (`pb::Experiment`, `pb::Plan`, `pb::ExperimentEvent`).

use faultline_core::experiment::impact::Impact;
use faultline_core::experiment::steady::Hypothesis;
use faultline_core::experiment::{parse_stored_experiment, Phase};
use faultline_core::fault::Target;
use faultline_proto::convert::{self as wire, spec_to_pb};
use faultline_proto::pb;

use super::record::{
    AbortRecord, ExperimentRecord, PlanRecord, Sample, Stat, TargetRecord, TargetState,
    TelemetrySummary,
};

pub fn phase_to_pb(p: Phase) -> pb::ExperimentPhase {
    match p {
        Phase::Pending => pb::ExperimentPhase::Pending,
        Phase::Running => pb::ExperimentPhase::Running,
        Phase::Completed => pb::ExperimentPhase::Completed,
        Phase::Aborted => pb::ExperimentPhase::Aborted,
        Phase::Failed => pb::ExperimentPhase::Failed,
        Phase::Interrupted => pb::ExperimentPhase::Interrupted,
    }
}

fn state_to_pb(s: TargetState) -> pb::FaultState {
    match s {
        TargetState::Pending => pb::FaultState::Unspecified,
        TargetState::Applied => pb::FaultState::Applied,
        TargetState::Reverted => pb::FaultState::Reverted,
        TargetState::Failed => pb::FaultState::Failed,
    }
}

/// `deadline`, `abort`, ... as stored; the wire enum back.
pub fn reason_name(r: i32) -> String {
    faultline_proto::convert::revert_reason_name(r).to_string()
}

fn reason_to_pb(name: &str) -> pb::RevertReason {
    faultline_proto::convert::revert_reason_from_name(name)
}

/// The faults of a stored document, for `Plan.faults`.
fn fault_specs(document: &str) -> Vec<pb::FaultSpec> {
    parse_stored_experiment(document)
        .map(|s| s.faults.iter().map(spec_to_pb).collect())
        .unwrap_or_default()
}

/// How long each fault of a stored document holds (0: the experiment's duration), for
/// `Plan.fault_duration_ms`.
fn fault_duration_ms(document: &str) -> Vec<u64> {
    parse_stored_experiment(document)
        .map(|s| {
            (0..s.faults.len())
                .map(|i| match s.fault_durations.get(i).copied().flatten() {
                    Some(d) => d.as_millis() as u64,
                    None => 0,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn plan_to_pb(p: &PlanRecord, faults: Vec<pb::FaultSpec>) -> pb::Plan {
    plan_with_timing_to_pb(p, faults, Vec::new())
}

/// [`plan_to_pb`] with each fault's own duration (per-fault timing).
pub fn plan_with_timing_to_pb(
    p: &PlanRecord,
    faults: Vec<pb::FaultSpec>,
    fault_duration_ms: Vec<u64>,
) -> pb::Plan {
    pb::Plan {
        fault_duration_ms,
        selected: p
            .selected
            .iter()
            .map(|s| pb::PlannedTarget {
                agent: s.agent.clone(),
                target: s
                    .pod
                    .as_ref()
                    .map(|p| wire::target_to_pb(&Target::Container(p.to_container()))),
                description: s.description.clone(),
            })
            .collect(),
        excluded: p
            .excluded
            .iter()
            .map(|x| pb::ExcludedTarget {
                agent: x.agent.clone(),
                description: x.description.clone(),
                reason: x.reason.clone(),
                pod: x.pod.clone().unwrap_or_default(),
            })
            .collect(),
        faults,
        selection: p.selection.clone(),
        target_kind: p.target_kind().to_string(),
    }
}

fn target_to_pb(t: &TargetRecord) -> pb::TargetResult {
    pb::TargetResult {
        agent: t.agent.clone(),
        fault_id: t.fault_id.clone(),
        state: state_to_pb(t.state) as i32,
        applied_unix_ms: t.applied_unix_ms,
        reverted_unix_ms: t.reverted_unix_ms,
        revert_reason: reason_to_pb(&t.revert_reason) as i32,
        error: t.error.clone(),
        counters: t.counters.clone().into_iter().collect(),
        apply_sent_unix_ms: t.apply_sent_unix_ms,
        revert_sent_unix_ms: t.revert_sent_unix_ms,
        target: t
            .pod
            .as_ref()
            .map(|p| wire::target_to_pb(&Target::Container(p.to_container()))),
    }
}

pub fn sample_to_pb(s: &Sample) -> pb::GuardSample {
    pb::GuardSample {
        guard: s.guard.clone(),
        at_unix_ms: s.at_unix_ms,
        value: s.value.unwrap_or(f64::NAN),
        breached: s.breached,
        error: s.error.clone(),
        detail: s.detail.clone(),
        outcome: s.outcome.clone(),
    }
}

fn abort_to_pb(a: &AbortRecord) -> pb::AbortInfo {
    pb::AbortInfo {
        trigger: a.trigger.clone(),
        by: a.by.clone(),
        reason: a.reason.clone(),
        guard: a.guard.clone(),
        guard_type: a.guard_type.clone(),
        observed_value: a.observed_value.unwrap_or(f64::NAN),
        triggered_unix_ms: a.triggered_unix_ms,
        sent_unix_ms: a.sent_unix_ms,
        last_revert_ack_unix_ms: a.last_revert_ack_unix_ms,
        latency_ms: a.latency_ms.unwrap_or(0),
        unacknowledged: a.unacknowledged,
    }
}

fn stat_to_pb(s: &Stat) -> pb::MetricSummary {
    pb::MetricSummary {
        samples: s.samples,
        min: s.min,
        avg: s.avg(),
        max: s.max,
    }
}

fn telemetry_to_pb(agent: &str, t: &TelemetrySummary) -> pb::TargetTelemetry {
    pb::TargetTelemetry {
        agent: agent.to_string(),
        cpu_busy_ratio: Some(stat_to_pb(&t.cpu_busy_ratio)),
        memory_used_bytes: Some(stat_to_pb(&t.memory_used_bytes)),
        memory_used_ratio: Some(stat_to_pb(&t.memory_used_ratio)),
    }
}

pub fn experiment_to_pb(r: &ExperimentRecord) -> pb::Experiment {
    pb::Experiment {
        id: r.id.clone(),
        name: r.name.clone(),
        phase: phase_to_pb(r.phase) as i32,
        document: r.document.clone(),
        created_by: r.created_by.clone(),
        created_unix_ms: r.created_unix_ms,
        started_unix_ms: r.started_unix_ms,
        ended_unix_ms: r.ended_unix_ms,
        duration_ms: r.duration_ms,
        verdict_reason: r.verdict_reason.clone(),
        targets: r.targets.iter().map(target_to_pb).collect(),
        guard_timeline: r.guard_timeline.iter().map(sample_to_pb).collect(),
        plan: Some(plan_with_timing_to_pb(
            &r.plan,
            fault_specs(&r.document),
            fault_duration_ms(&r.document),
        )),
        abort: r.abort.as_ref().map(abort_to_pb),
        telemetry: r
            .telemetry
            .iter()
            .map(|(a, t)| telemetry_to_pb(a, t))
            .collect(),
        log: r
            .log
            .iter()
            .map(|l| pb::ExperimentLogEntry {
                at_unix_ms: l.at_unix_ms,
                message: l.message.clone(),
            })
            .collect(),
        guards: r
            .guards
            .iter()
            .map(|g| pb::GuardInfo {
                name: g.name.clone(),
                r#type: g.guard_type.clone(),
                description: g.description.clone(),
                on_error: g.on_error.clone(),
            })
            .collect(),
        guard_interval_ms: r.guard_interval_ms,
        on_target_failure: r.on_target_failure.clone(),
        hypothesis: r.hypothesis.as_ref().map(hypothesis_to_pb),
        impact: r.impact.iter().map(impact_to_pb).collect(),
        findings: r.findings.clone(),
    }
}

pub(crate) fn hypothesis_to_pb(h: &Hypothesis) -> pb::Hypothesis {
    pb::Hypothesis {
        verdict: h.verdict.as_str().to_string(),
        reason: h.reason.clone(),
        recovery_within_ms: h.recovery_within_ms,
        recovery_from_unix_ms: h.recovery_from_unix_ms,
        checks: h
            .checks
            .iter()
            .map(|c| pb::SteadyStateCheck {
                name: c.name.clone(),
                r#type: c.check_type.clone(),
                description: c.description.clone(),
                held_before: c.held_before,
                before_value: c.before_value.unwrap_or(f64::NAN),
                before_detail: c.before_detail.clone(),
                recovery_ms: c.recovery_ms,
                last_detail: c.last_detail.clone(),
            })
            .collect(),
    }
}

fn impact_to_pb(i: &Impact) -> pb::Impact {
    pb::Impact {
        name: i.name.clone(),
        source: i.source.clone(),
        r#type: i.kind.clone(),
        before: i.before.unwrap_or(f64::NAN),
        during: i.during.unwrap_or(f64::NAN),
        after: i.after.unwrap_or(f64::NAN),
        deviated: i.deviated,
        deviation_ms: i.deviation_ms,
        recovery_ms: i.recovery_ms,
    }
}

/// Elapsed and remaining milliseconds at `now`.
pub fn timing(r: &ExperimentRecord, now: i64) -> (u64, u64) {
    if r.started_unix_ms <= 0 {
        return (0, r.duration_ms);
    }
    let end = if r.ended_unix_ms > 0 {
        r.ended_unix_ms
    } else {
        now
    };
    let elapsed = u64::try_from(end - r.started_unix_ms).unwrap_or(0);
    let remaining = if r.phase == Phase::Running {
        r.duration_ms.saturating_sub(elapsed)
    } else {
        0
    };
    (elapsed, remaining)
}

/// A Watch event: the experiment trimmed for streaming, with timing and latest guard values.
pub fn event(r: &ExperimentRecord, message: &str, now: i64) -> pb::ExperimentEvent {
    let (elapsed_ms, remaining_ms) = timing(r, now);
    pb::ExperimentEvent {
        at_unix_ms: now,
        experiment: Some(experiment_to_pb(&r.trimmed(20))),
        message: message.to_string(),
        elapsed_ms,
        remaining_ms,
        latest_guards: r.latest_samples().iter().map(sample_to_pb).collect(),
    }
}
