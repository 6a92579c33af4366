//! JSON views of experiments, plans, target results, guard samples and watch events, with enum
//! values by their short names (`"running"`, `"applied"`, `"abort"`).

use faultline_proto::pb;
use serde_json::{json, Value};

use super::{spec, target};
use crate::summary;
use crate::targets;

pub fn experiment(e: &pb::Experiment) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "phase": summary::phase_name(e.phase),
        "document": e.document,
        "created_by": e.created_by,
        "created_unix_ms": e.created_unix_ms,
        "started_unix_ms": e.started_unix_ms,
        "ended_unix_ms": e.ended_unix_ms,
        "duration_ms": e.duration_ms,
        "verdict_reason": e.verdict_reason,
        "targets": e.targets.iter().map(target_result).collect::<Vec<_>>(),
        "guard_timeline": e.guard_timeline.iter().map(guard_sample).collect::<Vec<_>>(),
        "plan": e.plan.as_ref().map(plan),
        "abort": e.abort.as_ref().map(abort),
        "telemetry": e.telemetry.iter().map(telemetry).collect::<Vec<_>>(),
        "log": e.log.iter().map(|l| json!({"at_unix_ms": l.at_unix_ms, "message": l.message})).collect::<Vec<_>>(),
        "guards": e.guards.iter().map(|g| json!({
            "name": g.name,
            "type": g.r#type,
            "description": g.description,
            "on_error": g.on_error,
        })).collect::<Vec<_>>(),
        "guard_interval_ms": e.guard_interval_ms,
        "on_target_failure": e.on_target_failure,
        "hypothesis": e.hypothesis.as_ref().map(hypothesis),
        "impact": e.impact.iter().map(impact).collect::<Vec<_>>(),
        "findings": e.findings,
    })
}

pub fn hypothesis(h: &pb::Hypothesis) -> Value {
    json!({
        "verdict": h.verdict,
        "reason": h.reason,
        "recovery_within_ms": h.recovery_within_ms,
        "recovery_from_unix_ms": h.recovery_from_unix_ms,
        "checks": h.checks.iter().map(|c| json!({
            "name": c.name,
            "type": c.r#type,
            "description": c.description,
            "held_before": c.held_before,
            "before_value": finite(c.before_value),
            "before_detail": c.before_detail,
            "recovery_ms": c.recovery_ms,
            "last_detail": c.last_detail,
        })).collect::<Vec<_>>(),
    })
}

fn impact(i: &pb::Impact) -> Value {
    json!({
        "name": i.name,
        "source": i.source,
        "type": i.r#type,
        "before": finite(i.before),
        "during": finite(i.during),
        "after": finite(i.after),
        "deviated": i.deviated,
        "deviation_ms": i.deviation_ms,
        "recovery_ms": i.recovery_ms,
    })
}

pub fn abort(a: &pb::AbortInfo) -> Value {
    json!({
        "trigger": a.trigger,
        "by": a.by,
        "reason": a.reason,
        "guard": a.guard,
        "guard_type": a.guard_type,
        "observed_value": finite(a.observed_value),
        "triggered_unix_ms": a.triggered_unix_ms,
        "sent_unix_ms": a.sent_unix_ms,
        "last_revert_ack_unix_ms": a.last_revert_ack_unix_ms,
        "latency_ms": a.latency_ms,
        "unacknowledged": a.unacknowledged,
    })
}

fn telemetry(t: &pb::TargetTelemetry) -> Value {
    let m = |s: &Option<pb::MetricSummary>| {
        s.as_ref().map(|s| {
            json!({"samples": s.samples, "min": finite(s.min), "avg": finite(s.avg), "max": finite(s.max)})
        })
    };
    json!({
        "agent": t.agent,
        "cpu_busy_ratio": m(&t.cpu_busy_ratio),
        "memory_used_bytes": m(&t.memory_used_bytes),
        "memory_used_ratio": m(&t.memory_used_ratio),
    })
}

/// NaN and infinities have no JSON form: they become null.
fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

