//! Text views of experiments for people: the plan of a dry run, the answer to `apply`, the
//! `get experiments` table and the `describe experiment` page.

use faultline_proto::pb;

use crate::format;
use crate::summary::{self, TargetCounts};
use crate::table::{Align, Table};
use crate::targets;

pub use super::plan::plan;
pub use super::tables::{guards_table, targets_table, telemetry_table};

/// How many target rows `describe` prints before summarising the rest.
const MAX_TARGET_ROWS: usize = 200;
/// How many of the latest log entries `describe` prints.
const MAX_LOG_LINES: usize = 30;

/// The answer to `apply --dry-run`.
pub fn dry_run(e: Option<&pb::Experiment>, p: &pb::Plan) -> String {
    let name = e.map_or("(unnamed)", |e| e.name.as_str());
    let duration = e.map_or("-".to_string(), |e| format::duration_ms(e.duration_ms));
    let mut out = format!(
        "dry run: experiment {name} would run for {duration} on {}; nothing was created\n\n{}",
        targets::plan_phrase(p),
        plan(p)
    );
    if let Some(e) = e {
        out.push_str(&probes(e));
    }
    out
}

/// The guards and steady-state checks with their definitions, and a warning for each that
/// skips TLS verification.
pub fn probes(e: &pb::Experiment) -> String {
    let mut out = String::new();
    if !e.guards.is_empty() {
        out.push_str(&format!("Guards ({}):\n", e.guards.len()));
        for g in &e.guards {
            out.push_str(&format!("  {}: {}\n", g.name, g.description));
        }
    }
    if let Some(h) = &e.hypothesis {
        out.push_str(&format!(
            "Steady-state checks ({}), each must hold before injection and again within {} of the revert:\n",
            h.checks.len(),
            format::duration_ms(h.recovery_within_ms)
        ));
        for c in &h.checks {
            out.push_str(&format!("  {}: {}\n", c.name, c.description));
        }
    }
    let descriptions = e.guards.iter().map(|g| (&g.name, &g.description)).chain(
        e.hypothesis
            .iter()
            .flat_map(|h| h.checks.iter().map(|c| (&c.name, &c.description))),
    );
    for (name, d) in descriptions {
        if d.contains("insecureSkipVerify") {
            out.push_str(&format!(
                "warning: {name} does not verify the server's TLS certificate (tls.insecureSkipVerify)\n"
            ));
        }
    }
    out
}

/// The steady-state hypothesis: its verdict and a table of its checks (experiments and
/// workflows alike).
pub fn hypothesis(h: &pb::Hypothesis) -> String {
    let mut out = String::new();
    out.push_str(&format!("\nSteady-state hypothesis: {}", h.verdict));
    if !h.reason.is_empty() {
        out.push_str(&format!(": {}", h.reason));
    }
    out.push('\n');
    let mut t = Table::new(&["CHECK", "TYPE", "BEFORE INJECTION", "RECOVERY", "LAST"]);
    for c in &h.checks {
        let before = if c.before_detail.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}: {}",
                if c.held_before {
                    "held"
                } else {
                    "did not hold"
                },
                c.before_detail
            )
        };
        let recovery = c
            .recovery_ms
            .map_or("-".to_string(), |ms| format!("{ms} ms"));
        t.row([
            c.name.clone(),
            c.r#type.clone(),
            before,
            recovery,
            c.last_detail.clone(),
        ]);
    }
    out.push_str(&indent(&t.render()));
    out
}

/// The hypothesis and the findings, for `describe`.
pub fn hypothesis_and_findings(e: &pb::Experiment) -> String {
    let mut out = String::new();
    if let Some(h) = &e.hypothesis {
        out.push_str(&hypothesis(h));
    }
    if !e.findings.is_empty() {
        out.push_str("\nFindings\n");
        for f in &e.findings {
            out.push_str(&format!("  - {f}\n"));
        }
    }
    out
}

