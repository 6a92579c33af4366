//! The experiment commands: `apply`, `start`, `get experiments`, `describe experiment`,
//! `abort`, `report` (and `watch` in [`watch`]), each a call of the Experiments service.

mod junit;
mod plan;
pub(crate) mod render;
pub mod run;
mod tables;
pub mod watch;

#[cfg(test)]
pub(crate) mod fixture;

use std::io::Read;
use std::path::Path;

use faultline_proto::pb;
use serde_json::{json, Value};

use super::pretty;
use crate::args::experiment::MAX_DOCUMENT_BYTES;
use crate::args::{ApplyArgs, OutputFormat, PhaseArg, ReportFormat};
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::json;

/// `apply -f FILE [--dry-run] [--no-start]`.
pub async fn apply(
    target: &Target,
    args: &ApplyArgs,
    output: OutputFormat,
) -> Result<String, CliError> {
    let document = read_document(&args.file)?;
    // Several documents, or a Schedule or Workflow: each to its service. A single
    // experiment (or a file that does not split) goes as it is, as before.
    match faultline_core::documents::split(&document) {
        Ok(docs)
            if !(docs.len() == 1
                && docs[0].kind == faultline_core::documents::Kind::Experiment) =>
        {
            return super::documents::apply_all(target, args, docs, output).await;
        }
        _ => {}
    }
    let mut client = target.experiments().await?;
    let r = target
        .call(client.create(pb::CreateExperimentRequest {
            document,
            dry_run: args.dry_run,
            start: !args.dry_run && !args.no_start,
        }))
        .await?;
    let plan = r
        .plan
        .clone()
        .or_else(|| r.experiment.as_ref().and_then(|e| e.plan.clone()))
        .unwrap_or_default();
    match output {
        OutputFormat::Json => pretty(&json!({
            "dry_run": args.dry_run,
            "experiment": r.experiment.as_ref().map(json::experiment),
            "plan": json::plan(&plan),
        })),
        OutputFormat::Table if args.dry_run => Ok(render::dry_run(r.experiment.as_ref(), &plan)),
        OutputFormat::Table => match &r.experiment {
            Some(e) => Ok(render::created(e, Some(&plan))),
            None => Err(CliError::Output(
                "the coordinator answered Create without the experiment".into(),
            )),
        },
    }
}

