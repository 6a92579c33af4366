//! Flags of the schedule and workflow commands: `schedule suspend|resume|trigger`,
//! `workflow approve`, `delete experiment|schedule|workflow`.

use clap::{Args, Subcommand};

use super::experiment::{parse_name, NameArg};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Stop firing until resumed; runs in progress go on (role operator or higher).
    Suspend(NameArg),
    /// Fire again from now on; fire times missed while suspended do not run (role operator or
    /// higher).
    Resume(NameArg),
    /// Start a run now, under the schedule's concurrency policy (role operator or higher).
    Trigger(NameArg),
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Let a step waiting for approval (`suspend: {approval: true}`) finish (role operator or
    /// higher).
    Approve(ApproveArgs),
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The workflow's name.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,
    /// The step waiting for approval.
    #[arg(value_name = "STEP", value_parser = parse_name)]
    pub step: String,
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Remove the record of an experiment that has ended; a pending or running one is refused
    /// (abort it first) (role operator or higher).
    #[command(visible_alias = "exp")]
    Experiment(NameArg),
    /// Remove a schedule; its runs in progress go on (role operator or higher).
    Schedule(NameArg),
    /// Remove a workflow that has ended, with the records of its experiments (role operator or
    /// higher).
    Workflow(NameArg),
}