/// The answer to `apply` (created, and started unless --no-start).
pub fn created(e: &pb::Experiment, p: Option<&pb::Plan>) -> String {
    let phase = summary::phase_name(e.phase);
    let p = p.or(e.plan.as_ref());
    let (on, nfaults, excluded, noun) = p.map_or(("0 agent(s)".to_string(), 0, 0, "agent"), |p| {
        let kind = targets::plan_kind(p);
        let noun = if kind.is_pods() { "pod" } else { "agent" };
        (
            targets::plan_phrase(p),
            p.faults.len(),
            p.excluded.len(),
            noun,
        )
    });
    let mut out = format!(
        "experiment {} created (id {}), phase {phase}: {nfaults} fault(s) on each of {on} for \
         {}, {excluded} {noun}(s) excluded\n",
        e.name,
        if e.id.is_empty() { "-" } else { &e.id },
        format::duration_ms(e.duration_ms),
    );
    let n = &e.name;
    if phase == "pending" {
        out.push_str(&format!("  start it:  faultctl start {n}\n"));
    }
    out.push_str(&format!(
        "  watch it:  faultctl watch {n}\n  abort it:  faultctl abort {n} --reason TEXT\n  \
         report:    faultctl report {n}\n"
    ));
    for warning in probes(e).lines().filter(|l| l.starts_with("warning:")) {
        out.push_str(warning);
        out.push('\n');
    }
    out
}

/// The `get experiments` table as seen at `now_ms`.
pub fn list(experiments: &[pb::Experiment], now_ms: i64) -> String {
    if experiments.is_empty() {
        return "no experiments: create one with `faultctl apply -f FILE`\n".into();
    }
    let mut t = Table::new(&[
        "NAME", "PHASE", "TARGETS", "FAULTS", "CREATED", "RAN", "DURATION", "VERDICT",
    ])
    .align(2, Align::Right)
    .align(3, Align::Right);
    for e in experiments {
        let c = summary::counts(e);
        let ran = summary::elapsed_ms(e, now_ms).map_or("-".to_string(), format::seconds);
        t.row([
            e.name.clone(),
            summary::phase_name(e.phase).to_string(),
            format!("{} {}", c.targets, c.kind.plural()),
            c.faults.to_string(),
            format::ago(now_ms, e.created_unix_ms),
            ran,
            format::duration_ms(e.duration_ms),
            dash(&e.verdict_reason),
        ]);
    }
    t.render()
}

/// The counts of a target set in words.
pub fn counts_line(c: &TargetCounts) -> String {
    format!(
        "{}, {} fault(s): {} applied, {} reverted, {} failed, {} pending",
        targets::phrase(c.kind, c.targets, c.pods, c.agents),
        c.faults,
        c.applied,
        c.reverted,
        c.failed,
        c.pending
    )
}

/// The `describe experiment` page as seen at `now_ms`.
pub fn describe(e: &pb::Experiment, now_ms: i64) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<13}{v}\n", format!("{k}:")));
    field("Name", e.name.clone());
    field("ID", dash(&e.id));
    field("Phase", summary::phase_name(e.phase).to_string());
    field(
        "Created",
        format!(
            "{} by {}",
            format::timestamp_ms(e.created_unix_ms),
            dash(&e.created_by)
        ),
    );
    field("Started", format::timestamp_ms(e.started_unix_ms));
    field("Ended", format::timestamp_ms(e.ended_unix_ms));
    let ran = summary::elapsed_ms(e, now_ms).map_or("-".to_string(), format::duration_ms);
    field(
        "Duration",
        format!("{} planned, ran {ran}", format::duration_ms(e.duration_ms)),
    );
    if e.guard_interval_ms > 0 {
        field("Guard every", format::duration_ms(e.guard_interval_ms));
    }
    if !e.on_target_failure.is_empty() {
        field(
            "On failure",
            format!("{} (onTargetFailure)", e.on_target_failure),
        );
    }
    field("Verdict", dash(&e.verdict_reason));
    if let Some(line) = abort_line(e) {
        field("Abort", line);
    }
    field("Targets", counts_line(&summary::counts(e)));

    out.push_str("\nPlan\n");
    match &e.plan {
        Some(p) => out.push_str(&indent(&plan(p))),
        None => out.push_str("  (no plan recorded)\n"),
    }

    out.push_str("\nTarget results\n");
    if e.targets.is_empty() {
        out.push_str("  (none yet)\n");
    } else {
        out.push_str(&indent(&targets_table(
            &e.targets,
            targets::experiment_kind(e),
            MAX_TARGET_ROWS,
        )));
    }

    out.push_str("\nGuards\n");
    if !e.guards.is_empty() {
        let mut t = Table::new(&["GUARD", "TYPE", "ON ERROR", "DEFINITION"]);
        for g in &e.guards {
            t.row([
                g.name.as_str(),
                g.r#type.as_str(),
                g.on_error.as_str(),
                g.description.as_str(),
            ]);
        }
        out.push_str(&indent(&t.render()));
        out.push('\n');
    }
    out.push_str(&indent(&guards_table(e)));
    out.push_str(&hypothesis_and_findings(e));

    if !e.telemetry.is_empty() {
        out.push_str("\nTelemetry while running (min / avg / max)\n");
        out.push_str(&indent(&telemetry_table(
            &e.telemetry,
            targets::experiment_kind(e),
        )));
    }

    if !e.log.is_empty() {
        out.push_str("\nLog\n");
        let skip = e.log.len().saturating_sub(MAX_LOG_LINES);
        if skip > 0 {
            out.push_str(&format!(
                "  ... {skip} earlier entries (faultctl report NAME)\n"
            ));
        }
        for l in &e.log[skip..] {
            out.push_str(&format!(
                "  {}  {}\n",
                format::clock_ms(l.at_unix_ms),
                l.message
            ));
        }
    }

    if !e.document.trim().is_empty() {
        out.push_str("\nDocument\n");
        out.push_str(&indent(e.document.trim_end()));
        out.push('\n');
    }
    out
}

