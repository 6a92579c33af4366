//! `faultctl run -f FILE`: the CI gate. Creates and starts the experiment, follows it with the
//! live view of `watch`, prints its report, and exits 0 (completed, hypothesis passed or none),
//! 3 (aborted), 4 (failed or interrupted) or 5 (completed, hypothesis failed). A Workflow
//! document goes to [`crate::commands::workflow_run`]; a Schedule is refused (it has no one
//! run to follow).

use std::io::Write;

use faultline_proto::pb;

use super::watch::{self, Style};
use super::{read_document, render};
use crate::args::{OutputFormat, ReportFormat, RunArgs};
use crate::client::Target;
use crate::commands::Printed;
use crate::error::CliError;
use faultline_core::documents::{split, Kind};

pub async fn run(
    target: &Target,
    args: &RunArgs,
    output: OutputFormat,
    style: Style,
    out: &mut dyn Write,
) -> Result<Printed, CliError> {
    let document = read_document(&args.file)?;
    if let Some(kind) = other_kind(&document)? {
        return match kind {
            Kind::Schedule => Err(CliError::Usage {
                flag: "--file",
                reason: "a Schedule has no single run to follow: it starts runs at its times. \
                         Create it with `faultctl apply -f FILE`, start one run now with \
                         `faultctl schedule trigger NAME`, then follow that run \
                         (`faultctl watch RUN` or `faultctl describe workflow RUN`)"
                    .into(),
            }),
            // Kind::Workflow (an Experiment is not "other").
            _ => {
                crate::commands::workflow_run::run(target, args, document, output, style, out).await
            }
        };
    }
    let mut client = target.experiments().await?;
    let created = target
        .call(client.create(pb::CreateExperimentRequest {
            document,
            dry_run: false,
            start: true,
        }))
        .await?;
    let e = created.experiment.ok_or_else(|| {
        CliError::Output("the coordinator answered Create without the experiment".into())
    })?;
    if output == OutputFormat::Table {
        writeln!(out, "{}", render::created(&e, created.plan.as_ref()))?;
        out.flush()?;
    }
    let followed = watch::watch(target, &e.name, style, out).await?;
    if !followed.text.is_empty() {
        writeln!(out, "{}", followed.text)?;
    }
    let format = args.report.unwrap_or(match output {
        OutputFormat::Json => ReportFormat::Json,
        OutputFormat::Table => ReportFormat::Md,
    });
    if let Some(path) = &args.junit {
        let xml = super::report(target, &e.name, Some(ReportFormat::Junit), output).await?;
        std::fs::write(path, xml).map_err(|e| {
            CliError::Output(format!(
                "--junit {}: cannot write the JUnit report: {e}",
                path.display()
            ))
        })?;
    }
    let report = super::report(target, &e.name, Some(format), output).await?;
    Ok(Printed {
        text: report,
        exit: followed.exit,
    })
}

/// The kind of a one-document file that is not an experiment; `run` takes exactly one
/// document (a file that does not split goes to the coordinator as an experiment, which
/// names what is wrong with it).
fn other_kind(document: &str) -> Result<Option<Kind>, CliError> {
    match split(document) {
        Ok(docs) if docs.len() > 1 => Err(CliError::Usage {
            flag: "--file",
            reason: format!(
                "has {} documents; `faultctl run` follows one run (an Experiment or a \
                 Workflow): give it a file of one document, or use `faultctl apply -f FILE`",
                docs.len()
            ),
        }),
        Ok(docs) => Ok(docs
            .first()
            .map(|d| d.kind)
            .filter(|k| *k != Kind::Experiment)),
        Err(_) => Ok(None),
    }
}
