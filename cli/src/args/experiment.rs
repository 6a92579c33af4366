//! Flags of the experiment commands: `apply`, `start`, `get experiments`, `describe experiment`,
//! `watch`, `abort` and `report`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Largest experiment document `apply -f` reads.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The experiment document (YAML or JSON, apiVersion faultline.dev/v1, kind Experiment);
    /// `-` reads it from stdin. At most 1 MiB.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// Only plan: print which agents would be selected, which faults they would get and why
    /// the others are excluded. Nothing is created or started.
    #[arg(long)]
    pub dry_run: bool,

    /// Create the experiment in phase pending without starting it (start it later with
    /// `faultctl start NAME`).
    #[arg(long, conflicts_with = "dry_run")]
    pub no_start: bool,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List experiments, newest first (role viewer or higher).
    #[command(visible_aliases = ["experiment", "exp"])]
    Experiments(GetExperimentsArgs),
    /// List schedules: expression, next fire, last runs (role viewer or higher).
    #[command(visible_alias = "schedule")]
    Schedules,
    /// List workflows, newest first (role viewer or higher).
    #[command(visible_alias = "workflow")]
    Workflows,
}

#[derive(Debug, Args)]
pub struct GetExperimentsArgs {
    /// Only experiments in this phase.
    #[arg(long, value_enum, value_name = "PHASE")]
    pub phase: Option<PhaseArg>,
}

/// Experiment phases, as `--phase` accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    Pending,
    Running,
    Completed,
    Aborted,
    Failed,
    Interrupted,
}

impl PhaseArg {
    /// The name sent in `ListExperimentsRequest.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseArg::Pending => "pending",
            PhaseArg::Running => "running",
            PhaseArg::Completed => "completed",
            PhaseArg::Aborted => "aborted",
            PhaseArg::Failed => "failed",
            PhaseArg::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DescribeCommand {
    /// Everything about one experiment: phase, times, plan, per-target results, guard
    /// timeline summary and verdict (role viewer or higher).
    #[command(visible_aliases = ["experiments", "exp"])]
    Experiment(NameArg),
    /// Everything about one schedule: expression, zone, policy, next fire, runs and skipped
    /// fire times with the reason (role viewer or higher).
    Schedule(NameArg),
    /// Everything about one workflow: each step's state, times, deadline and experiment
    /// (role viewer or higher).
    Workflow(NameArg),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The experiment's name (metadata.name of its document).
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The experiment's name; or `workflow` (or `experiment`) followed by the name.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,

    /// With `abort workflow NAME` / `abort experiment NAME`: the name.
    #[arg(value_name = "KIND_NAME", value_parser = parse_name, hide = true)]
    pub kind_name: Option<String>,

    /// Why it is aborted; recorded in the experiment's verdict and the audit log.
    #[arg(long, value_name = "TEXT", default_value = "aborted by faultctl", value_parser = parse_abort_reason)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The experiment's name.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,

    /// Markdown for people or the JSON record for scripts. Default: md, or json with `-o json`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
    /// JUnit XML for CI test tabs: the run, each steady-state check and each guard as a test
    /// case (written by faultctl from the experiment's record).
    Junit,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Md => "md",
            ReportFormat::Json => "json",
            ReportFormat::Junit => "junit",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment document (as for `apply`); `-` reads it from stdin. Its metadata.name
    /// must be new: give each CI run its own (e.g. with the pipeline id).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// The report printed at the end: md (default), json or junit.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub report: Option<ReportFormat>,

    /// Also write the JUnit XML report to this file (for CI test tabs).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
}

/// An experiment name as the document allows it: a DNS-1123 label of 1..=63 characters.
pub fn parse_name(value: &str) -> Result<String, String> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = !value.starts_with('-') && !value.ends_with('-');
    if value.is_empty() || value.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "{value:?} is not an experiment name: 1..=63 lowercase letters, digits or '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(value.to_string())
}

fn parse_abort_reason(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty: say why the experiment is aborted".into());
    }
    if trimmed.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123_labels() {
        assert_eq!(parse_name("checkout-loss"), Ok("checkout-loss".into()));
        assert_eq!(parse_name("a1"), Ok("a1".into()));
        for bad in ["", "-a", "a-", "Checkout", "a_b", "a.b", &"x".repeat(64)] {
            let err = parse_name(bad).expect_err(bad);
            assert!(err.contains("1..=63"), "{bad}: {err}");
        }
    }

    #[test]
    fn abort_reason_is_trimmed_and_bounded() {
        assert_eq!(parse_abort_reason("  slo  "), Ok("slo".into()));
        assert!(parse_abort_reason(" ").is_err());
        assert!(parse_abort_reason(&"r".repeat(1025)).is_err());
    }
}