/// How the experiment was aborted and how long the reverts took: from the coordinator's abort
/// record, else (older coordinators) from the guard timeline and the revert times.
pub fn abort_line(e: &pb::Experiment) -> Option<String> {
    if let Some(a) = &e.abort {
        return Some(abort_info(a));
    }
    if summary::phase_name(e.phase) != "aborted" {
        return None;
    }
    let t = summary::abort_timing(e)?;
    let last = format::clock_ms(t.last_revert_unix_ms);
    Some(match (t.breach_unix_ms, t.latency_ms()) {
        (Some(b), Some(ms)) => format!(
            "guard breach at {}, last revert acknowledged at {last}: abort latency {}",
            format::clock_ms(b),
            format::latency_ms(ms)
        ),
        _ => format!("last revert acknowledged at {last}"),
    })
}

fn abort_info(a: &pb::AbortInfo) -> String {
    let what = match a.trigger.as_str() {
        "guard" => format!(
            "guard {} ({}) breached with {}",
            a.guard,
            dash(&a.guard_type),
            summary::value(a.observed_value)
        ),
        "" => "aborted".to_string(),
        trigger if a.by.is_empty() => trigger.to_string(),
        trigger => format!("{trigger} by {}", a.by),
    };
    let mut parts = vec![what];
    if !a.reason.is_empty() && a.trigger != "guard" {
        parts[0].push_str(&format!(" ({})", a.reason));
    }
    if a.triggered_unix_ms > 0 {
        parts.push(format!(
            "triggered {}",
            format::clock_ms(a.triggered_unix_ms)
        ));
    }
    if a.sent_unix_ms > 0 {
        parts.push(format!("reverts sent {}", format::clock_ms(a.sent_unix_ms)));
    }
    if a.last_revert_ack_unix_ms > 0 {
        parts.push(format!(
            "last revert acknowledged {}",
            format::clock_ms(a.last_revert_ack_unix_ms)
        ));
        let latency = i64::try_from(a.latency_ms).unwrap_or(i64::MAX);
        parts.push(format!("abort latency {}", format::latency_ms(latency)));
    } else {
        parts.push("reverts outstanding".to_string());
    }
    if a.unacknowledged > 0 {
        parts.push(format!(
            "{} revert(s) not acknowledged (those agents revert on their deadline or lease)",
            a.unacknowledged
        ));
    }
    parts.join("; ")
}

pub(super) fn clock_or_dash(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        format::clock_ms(ms)
    }
}

pub(super) fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Indents every line by two spaces (empty lines stay empty).
pub(super) fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
