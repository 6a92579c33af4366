//! `faultctl watch NAME`: follows Experiments.Watch until the experiment ends. On a terminal a
//! block is redrawn in place at every event; otherwise one line is appended per event (or one
//! JSON object per line with `-o json`). The exit status tells how it ended.

use std::io::Write;
use std::time::Duration;

use faultline_proto::pb;

use super::render;
use crate::args::OutputFormat;
use crate::client::Target;
use crate::commands::Printed;
use crate::error::{CliError, EXIT_ABORTED, EXIT_FAILED, EXIT_HYPOTHESIS_FAILED};
use crate::format;
use crate::json;
use crate::summary;
use crate::targets;

/// Once the experiment has ended, how long to keep reading for the last revert acks.
const SETTLE: Duration = Duration::from_secs(12);
/// Target rows shown in the live block.
const MAX_LIVE_TARGETS: usize = 12;

/// How the live view is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Redraw one block in place (a terminal).
    Block,
    /// Append one line per event (a pipe or a file).
    Lines,
    /// One JSON object per event per line.
    Json,
}

impl Style {
    pub fn pick(output: OutputFormat, tty: bool) -> Style {
        match (output, tty) {
            (OutputFormat::Json, _) => Style::Json,
            (OutputFormat::Table, true) => Style::Block,
            (OutputFormat::Table, false) => Style::Lines,
        }
    }
}

