//! `Experiments.Report`: the record as JSON (it is the report), and a Markdown rendering for
//! people: verdict, timing and abort latency, plan, per-target results, guards, telemetry, log.

use std::time::{Duration, UNIX_EPOCH};

use super::record::{ExperimentRecord, Stat};

/// How many timeline samples and log lines the Markdown shows (the JSON has all).
const SHOWN: usize = 30;

pub fn json(rec: &ExperimentRecord) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rec)
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
    let p = |o: &mut String, line: String| {
        o.push_str(&line);
        o.push('\n');
    };
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

    p(&mut o, "## Plan\n".into());
    p(&mut o, format!("{}\n", rec.plan.selection));
    p(
        &mut o,
        format!(
            "Faults on each selected agent ({}):\n",
            rec.plan.faults.len()
        ),
    );
    for (i, f) in rec.plan.faults.iter().enumerate() {
        p(&mut o, format!("{}. {f}", i + 1));
    }
    o.push('\n');
    p(
        &mut o,
        "| Agent | Selected | Reason | Labels |\n|---|---|---|---|".into(),
    );
    for s in &rec.plan.selected {
        p(
            &mut o,
            format!("| {} | yes | - | {} |", s.agent, cell(&s.description)),
        );
    }
    for x in &rec.plan.excluded {
        p(
            &mut o,
            format!(
                "| {} | no | {} | {} |",
                x.agent,
                cell(&x.reason),
                cell(&x.description)
            ),
        );
    }
    o.push('\n');

    if !rec.targets.is_empty() {
        p(&mut o, "## Targets\n".into());
        p(&mut o, "| Agent | Fault | State | Applied | Reverted | Reason | Error | Counters |\n|---|---|---|---|---|---|---|---|".into());
        for t in &rec.targets {
            let counters: Vec<String> =
                t.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            p(
                &mut o,
                format!(
                    "| {} | {} `{}` | {:?} | {} | {} | {} | {} | {} |",
                    t.agent,
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
        p(&mut o, "| Agent | Samples | CPU busy | Memory used | Memory used ratio |\n|---|---|---|---|---|".into());
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
    o
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