/// Reads the document from FILE or stdin (`-`), refusing empty and oversized input.
pub fn read_document(path: &Path) -> Result<String, CliError> {
    let shown = path.display().to_string();
    let err = |reason: String| CliError::Document {
        path: if shown == "-" {
            "stdin".into()
        } else {
            shown.clone()
        },
        reason,
    };
    let mut bytes = Vec::new();
    let limit = MAX_DOCUMENT_BYTES + 1;
    let read = if shown == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| err(format!("cannot read the experiment document (-f): {e}")))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(err(format!(
            "the document is larger than {} (-f accepts at most that)",
            format::bytes(MAX_DOCUMENT_BYTES)
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| err(format!("the document is not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Err(err(
            "the document is empty; it needs apiVersion: faultline.dev/v1, kind: Experiment, \
             metadata and spec"
                .into(),
        ));
    }
    Ok(text)
}

/// `start NAME`.
pub async fn start(target: &Target, name: &str, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.experiments().await?;
    let e = target
        .call(client.start(pb::StartExperimentRequest {
            name: name.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&json::experiment(&e)),
        OutputFormat::Table => Ok(format!(
            "experiment {} is {}\n  watch it:  faultctl watch {}\n",
            e.name,
            crate::summary::phase_name(e.phase),
            e.name
        )),
    }
}

/// `get experiments [--phase P]`, newest first.
pub async fn list(
    target: &Target,
    phase: Option<PhaseArg>,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.experiments().await?;
    let r = target
        .call(client.list(pb::ListExperimentsRequest {
            phase: phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
        }))
        .await?;
    let mut experiments = r.experiments;
    if let Some(p) = phase {
        // Older coordinators may ignore the filter: apply it here too.
        experiments.retain(|e| crate::summary::phase_name(e.phase) == p.as_str());
    }
    experiments.sort_by(|a, b| {
        b.created_unix_ms
            .cmp(&a.created_unix_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    match output {
        OutputFormat::Json => pretty(&Value::Array(
            experiments.iter().map(json::experiment).collect(),
        )),
        OutputFormat::Table => Ok(render::list(&experiments, format::now_unix_ms())),
    }
}

/// `describe experiment NAME`.
pub async fn describe(
    target: &Target,
    name: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let e = get(target, name).await?;
    match output {
        OutputFormat::Json => pretty(&json::experiment(&e)),
        OutputFormat::Table => Ok(render::describe(&e, format::now_unix_ms())),
    }
}

/// Experiments.Get.
pub async fn get(target: &Target, name: &str) -> Result<pb::Experiment, CliError> {
    let mut client = target.experiments().await?;
    target
        .call(client.get(pb::GetExperimentRequest {
            name: name.to_string(),
        }))
        .await
}

/// `abort NAME [--reason TEXT]`.
pub async fn abort(
    target: &Target,
    name: &str,
    reason: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.experiments().await?;
    let e = target
        .call(client.abort(pb::AbortExperimentRequest {
            name: name.to_string(),
            reason: reason.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&json::experiment(&e)),
        OutputFormat::Table => Ok(aborted(&e)),
    }
}

fn aborted(e: &pb::Experiment) -> String {
    let c = crate::summary::counts(e);
    let mut out = format!(
        "experiment {} is {}: {}\n",
        e.name,
        crate::summary::phase_name(e.phase),
        render::counts_line(&c)
    );
    if c.holding > 0 || c.pending > 0 {
        out.push_str(&format!(
            "  reverts are on their way; follow them with `faultctl watch {}`\n",
            e.name
        ));
    }
    out.push_str(&format!("  report:  faultctl report {}\n", e.name));
    out
}

/// `report NAME [--format md|json]`: the coordinator's report, printed as it is.
pub async fn report(
    target: &Target,
    name: &str,
    format: Option<ReportFormat>,
    output: OutputFormat,
) -> Result<String, CliError> {
    let format = format.unwrap_or(match output {
        OutputFormat::Json => ReportFormat::Json,
        OutputFormat::Table => ReportFormat::Md,
    });
    if format == ReportFormat::Junit {
        return Ok(junit::render(&get(target, name).await?));
    }
    let mut client = target.experiments().await?;
    let r = target
        .call(client.report(pb::ReportRequest {
            name: name.to_string(),
            format: format.as_str().to_string(),
        }))
        .await?;
    let mut text = match format {
        ReportFormat::Md | ReportFormat::Junit => r.markdown,
        ReportFormat::Json => r.json,
    };
    if text.trim().is_empty() {
        return Err(CliError::Output(format!(
            "the coordinator sent an empty {} report for {name}",
            format.as_str()
        )));
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_read_whole_and_refused_when_empty_or_huge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "kind: Experiment\n").expect("write");
        assert_eq!(read_document(&ok).expect("reads"), "kind: Experiment\n");

        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, " \n").expect("write");
        let e = read_document(&empty).expect_err("empty");
        assert!(e.to_string().contains("the document is empty"), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'a'; 1024 * 1024 + 1]).expect("write");
        let e = read_document(&big).expect_err("too big");
        assert!(e.to_string().contains("larger than 1.0 MiB"), "{e}");

        let missing = dir.path().join("missing.yaml");
        let e = read_document(&missing).expect_err("missing");
        let text = e.to_string();
        assert!(text.starts_with(&missing.display().to_string()), "{text}");
        assert!(
            text.contains("cannot read the experiment document (-f)"),
            "{text}"
        );
    }

    #[test]
    fn abort_answer_points_at_watch_while_reverts_are_pending() {
        let mut e = fixture::aborted();
        e.targets[0].state = pb::FaultState::Applied as i32;
        let text = aborted(&e);
        assert!(
            text.starts_with("experiment checkout-loss is aborted: 2 agent(s)"),
            "{text}"
        );
        assert!(text.contains("faultctl watch checkout-loss"), "{text}");
        let text = aborted(&fixture::aborted());
        assert!(!text.contains("faultctl watch"), "{text}");
    }
}
