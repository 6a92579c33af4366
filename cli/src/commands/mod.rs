//! One module per `faultctl` command; each returns the text to print so it can be tested.

mod agents;
mod audit;
mod certs;
pub(crate) mod experiments;
mod fleet;
mod tokens;

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::args::{
    AgentsCommand, CertsCommand, Cli, Command, DescribeCommand, GetCommand, OutputFormat,
    TokensCommand,
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
        Command::Abort(args) => experiments::abort(&target, &args.name, &args.reason, o).await,
        Command::Report(args) => experiments::report(&target, &args.name, args.format, o).await,
        Command::Dashboard(args) => {
            crate::dashboard::run(&target, args, out).await?;
            return Ok(Printed::ok(String::new()));
        }
        Command::Watch(args) => {
            let style = experiments::watch::Style::pick(o, std::io::stdout().is_terminal());
            return experiments::watch::watch(&target, &args.name, style, out).await;
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