pub async fn watch(
    target: &Target,
    name: &str,
    style: Style,
    out: &mut dyn Write,
) -> Result<Printed, CliError> {
    let mut client = target.experiments().await?;
    let mut stream = target
        .call(client.watch(pb::WatchExperimentRequest {
            name: name.to_string(),
        }))
        .await?;
    let mut drawn_lines = 0usize;
    let mut last: Option<pb::Experiment> = None;
    let mut ended_at: Option<tokio::time::Instant> = None;
    loop {
        let next = match ended_at {
            None => stream.message().await,
            Some(t) => match tokio::time::timeout_at(t + SETTLE, stream.message()).await {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => return Err(target.status_error(status)),
        };
        match style {
            Style::Json => {
                let line = serde_json::to_string(&json::event(&event))?;
                writeln!(out, "{line}")?;
            }
            Style::Lines => {
                if let Some(text) = line(&event) {
                    writeln!(out, "{text}")?;
                }
            }
            Style::Block => {
                if let Some(text) = block(&event) {
                    if drawn_lines > 0 {
                        // Cursor up to the first line of the previous block, clear below.
                        write!(out, "\x1b[{drawn_lines}A\r\x1b[J")?;
                    }
                    out.write_all(text.as_bytes())?;
                    drawn_lines = text.lines().count();
                }
            }
        }
        out.flush()?;
        if let Some(e) = event.experiment {
            let ended = summary::is_terminal(e.phase);
            let settled = {
                let c = summary::counts(&e);
                c.holding == 0 && c.pending == 0
            };
            // The steady state is watched after the revert: its verdict comes last.
            let deciding = hypothesis_pending(&e);
            last = Some(e);
            if ended && settled && !deciding {
                break;
            }
            if ended && ended_at.is_none() && !deciding {
                ended_at = Some(tokio::time::Instant::now());
            }
        }
    }
    let experiment = match last {
        Some(e) if summary::is_terminal(e.phase) && !hypothesis_pending(&e) => e,
        // The stream closed early: ask once more how it stands.
        _ => super::get(target, name).await?,
    };
    if !summary::is_terminal(experiment.phase) {
        return Err(CliError::WatchEnded {
            name: name.to_string(),
            phase: summary::phase_name(experiment.phase).to_string(),
            reason: "the coordinator closed the stream".into(),
        });
    }
    let text = match style {
        Style::Json => String::new(),
        Style::Block | Style::Lines => outcome(&experiment),
    };
    Ok(Printed {
        text,
        exit: exit_code_of(&experiment),
    })
}

/// True while the experiment's steady-state hypothesis waits for its verdict.
pub fn hypothesis_pending(e: &pb::Experiment) -> bool {
    e.hypothesis
        .as_ref()
        .is_some_and(|h| h.verdict == "pending")
}

/// [`exit_code`], and 5 when it completed but its steady-state hypothesis failed.
pub fn exit_code_of(e: &pb::Experiment) -> u8 {
    let failed = e.hypothesis.as_ref().is_some_and(|h| h.verdict == "failed");
    if summary::phase_name(e.phase) == "completed" && failed {
        return u8::try_from(EXIT_HYPOTHESIS_FAILED).unwrap_or(1);
    }
    exit_code(e.phase)
}

/// 0 completed, 3 aborted, 4 failed or interrupted.
pub fn exit_code(phase: i32) -> u8 {
    let code = match summary::phase_name(phase) {
        "completed" => 0,
        "aborted" => EXIT_ABORTED,
        _ => EXIT_FAILED,
    };
    u8::try_from(code).unwrap_or(1)
}

/// When the event happened (the coordinator's clock, else ours).
fn event_time(ev: &pb::ExperimentEvent) -> i64 {
    if ev.at_unix_ms > 0 {
        ev.at_unix_ms
    } else {
        format::now_unix_ms()
    }
}

/// The latest sample of each guard: from the event, else from the timeline.
fn latest_guards(ev: &pb::ExperimentEvent, e: &pb::Experiment) -> Vec<pb::GuardSample> {
    if !ev.latest_guards.is_empty() {
        return ev.latest_guards.clone();
    }
    summary::guards(e).into_iter().map(|g| g.last).collect()
}

/// The appended line for one event (`None` for an event without the experiment).
pub fn line(ev: &pb::ExperimentEvent) -> Option<String> {
    let e = ev.experiment.as_ref()?;
    let c = summary::counts(e);
    let mut parts = vec![
        format::clock_ms(event_time(ev)),
        format!("{:<11}", summary::phase_name(e.phase)),
        time_of(ev, e),
        format!(
            "faults {}: {} applied, {} reverted, {} failed",
            c.faults, c.applied, c.reverted, c.failed
        ),
    ];
    let guards: Vec<String> = latest_guards(ev, e)
        .iter()
        .map(|g| format!("{}={}", g.guard, guard_state(g)))
        .collect();
    if !guards.is_empty() {
        parts.push(format!("guards {}", guards.join(" ")));
    }
    if let Some(h) = &e.hypothesis {
        parts.push(format!("hypothesis {}", h.verdict));
    }
    if !ev.message.is_empty() {
        parts.push(format!("| {}", ev.message));
    }
    Some(parts.join("  "))
}

/// The block redrawn on a terminal for one event (`None` without the experiment).
pub fn block(ev: &pb::ExperimentEvent) -> Option<String> {
    let e = ev.experiment.as_ref()?;
    let c = summary::counts(e);
    let mut out = format!(
        "experiment {}  {}  {}\n",
        e.name,
        summary::phase_name(e.phase).to_uppercase(),
        time_of(ev, e)
    );
    out.push_str(&format!("targets    {}\n", render::counts_line(&c)));
    let pods = c.kind.is_pods();
    for t in e.targets.iter().take(MAX_LIVE_TARGETS) {
        let mut detail = summary::state_name(t.state).to_string();
        if t.revert_reason != 0 {
            detail.push_str(&format!(" ({})", summary::reason_name(t.revert_reason)));
        }
        if !t.error.is_empty() {
            detail.push_str(&format!(": {}", t.error));
        }
        // Pods read `shop/checkout-1 on node-a`; agents by their name.
        let who = match targets::container(t.target.as_ref()) {
            Some(pod) if pods => format!("{} on {}", targets::target_key(pod), t.agent),
            _ => t.agent.clone(),
        };
        out.push_str(&format!("  {who:<20} {:<40} {detail}\n", t.fault_id));
    }
    if e.targets.len() > MAX_LIVE_TARGETS {
        out.push_str(&format!(
            "  ... and {} more\n",
            e.targets.len() - MAX_LIVE_TARGETS
        ));
    }
    let guards = latest_guards(ev, e);
    if guards.is_empty() {
        out.push_str("guards     (no samples yet)\n");
    }
    for g in &guards {
        let mut text = format!(
            "guard      {:<20} {:<24} at {}",
            g.guard,
            guard_state(g),
            format::clock_ms(g.at_unix_ms)
        );
        if !g.detail.is_empty() && g.error.is_empty() {
            text.push_str(&format!("  {}", g.detail));
        }
        out.push_str(&text);
        out.push('\n');
    }
    if let Some(abort) = render::abort_line(e) {
        out.push_str(&format!("abort      {abort}\n"));
    }
    if let Some(h) = &e.hypothesis {
        out.push_str(&format!("hypothesis {}  {}\n", h.verdict, h.reason));
    }
    if !ev.message.is_empty() {
        out.push_str(&format!(
            "event      {}  {}\n",
            format::clock_ms(event_time(ev)),
            ev.message
        ));
    }
    Some(out)
}

/// "elapsed 12s of 1m (48s left)", "ran 4s of 1m", or "not started".
fn time_of(ev: &pb::ExperimentEvent, e: &pb::Experiment) -> String {
    let now_ms = event_time(ev);
    let from_event = e.started_unix_ms > 0
        && !summary::is_terminal(e.phase)
        && (ev.elapsed_ms > 0 || ev.remaining_ms > 0);
    let (elapsed, remaining) = if from_event {
        (Some(ev.elapsed_ms), Some(ev.remaining_ms))
    } else {
        (
            summary::elapsed_ms(e, now_ms),
            summary::remaining_ms(e, now_ms),
        )
    };
    match (elapsed, remaining) {
        (Some(elapsed), Some(left)) if !summary::is_terminal(e.phase) => format!(
            "elapsed {} of {} ({} left)",
            format::seconds(elapsed),
            format::duration_ms(e.duration_ms),
            format::seconds(left)
        ),
        (Some(elapsed), _) => format!(
            "ran {} of {}",
            format::duration_ms(elapsed.max(1)),
            format::duration_ms(e.duration_ms)
        ),
        _ => "not started".to_string(),
    }
}

/// "0.0200 ok", "0.9000 BREACHED", "no data", "error: ...".
fn guard_state(s: &pb::GuardSample) -> String {
    if !s.error.is_empty() {
        return format!("error: {}", s.error);
    }
    if s.outcome == "no_data" {
        return "no data".to_string();
    }
    let v = summary::value(s.value);
    if s.breached {
        format!("{v} BREACHED")
    } else {
        format!("{v} ok")
    }
}

/// The closing lines once the experiment has ended.
pub fn outcome(e: &pb::Experiment) -> String {
    let phase = summary::phase_name(e.phase);
    let ran = summary::elapsed_ms(e, e.ended_unix_ms)
        .map_or("-".to_string(), |ms| format::duration_ms(ms.max(1)));
    let mut out = format!("experiment {} {phase} after {ran}", e.name);
    if !e.verdict_reason.is_empty() {
        out.push_str(&format!(": {}", e.verdict_reason));
    }
    out.push('\n');
    let c = summary::counts(e);
    out.push_str(&format!("targets: {}\n", render::counts_line(&c)));
    if let Some(abort) = render::abort_line(e) {
        out.push_str(&format!("abort: {abort}\n"));
    }
    if let Some(h) = &e.hypothesis {
        out.push_str(&format!(
            "steady-state hypothesis {}: {}\n",
            h.verdict, h.reason
        ));
        for c in &h.checks {
            if let Some(ms) = c.recovery_ms {
                out.push_str(&format!(
                    "  check {}: held again {} ms after the last revert\n",
                    c.name, ms
                ));
            }
        }
    }
    out.push_str(&format!("report: faultctl report {}\n", e.name));
    out
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
