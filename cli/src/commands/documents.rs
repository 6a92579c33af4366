//! `apply -f FILE` for files of several documents or of kind Schedule or Workflow: each
//! document goes to its service, in file order; the first refusal stops (the documents before
//! it were applied, and the output says which).

use faultline_core::documents::{Document, Kind};
use faultline_proto::pb;
use serde_json::{json, Value};

use super::{pretty, schedules, workflows};
use crate::args::{ApplyArgs, OutputFormat};
use crate::client::Target;
use crate::error::CliError;

pub async fn apply_all(
    target: &Target,
    args: &ApplyArgs,
    docs: Vec<Document>,
    output: OutputFormat,
) -> Result<String, CliError> {
    if args.dry_run || args.no_start {
        if let Some(d) = docs.iter().find(|d| d.kind != Kind::Experiment) {
            return Err(CliError::Usage {
                flag: if args.dry_run {
                    "--dry-run"
                } else {
                    "--no-start"
                },
                reason: format!(
                    "applies to experiments only; the file holds {} {:?}",
                    d.kind.as_str(),
                    d.name
                ),
            });
        }
    }
    let mut lines = String::new();
    let mut values = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let done = apply_one(target, args, d).await;
        let (line, value) = match done {
            Ok(v) => v,
            Err(e) if i > 0 => {
                return Err(CliError::Output(format!(
                    "{lines}document {} ({} {:?}) was refused, and the ones after it were not sent: {e}",
                    i + 1,
                    d.kind.as_str(),
                    d.name
                )))
            }
            Err(e) => return Err(e),
        };
        lines.push_str(&line);
        values.push(value);
    }
    match output {
        OutputFormat::Json => pretty(&Value::Array(values)),
        OutputFormat::Table => Ok(lines),
    }
}

async fn apply_one(
    target: &Target,
    args: &ApplyArgs,
    d: &Document,
) -> Result<(String, Value), CliError> {
    match d.kind {
        Kind::Experiment => {
            let mut client = target.experiments().await?;
            let r = target
                .call(client.create(pb::CreateExperimentRequest {
                    document: d.text.clone(),
                    dry_run: args.dry_run,
                    start: !args.dry_run && !args.no_start,
                }))
                .await?;
            let e = r.experiment.unwrap_or_default();
            if args.dry_run {
                let selection = r.plan.map(|p| p.selection).unwrap_or_default();
                return Ok((
                    format!("experiment {} (dry run): {selection}\n", e.name),
                    json!({"kind": "Experiment", "name": e.name, "dry_run": true, "selection": selection}),
                ));
            }
            let phase = crate::summary::phase_name(e.phase);
            Ok((
                format!("experiment {} is {phase}\n", e.name),
                json!({"kind": "Experiment", "name": e.name, "phase": phase}),
            ))
        }
        Kind::Schedule => {
            let mut client = target.schedules().await?;
            let s = target
                .call(client.apply(pb::ApplyScheduleRequest {
                    document: d.text.clone(),
                }))
                .await?;
            let mut v = schedules::to_json(&s);
            v["kind"] = json!("Schedule");
            Ok((schedules::applied(&s), v))
        }
        Kind::Workflow => {
            let mut client = target.workflows().await?;
            let w = target
                .call(client.create(pb::CreateWorkflowRequest {
                    document: d.text.clone(),
                }))
                .await?;
            let mut v = workflows::to_json(&w);
            v["kind"] = json!("Workflow");
            Ok((workflows::line(&w), v))
        }
    }
}
