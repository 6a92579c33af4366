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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command, DeleteCommand, ScheduleCommand, WorkflowCommand};

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["faultctl"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").command
    }

    #[test]
    fn the_new_commands_parse() {
        let Command::Abort(a) = parse(&["abort", "workflow", "gd"]) else {
            panic!("abort");
        };
        assert_eq!(
            (a.name.as_str(), a.kind_name.as_deref()),
            ("workflow", Some("gd"))
        );
        let Command::Abort(a) = parse(&["abort", "gd"]) else {
            panic!("abort");
        };
        assert_eq!((a.name.as_str(), a.kind_name), ("gd", None));
        assert!(matches!(
            parse(&["delete", "experiment", "x"]),
            Command::Delete(DeleteCommand::Experiment(_))
        ));
        assert!(matches!(
            parse(&["schedule", "trigger", "nightly"]),
            Command::Schedule(ScheduleCommand::Trigger(_))
        ));
        let Command::Workflow(WorkflowCommand::Approve(a)) =
            parse(&["workflow", "approve", "gd", "gate"])
        else {
            panic!("approve");
        };
        assert_eq!((a.name.as_str(), a.step.as_str()), ("gd", "gate"));
        let bad = Cli::try_parse_from(["faultctl", "workflow", "approve", "gd", "Gate"]);
        assert!(bad
            .expect_err("uppercase step")
            .to_string()
            .contains("1..=63"));
    }
}
