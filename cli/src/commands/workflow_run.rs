//! `faultctl run -f FILE` with a Workflow document: creates it, follows it (one line per step
//! that changes, and the steady-state watch) until it has ended and its hypothesis has a
//! verdict, prints its report, and exits as for an experiment: 0 succeeded (hypothesis passed
//! or none), 3 aborted, 4 failed, 5 succeeded with the hypothesis failed. A coordinator that
//! restarts meanwhile is waited for (up to [`OUTAGE`]): the workflow resumes there.

use std::io::Write;
use std::time::Duration;

use faultline_proto::pb;

use super::experiments::watch::Style;
use super::pretty;
use super::workflows::{self, to_json};
use crate::args::{OutputFormat, ReportFormat, RunArgs};
use crate::client::Target;
use crate::commands::Printed;
use crate::error::{CliError, EXIT_ABORTED, EXIT_FAILED, EXIT_HYPOTHESIS_FAILED};
use crate::format;

/// How often the workflow is read.
const POLL: Duration = Duration::from_millis(500);
/// How long an unreachable coordinator (a restart) is waited for.
const OUTAGE: Duration = Duration::from_secs(120);

/// 0 succeeded (hypothesis passed or none), 3 aborted, 4 failed, 5 succeeded with the
/// hypothesis failed.
pub fn exit_code(w: &pb::Workflow) -> u8 {
    let failed = w.hypothesis.as_ref().is_some_and(|h| h.verdict == "failed");
    let code = match w.phase.as_str() {
        "succeeded" if failed => EXIT_HYPOTHESIS_FAILED,
        "succeeded" => 0,
        "aborted" => EXIT_ABORTED,
        _ => EXIT_FAILED,
    };
    u8::try_from(code).unwrap_or(1)
}

fn ended(w: &pb::Workflow) -> bool {
    let terminal = matches!(w.phase.as_str(), "succeeded" | "failed" | "aborted");
    terminal && w.hypothesis.as_ref().is_none_or(|h| h.verdict != "pending")
}

/// What changed since `before`, one line each.
fn changes(before: Option<&pb::Workflow>, w: &pb::Workflow) -> Vec<String> {
    let mut out = Vec::new();
    let now = format::clock_ms(format::now_unix_ms());
    for s in &w.steps {
        let old = before.and_then(|b| b.steps.iter().find(|o| o.name == s.name));
        if old.is_none_or(|o| o.state != s.state) && s.state != "waiting" {
            let msg = if s.message.is_empty() {
                String::new()
            } else {
                format!(": {}", s.message)
            };
            out.push(format!("{now}  step {} {}{msg}", s.name, s.state));
        }
    }
    let verdict = |w: Option<&pb::Workflow>| {
        w.and_then(|w| w.hypothesis.as_ref()).map(|h| {
            let held = h.checks.iter().filter(|c| c.recovery_ms.is_some()).count();
            (h.verdict.clone(), held, h.recovery_from_unix_ms)
        })
    };
    if let Some((v, held, from)) = verdict(Some(w)) {
        if verdict(before) != Some((v.clone(), held, from)) {
            let n = w.hypothesis.as_ref().map_or(0, |h| h.checks.len());
            let line = match v.as_str() {
                "pending" if from > 0 => {
                    format!("watching the steady state: {held} of {n} check(s) held again")
                }
                "pending" => "checking the steady state before the first step".to_string(),
                _ => format!(
                    "steady-state hypothesis {v}: {}",
                    w.hypothesis.as_ref().map_or("", |h| h.reason.as_str())
                ),
            };
            out.push(format!("{now}  {line}"));
        }
    }
    if before.is_none_or(|b| b.phase != w.phase) {
        out.push(format!("{now}  {}", workflows::line(w).trim_end()));
    }
    out
}

/// Reads the workflow, waiting out a coordinator that is not reachable for a while.
async fn read(target: &Target, name: &str) -> Result<pb::Workflow, CliError> {
    let until = tokio::time::Instant::now() + OUTAGE;
    loop {
        match workflows::get(target, name).await {
            Err(CliError::Unreachable { .. } | CliError::Timeout { .. })
                if tokio::time::Instant::now() < until =>
            {
                tokio::time::sleep(POLL).await;
            }
            other => return other,
        }
    }
}

pub async fn run(
    target: &Target,
    args: &RunArgs,
    document: String,
    output: OutputFormat,
    style: Style,
    out: &mut dyn Write,
) -> Result<Printed, CliError> {
    if args.junit.is_some() || args.report == Some(ReportFormat::Junit) {
        return Err(CliError::Usage {
            flag: "--junit",
            reason: "a workflow has no JUnit report of its own; use md or json, and \
                     `faultctl report --format junit WORKFLOW-STEP` for each step's experiment"
                .into(),
        });
    }
    let mut client = target.workflows().await?;
    let created = target
        .call(client.create(pb::CreateWorkflowRequest { document }))
        .await?;
    let name = created.name.clone();
    let mut last: Option<pb::Workflow> = None;
    let mut w = created;
    loop {
        match style {
            Style::Json => {
                if last.as_ref() != Some(&w) {
                    writeln!(out, "{}", serde_json::to_string(&to_json(&w))?)?;
                }
            }
            Style::Block | Style::Lines => {
                for line in changes(last.as_ref(), &w) {
                    writeln!(out, "{line}")?;
                }
            }
        }
        out.flush()?;
        if ended(&w) {
            break;
        }
        last = Some(w);
        tokio::time::sleep(POLL).await;
        w = read(target, &name).await?;
    }
    let format = args.report.unwrap_or(match output {
        OutputFormat::Json => ReportFormat::Json,
        OutputFormat::Table => ReportFormat::Md,
    });
    let report = match format {
        ReportFormat::Json => pretty(&to_json(&w))?,
        _ => workflows::render(&w),
    };
    Ok(Printed {
        text: report,
        exit: exit_code(&w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(phase: &str, verdict: Option<&str>) -> pb::Workflow {
        pb::Workflow {
            name: "gd".into(),
            phase: phase.into(),
            hypothesis: verdict.map(|v| pb::Hypothesis {
                verdict: v.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_are_the_experiments() {
        assert_eq!(exit_code(&wf("succeeded", None)), 0);
        assert_eq!(exit_code(&wf("succeeded", Some("passed"))), 0);
        assert_eq!(exit_code(&wf("succeeded", Some("failed"))), 5);
        assert_eq!(exit_code(&wf("aborted", Some("failed"))), 3);
        assert_eq!(exit_code(&wf("failed", Some("failed"))), 4);
        assert_eq!(exit_code(&wf("failed", None)), 4);
    }

    #[test]
    fn it_is_followed_until_the_hypothesis_has_its_verdict() {
        assert!(!ended(&wf("running", None)));
        assert!(!ended(&wf("succeeded", Some("pending"))));
        assert!(ended(&wf("succeeded", Some("passed"))));
        assert!(ended(&wf("failed", None)));
    }
}
