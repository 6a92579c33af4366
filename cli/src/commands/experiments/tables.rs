//! The tables of the `describe experiment` page: per-target results, guard statistics and
//! telemetry summaries.

use faultline_proto::pb;

use super::render::{clock_or_dash, dash};
use crate::format;
use crate::summary;
use crate::table::{Align, Table};
use crate::targets::{self, Kind};

/// One row per (agent, fault), or for pod targets per (pod or container, fault) with the
/// pod's node; at most `max_rows` rows.
pub fn targets_table(targets: &[pb::TargetResult], kind: Kind, max_rows: usize) -> String {
    const AFTER: [&str; 7] = [
        "FAULT", "STATE", "APPLIED", "REVERTED", "REASON", "COUNTERS", "ERROR",
    ];
    let who: &[&str] = if kind.is_pods() {
        &["POD", "NODE"]
    } else {
        &["AGENT"]
    };
    let headers: Vec<&str> = who.iter().chain(AFTER.iter()).copied().collect();
    let mut t = Table::new(&headers);
    for r in targets.iter().take(max_rows) {
        let mut counters: Vec<String> =
            r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        counters.sort();
        let mut row = Vec::with_capacity(headers.len());
        if kind.is_pods() {
            row.push(
                targets::container(r.target.as_ref()).map_or("-".to_string(), targets::target_key),
            );
        }
        row.extend([
            r.agent.clone(),
            r.fault_id.clone(),
            summary::state_name(r.state).to_string(),
            clock_or_dash(r.applied_unix_ms),
            clock_or_dash(r.reverted_unix_ms),
            summary::reason_name(r.revert_reason).to_string(),
            if counters.is_empty() {
                "-".to_string()
            } else {
                counters.join(",")
            },
            dash(&r.error),
        ]);
        t.row(row);
    }
    let mut text = t.render();
    if targets.len() > max_rows {
        text.push_str(&format!(
            "... and {} more (faultctl -o json describe experiment NAME has them all)\n",
            targets.len() - max_rows
        ));
    }
    text
}

/// Per guard: samples, breaches, errors, min/max/last value and the first breach.
pub fn guards_table(e: &pb::Experiment) -> String {
    let guards = summary::guards(e);
    if guards.is_empty() {
        return "(no guard samples)\n".into();
    }
    let mut t = Table::new(&[
        "GUARD",
        "SAMPLES",
        "BREACHES",
        "ERRORS",
        "MIN",
        "MAX",
        "LAST",
        "FIRST BREACH",
        "LAST ERROR",
    ])
    .align(1, Align::Right)
    .align(2, Align::Right)
    .align(3, Align::Right)
    .align(4, Align::Right)
    .align(5, Align::Right)
    .align(6, Align::Right);
    for g in &guards {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), summary::value);
        let last = if g.last.error.is_empty() {
            summary::value(g.last.value)
        } else {
            "error".to_string()
        };
        let last_error = e
            .guard_timeline
            .iter()
            .rev()
            .find(|s| s.guard == g.name && !s.error.is_empty())
            .map_or("-".to_string(), |s| s.error.clone());
        t.row([
            g.name.clone(),
            g.samples.to_string(),
            g.breaches.to_string(),
            g.errors.to_string(),
            opt(g.min),
            opt(g.max),
            last,
            g.first_breach_unix_ms
                .map_or("-".to_string(), format::clock_ms),
            last_error,
        ]);
    }
    t.render()
}

/// Per agent (for pod targets: per node): CPU busy and memory used, min / avg / max over the
/// run.
pub fn telemetry_table(rows: &[pb::TargetTelemetry], kind: Kind) -> String {
    let who = if kind.is_pods() { "NODE" } else { "AGENT" };
    let mut t =
        Table::new(&[who, "SAMPLES", "CPU BUSY", "MEM USED", "MEM USED %"]).align(1, Align::Right);
    let triple = |m: &Option<pb::MetricSummary>, f: &dyn Fn(f64) -> String| {
        m.as_ref()
            .filter(|m| m.samples > 0)
            .map_or("-".to_string(), |m| {
                format!("{} / {} / {}", f(m.min), f(m.avg), f(m.max))
            })
    };
    let pct = |v: f64| format::percent(v);
    let bytes = |v: f64| format::bytes(v.max(0.0) as u64);
    for r in rows {
        let samples = r.cpu_busy_ratio.as_ref().map_or(0, |m| m.samples);
        t.row([
            r.agent.clone(),
            samples.to_string(),
            triple(&r.cpu_busy_ratio, &pct),
            triple(&r.memory_used_bytes, &bytes),
            triple(&r.memory_used_ratio, &pct),
        ]);
    }
    t.render()
}
