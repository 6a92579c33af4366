//! The workflow commands: `get workflows`, `describe workflow`, `workflow approve`,
//! `abort workflow`, `delete workflow`, each a call of the Workflows service.

use faultline_proto::pb;
use serde_json::{json, Value};

use super::pretty;
use crate::args::OutputFormat;
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::table::Table;

pub fn to_json(w: &pb::Workflow) -> Value {
    json!({
        "name": w.name,
        "phase": w.phase,
        "reason": w.reason,
        "schedule": w.schedule,
        "created_by": w.created_by,
        "created_unix_ms": w.created_unix_ms,
        "started_unix_ms": w.started_unix_ms,
        "ended_unix_ms": w.ended_unix_ms,
        "deadline_unix_ms": w.deadline_unix_ms,
        "steps": w.steps.iter().map(|s| json!({
            "name": s.name,
            "parent": s.parent,
            "kind": s.kind,
            "state": s.state,
            "started_unix_ms": s.started_unix_ms,
            "ended_unix_ms": s.ended_unix_ms,
            "deadline_unix_ms": s.deadline_unix_ms,
            "experiment": s.experiment,
            "message": s.message,
        })).collect::<Vec<_>>(),
        "log": w.log.iter().map(|l| json!({"at_unix_ms": l.at_unix_ms, "message": l.message})).collect::<Vec<_>>(),
        "hypothesis": w.hypothesis.as_ref().map(crate::json::hypothesis),
    })
}

/// One line for `apply`, `approve` and `abort`.
pub fn line(w: &pb::Workflow) -> String {
    let active: Vec<String> = w
        .steps
        .iter()
        .filter(|s| s.state == "running" || s.state == "awaiting-approval")
        .filter(|s| s.kind != "parallel")
        .map(|s| format!("{} ({})", s.name, s.state))
        .collect();
    let mut out = format!("workflow {} is {}", w.name, w.phase);
    if !active.is_empty() {
        out.push_str(&format!(": {}", active.join(", ")));
    } else if !w.reason.is_empty() {
        out.push_str(&format!(": {}", w.reason));
    }
    out.push('\n');
    out
}

pub async fn get(target: &Target, name: &str) -> Result<pb::Workflow, CliError> {
    let mut client = target.workflows().await?;
    target
        .call(client.get(pb::GetWorkflowRequest {
            name: name.to_string(),
        }))
        .await
}

pub async fn list(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.workflows().await?;
    let r = target
        .call(client.list(pb::ListWorkflowsRequest {}))
        .await?;
    if output == OutputFormat::Json {
        return pretty(&Value::Array(r.workflows.iter().map(to_json).collect()));
    }
    let now = format::now_unix_ms();
    let mut t = Table::new(&[
        "NAME",
        "PHASE",
        "STEPS DONE",
        "CURRENT",
        "CREATED",
        "SCHEDULE",
    ]);
    for w in &r.workflows {
        let done = w
            .steps
            .iter()
            .filter(|s| {
                s.parent.is_empty()
                    && !matches!(
                        s.state.as_str(),
                        "waiting" | "running" | "awaiting-approval"
                    )
            })
            .count();
        let top = w.steps.iter().filter(|s| s.parent.is_empty()).count();
        let current = w
            .steps
            .iter()
            .filter(|s| s.parent.is_empty())
            .find(|s| s.state == "running" || s.state == "awaiting-approval")
            .map(|s| format!("{} ({})", s.name, s.state))
            .unwrap_or_else(|| "-".into());
        t.row([
            w.name.clone(),
            w.phase.clone(),
            format!("{done}/{top}"),
            current,
            format::ago(now, w.created_unix_ms),
            if w.schedule.is_empty() {
                "-".into()
            } else {
                w.schedule.clone()
            },
        ]);
    }
    Ok(t.render())
}

pub async fn describe(
    target: &Target,
    name: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let w = get(target, name).await?;
    if output == OutputFormat::Json {
        return pretty(&to_json(&w));
    }
    Ok(render(&w))
}

/// The text of `describe workflow` (and of `run`'s report).
pub fn render(w: &pb::Workflow) -> String {
    let mut out = format!(
        "Name:      {}\nPhase:     {}\nReason:    {}\nCreated:   {} by {}\nStarted:   {}\nEnded:     {}\nDeadline:  {}\n",
        w.name,
        w.phase,
        if w.reason.is_empty() { "-" } else { &w.reason },
        format::timestamp(w.created_unix_ms),
        w.created_by,
        stamp(w.started_unix_ms),
        stamp(w.ended_unix_ms),
        stamp(w.deadline_unix_ms),
    );
    if !w.schedule.is_empty() {
        out.push_str(&format!("Schedule:  {}\n", w.schedule));
    }
    out.push_str("\nSteps:\n");
    let mut t = Table::new(&[
        "STEP",
        "KIND",
        "STATE",
        "STARTED",
        "ENDED",
        "DEADLINE",
        "EXPERIMENT",
        "MESSAGE",
    ]);
    for s in &w.steps {
        let name = if s.parent.is_empty() {
            s.name.clone()
        } else {
            format!("  {}", s.name)
        };
        t.row([
            name,
            s.kind.clone(),
            s.state.clone(),
            stamp(s.started_unix_ms),
            stamp(s.ended_unix_ms),
            stamp(s.deadline_unix_ms),
            if s.experiment.is_empty() {
                "-".into()
            } else {
                s.experiment.clone()
            },
            s.message.clone(),
        ]);
    }
    out.push_str(&t.render());
    if let Some(h) = &w.hypothesis {
        out.push_str(&super::experiments::render::hypothesis(h));
    }
    if !w.log.is_empty() {
        out.push_str("\nLog:\n");
        for l in &w.log {
            out.push_str(&format!(
                "  {}  {}\n",
                format::timestamp_ms(l.at_unix_ms),
                l.message
            ));
        }
    }
    out
}

fn stamp(ms: i64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        format::timestamp_ms(ms)
    }
}

pub async fn approve(
    target: &Target,
    name: &str,
    step: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.workflows().await?;
    let w = target
        .call(client.approve(pb::ApproveStepRequest {
            name: name.to_string(),
            step: step.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&to_json(&w)),
        OutputFormat::Table => Ok(format!("step {step} approved; {}", line(&w))),
    }
}

pub async fn abort(
    target: &Target,
    name: &str,
    reason: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.workflows().await?;
    let w = target
        .call(client.abort(pb::AbortWorkflowRequest {
            name: name.to_string(),
            reason: reason.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&to_json(&w)),
        OutputFormat::Table => Ok(line(&w)),
    }
}

pub async fn delete(target: &Target, name: &str) -> Result<String, CliError> {
    let mut client = target.workflows().await?;
    target
        .call(client.delete(pb::DeleteWorkflowRequest {
            name: name.to_string(),
        }))
        .await?;
    Ok(format!(
        "workflow {name} deleted (with the records of its experiments)\n"
    ))
}

pub async fn delete_experiment(target: &Target, name: &str) -> Result<String, CliError> {
    let mut client = target.experiments().await?;
    target
        .call(client.delete(pb::DeleteExperimentRequest {
            name: name.to_string(),
        }))
        .await?;
    Ok(format!("experiment {name} deleted\n"))
}
