//! One module per `faultctl` command; each returns the text to print so it can be tested.

mod agents;
mod audit;
mod certs;
mod documents;
pub(crate) mod experiments;
mod fleet;
pub(crate) mod schedules;
mod tokens;
mod workflow_run;
pub(crate) mod workflows;

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::args::{
    AgentsCommand, CertsCommand, Cli, Command, DeleteCommand, DescribeCommand, GetCommand,
    OutputFormat, TokensCommand, WorkflowCommand,
};
use crate::client::Target;
use crate::error::CliError;

/// What a command leaves to print on stdout, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    pub text: String,
    pub exit: u8,
}

impl Printed {
    fn ok(text: String) -> Self {
        Printed { text, exit: 0 }
    }
}

/// Runs the command chosen on the command line. Most commands return all their output;
/// `watch` writes its live view to `out` as events arrive.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<Printed, CliError> {
    let target = Target::from_cli(cli);
    let o = cli.output;
    let text = match &cli.command {
        Command::Version => version(o),
        Command::Certs(CertsCommand::Init(args)) => certs::init(args, &cli.certs_dir, o),
        Command::Agents(AgentsCommand::List) => agents::list(&target, o).await,
        Command::Agents(AgentsCommand::Revoke(args)) => {
            tokens::revoke_agent(&target, &args.node, &args.reason, o).await
        }
        Command::Tokens(TokensCommand::Create(args)) => tokens::create(&target, args, o).await,
        Command::Tokens(TokensCommand::List) => tokens::list(&target, o).await,
        Command::Tokens(TokensCommand::Revoke(args)) => tokens::revoke(&target, &args.id, o).await,
        Command::Audit(args) => audit::show(&target, args.limit, o).await,
        Command::Policy => fleet::policy(&target, o).await,
        Command::Halt(args) => fleet::halt(&target, &args.reason, o).await,
        Command::Resume => fleet::resume(&target, o).await,
        Command::Apply(args) => experiments::apply(&target, args, o).await,
        Command::Start(args) => experiments::start(&target, &args.name, o).await,
        Command::Get(GetCommand::Experiments(args)) => {
            experiments::list(&target, args.phase, o).await
        }
        Command::Describe(DescribeCommand::Experiment(args)) => {
            experiments::describe(&target, &args.name, o).await
        }
        Command::Abort(args) => match (args.name.as_str(), &args.kind_name) {
            ("workflow", Some(name)) => workflows::abort(&target, name, &args.reason, o).await,
            ("experiment", Some(name)) => experiments::abort(&target, name, &args.reason, o).await,
            (_, Some(_)) => Err(CliError::Usage {
                flag: "abort",
                reason: "use `abort NAME`, `abort experiment NAME` or `abort workflow NAME`".into(),
            }),
            (name, None) => experiments::abort(&target, name, &args.reason, o).await,
        },
        Command::Get(GetCommand::Schedules) => schedules::list(&target, o).await,
        Command::Get(GetCommand::Workflows) => workflows::list(&target, o).await,
        Command::Describe(DescribeCommand::Schedule(args)) => {
            schedules::describe(&target, &args.name, o).await
        }
        Command::Describe(DescribeCommand::Workflow(args)) => {
            workflows::describe(&target, &args.name, o).await
        }
        Command::Schedule(cmd) => schedules::command(&target, cmd, o).await,
        Command::Workflow(WorkflowCommand::Approve(args)) => {
            workflows::approve(&target, &args.name, &args.step, o).await
        }
        Command::Delete(DeleteCommand::Experiment(args)) => {
            workflows::delete_experiment(&target, &args.name).await
        }
        Command::Delete(DeleteCommand::Schedule(args)) => {
            schedules::delete(&target, &args.name).await
        }
        Command::Delete(DeleteCommand::Workflow(args)) => {
            workflows::delete(&target, &args.name).await
        }
        Command::Report(args) => experiments::report(&target, &args.name, args.format, o).await,
        Command::Dashboard(args) => {
            crate::dashboard::run(&target, args, out).await?;
            return Ok(Printed::ok(String::new()));
        }
        Command::Watch(args) => {
            let style = experiments::watch::Style::pick(o, std::io::stdout().is_terminal());
            return experiments::watch::watch(&target, &args.name, style, out).await;
        }
        Command::Run(args) => {
            let style = experiments::watch::Style::pick(o, std::io::stdout().is_terminal());
            return experiments::run::run(&target, args, o, style, out).await;
        }
    }?;
    Ok(Printed::ok(text))
}

fn version(output: OutputFormat) -> Result<String, CliError> {
    match output {
        OutputFormat::Table => Ok(format!("faultctl {}\n", faultline_core::VERSION)),
        OutputFormat::Json => pretty(&serde_json::json!({
            "name": "faultctl",
            "version": faultline_core::VERSION,
        })),
    }
}

/// Pretty JSON followed by a newline.
fn pretty(value: &Value) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}
