//! `Experiments.Report`: the record as JSON (it is the report), and a Markdown rendering for
//! people: verdict, timing and abort latency, steady-state hypothesis, impact, plan, per-target
//! results, guards, telemetry, log, and the findings last.

use std::time::{Duration, UNIX_EPOCH};

use super::record::{ExperimentRecord, Stat};

/// How many timeline samples and log lines the Markdown shows (the JSON has all).
const SHOWN: usize = 30;

pub fn json(rec: &ExperimentRecord) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rec)
}

/// An instant as RFC 3339 with milliseconds; `-` when unset.
pub fn stamp(ms: i64) -> String {
    at(ms)
}

fn at(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// `+1.234 s` after the start (or the absolute time before it started).
fn rel(rec: &ExperimentRecord, ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else if rec.started_unix_ms > 0 && ms >= rec.started_unix_ms {
        format!("+{:.3} s", (ms - rec.started_unix_ms) as f64 / 1000.0)
    } else {
        at(ms)
    }
}

fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

fn stat(s: &Stat, scale: f64, unit: &str) -> String {
    if s.samples == 0 {
        return "-".into();
    }
    format!(
        "{} / {} / {}{unit}",
        num(s.min * scale),
        num(s.avg() * scale),
        num(s.max * scale)
    )
}

pub fn markdown(rec: &ExperimentRecord) -> String {
    let mut o = String::new();
    let p = line;
    p(
        &mut o,
        format!("# Experiment {} — {}\n", rec.name, rec.phase),
    );
    p(&mut o, "| | |\n|---|---|".into());
    p(
        &mut o,
        format!("| Verdict | {} |", cell(&rec.verdict_reason)),
    );
    p(
        &mut o,
        format!(
            "| Created | {} by {} |",
            at(rec.created_unix_ms),
            rec.created_by
        ),
    );
    p(&mut o, format!("| Started | {} |", at(rec.started_unix_ms)));
    p(&mut o, format!("| Ended | {} |", at(rec.ended_unix_ms)));
    let ran = if rec.started_unix_ms > 0 && rec.ended_unix_ms > 0 {
        format!(
            ", ran {:.3} s",
            (rec.ended_unix_ms - rec.started_unix_ms) as f64 / 1000.0
        )
    } else {
        String::new()
    };
    p(
        &mut o,
        format!(
            "| Duration | {} planned{ran} |",
            humantime::format_duration(Duration::from_millis(rec.duration_ms))
        ),
    );
    p(
        &mut o,
        format!("| On target failure | {} |", rec.on_target_failure),
    );
    for g in &rec.gaps {
        p(
            &mut o,
            format!(
                "| Coordinator down | {} to {} ({:.1} s) |",
                at(g.from_unix_ms),
                at(g.to_unix_ms),
                (g.to_unix_ms - g.from_unix_ms).max(0) as f64 / 1000.0
            ),
        );
    }
    if let Some(a) = &rec.abort {
        let latency = match a.latency_ms {
            Some(ms) => format!("{ms} ms (trigger to the last revert acknowledged)"),
            None => format!(
                "not measured: {} revert(s) unacknowledged",
                a.unacknowledged
            ),
        };
        p(&mut o, format!("| Abort latency | {latency} |"));
    }
    o.push('\n');

    if let Some(a) = &rec.abort {
        p(&mut o, "## Abort\n".into());
        p(
            &mut o,
            format!("- Trigger: {} (by {})", a.trigger, cell(&a.by)),
        );
        p(&mut o, format!("- Reason: {}", a.reason));
        if !a.guard.is_empty() {
            let v = a.observed_value.map(num).unwrap_or_else(|| "n/a".into());
            p(
                &mut o,
                format!(
                    "- Guard: {} ({}), observed value {v}",
                    a.guard, a.guard_type
                ),
            );
        }
        p(&mut o, format!("- Triggered: {}", at(a.triggered_unix_ms)));
        p(
            &mut o,
            format!(
                "- RevertFault sent: {} (+{} ms)",
                at(a.sent_unix_ms),
                (a.sent_unix_ms - a.triggered_unix_ms).max(0)
            ),
        );
        if a.last_revert_ack_unix_ms > 0 {
            p(
                &mut o,
                format!(
                    "- Last revert acknowledged: {} (+{} ms)",
                    at(a.last_revert_ack_unix_ms),
                    (a.last_revert_ack_unix_ms - a.triggered_unix_ms).max(0)
                ),
            );
        }
        o.push('\n');
    }

    super::report_steady::hypothesis_section(&mut o, rec);
    super::report_steady::impact_section(&mut o, rec);
    plan_section(&mut o, rec);
    targets_section(&mut o, rec);
    super::kill_record::markdown(&mut o, rec);

    if !rec.guards.is_empty() {
        p(
            &mut o,
            format!("## Guards (every {} ms)\n", rec.guard_interval_ms),
        );
        p(&mut o, "| Guard | Type | Watches | On error | Evaluations | Breaches | Last |\n|---|---|---|---|---|---|---|".into());
        for g in &rec.guards {
            let samples: Vec<_> = rec
                .guard_timeline
                .iter()
                .filter(|s| s.guard == g.name)
                .collect();
            let breaches = samples.iter().filter(|s| s.breached).count();
            let last = samples
                .last()
                .map(|s| s.detail.clone())
                .unwrap_or_else(|| "-".into());
            p(
                &mut o,
                format!(
                    "| {} | {} | {} | {} | {} | {breaches} | {} |",
                    g.name,
                    g.guard_type,
                    cell(&g.description),
                    g.on_error,
                    samples.len(),
                    cell(&last)
                ),
            );
        }
        o.push('\n');
        let skip = rec.guard_timeline.len().saturating_sub(SHOWN);
        p(
            &mut o,
            format!(
                "Timeline (last {} of {} samples):\n",
                rec.guard_timeline.len() - skip,
                rec.guard_timeline.len()
            ),
        );
        p(
            &mut o,
            "| Time | Guard | Outcome | Value | Detail |\n|---|---|---|---|---|".into(),
        );
        for s in rec.guard_timeline.iter().skip(skip) {
            let v = s.value.map(num).unwrap_or_else(|| "n/a".into());
            p(
                &mut o,
                format!(
                    "| {} | {} | {} | {v} | {} |",
                    rel(rec, s.at_unix_ms),
                    s.guard,
                    s.outcome,
                    cell(&s.detail)
                ),
            );
        }
        o.push('\n');
    }

    if !rec.telemetry.is_empty() {
        p(
            &mut o,
            "## Telemetry while running (min / avg / max)\n".into(),
        );
        let who = if rec.plan.targets_pods() {
            "Node"
        } else {
            "Agent"
        };
        p(
            &mut o,
            format!("| {who} | Samples | CPU busy | Memory used | Memory used ratio |\n|---|---|---|---|---|"),
        );
        for (agent, t) in &rec.telemetry {
            p(
                &mut o,
                format!(
                    "| {agent} | {} | {} | {} | {} |",
                    t.cpu_busy_ratio.samples,
                    stat(&t.cpu_busy_ratio, 100.0, " %"),
                    stat(&t.memory_used_bytes, 1.0 / (1024.0 * 1024.0), " MiB"),
                    stat(&t.memory_used_ratio, 1.0, "")
                ),
            );
        }
        o.push('\n');
    }

    p(&mut o, "## Log\n".into());
    let skip = rec.log.len().saturating_sub(SHOWN);
    for l in rec.log.iter().skip(skip) {
        p(&mut o, format!("- {} {}", at(l.at_unix_ms), l.message));
    }
    super::report_steady::findings_section(&mut o, rec);
    o
}

/// Appends `text` and a newline.
fn line(o: &mut String, text: String) {
    o.push_str(&text);
    o.push('\n');
}

/// How the targets were chosen, the faults, and every candidate with why it was or was not
/// selected: agents with their labels, or pods with their node.
fn plan_section(o: &mut String, rec: &ExperimentRecord) {
    let plan = &rec.plan;
    line(o, "## Plan\n".into());
    line(o, format!("{}\n", plan.selection));
    line(
        o,
        format!(
            "Faults on each selected {} ({}):\n",
            plan.target_noun(),
            plan.faults.len()
        ),
    );
    for (i, f) in plan.faults.iter().enumerate() {
        line(o, format!("{}. {f}", i + 1));
    }
    o.push('\n');
    if plan.targets_pods() {
        line(
            o,
            "| Pod | Node | Selected | Reason | Target |\n|---|---|---|---|---|".into(),
        );
        for s in &plan.selected {
            let pod = s.pod.as_ref().map_or("-".to_string(), |p| p.pod_name());
            line(
                o,
                format!(
                    "| {} | {} | yes | - | {} |",
                    cell(&pod),
                    cell(&s.agent),
                    cell(&s.description)
                ),
            );
        }
        for x in &plan.excluded {
            let pod = x.pod.clone().unwrap_or_else(|| x.description.clone());
            line(
                o,
                format!(
                    "| {} | {} | no | {} | - |",
                    cell(&pod),
                    cell(&x.agent),
                    cell(&x.reason)
                ),
            );
        }
    } else {
        line(
            o,
            "| Agent | Selected | Reason | Labels |\n|---|---|---|---|".into(),
        );
        for s in &plan.selected {
            line(
                o,
                format!("| {} | yes | - | {} |", s.agent, cell(&s.description)),
            );
        }
        for x in &plan.excluded {
            line(
                o,
                format!(
                    "| {} | no | {} | {} |",
                    x.agent,
                    cell(&x.reason),
                    cell(&x.description)
                ),
            );
        }
    }
    o.push('\n');
}

/// One row per (target, fault): the agent, or the pod (or container) and its node.
fn targets_section(o: &mut String, rec: &ExperimentRecord) {
    if rec.targets.is_empty() {
        return;
    }
    let pods = rec.plan.targets_pods() || rec.targets.iter().any(|t| t.pod.is_some());
    line(o, "## Targets\n".into());
    if pods {
        line(o, "| Pod | Node | Fault | State | Applied | Reverted | Reason | Error | Counters |\n|---|---|---|---|---|---|---|---|---|".into());
    } else {
        line(o, "| Agent | Fault | State | Applied | Reverted | Reason | Error | Counters |\n|---|---|---|---|---|---|---|---|".into());
    }
    for t in &rec.targets {
        let counters: Vec<String> = t.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let who = if pods {
            let pod = t.pod.as_ref().map_or("-".to_string(), |p| p.key());
            format!("{} | {}", cell(&pod), t.agent)
        } else {
            t.agent.clone()
        };
        line(
            o,
            format!(
                "| {who} | {} `{}` | {:?} | {} | {} | {} | {} | {} |",
                cell(&t.fault),
                t.fault_id,
                t.state,
                rel(rec, t.applied_unix_ms),
                rel(rec, t.reverted_unix_ms),
                cell(&t.revert_reason),
                cell(&t.error),
                cell(&counters.join(", "))
            ),
        );
    }
    o.push('\n');
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