pub fn plan(p: &pb::Plan) -> Value {
    json!({
        "selected": p.selected.iter().map(|s| json!({
            "agent": s.agent,
            "target": s.target.as_ref().map(target),
            "description": s.description,
        })).collect::<Vec<_>>(),
        "excluded": p.excluded.iter().map(|x| json!({
            "agent": x.agent,
            "pod": (!x.pod.is_empty()).then_some(&x.pod),
            "description": x.description,
            "reason": x.reason,
        })).collect::<Vec<_>>(),
        "faults": p.faults.iter().map(spec).collect::<Vec<_>>(),
        "selection": p.selection,
        "target_kind": if targets::plan_kind(p).is_pods() { "pods" } else { "agents" },
    })
}

pub fn target_result(t: &pb::TargetResult) -> Value {
    let counters: serde_json::Map<String, Value> = t
        .counters
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "agent": t.agent,
        "target": t.target.as_ref().map(target),
        "fault_id": t.fault_id,
        "state": summary::state_name(t.state),
        "applied_unix_ms": t.applied_unix_ms,
        "reverted_unix_ms": t.reverted_unix_ms,
        "revert_reason": summary::reason_name(t.revert_reason),
        "apply_sent_unix_ms": t.apply_sent_unix_ms,
        "revert_sent_unix_ms": t.revert_sent_unix_ms,
        "error": t.error,
        "counters": Value::Object(counters),
    })
}

pub fn guard_sample(s: &pb::GuardSample) -> Value {
    json!({
        "guard": s.guard,
        "at_unix_ms": s.at_unix_ms,
        "value": finite(s.value),
        "breached": s.breached,
        "error": s.error,
        "detail": s.detail,
        "outcome": s.outcome,
    })
}

pub fn event(ev: &pb::ExperimentEvent) -> Value {
    json!({
        "at_unix_ms": ev.at_unix_ms,
        "message": ev.message,
        "elapsed_ms": ev.elapsed_ms,
        "remaining_ms": ev.remaining_ms,
        "latest_guards": ev.latest_guards.iter().map(guard_sample).collect::<Vec<_>>(),
        "experiment": ev.experiment.as_ref().map(experiment),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_uses_short_enum_names_and_sorted_counters() {
        let e = pb::Experiment {
            name: "checkout-loss".into(),
            phase: pb::ExperimentPhase::Aborted as i32,
            targets: vec![pb::TargetResult {
                agent: "node-a".into(),
                state: pb::FaultState::Reverted as i32,
                revert_reason: pb::RevertReason::Abort as i32,
                counters: [("b".to_string(), 2u64), ("a".to_string(), 1u64)]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }],
            guard_timeline: vec![pb::GuardSample {
                guard: "error-rate".into(),
                value: f64::NAN,
                error: "no data".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = experiment(&e);
        assert_eq!(v["phase"], "aborted");
        assert_eq!(v["targets"][0]["state"], "reverted");
        assert_eq!(v["targets"][0]["revert_reason"], "abort");
        assert_eq!(
            serde_json::to_string(&v["targets"][0]["counters"]).expect("json"),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(v["guard_timeline"][0]["value"], Value::Null);
        assert_eq!(v["plan"], Value::Null);
        assert_eq!(v["targets"][0]["target"], Value::Null);
    }

    #[test]
    fn pod_targets_carry_the_pod_and_the_kind() {
        use crate::commands::experiments::fixture;
        let v = experiment(&fixture::pods_running());
        assert_eq!(v["plan"]["target_kind"], "pods");
        assert_eq!(v["plan"]["excluded"][1]["pod"], "shop/checkout-pqrst");
        assert_eq!(v["plan"]["excluded"][1]["agent"], "-");
        let pod = &v["targets"][1]["target"]["container"];
        assert_eq!(pod["pod_namespace"], "shop");
        assert_eq!(pod["pod_name"], "checkout-fghij");
        assert_eq!(v["targets"][1]["agent"], "node-b");
        let v = experiment(&fixture::running());
        assert_eq!(v["plan"]["target_kind"], "agents");
        assert_eq!(v["plan"]["excluded"][0]["pod"], Value::Null);
    }
}
