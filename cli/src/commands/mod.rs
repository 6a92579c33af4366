//! One module per `faultctl` command; each returns the text to print so it can be tested.

mod agents;
mod audit;
mod certs;
mod fleet;

use serde_json::Value;

use crate::args::{AgentsCommand, CertsCommand, Cli, Command, OutputFormat};
use crate::client::Target;
use crate::error::CliError;

/// Runs the command chosen on the command line and returns what to print on stdout.
pub async fn run(cli: &Cli) -> Result<String, CliError> {
    let target = Target::from_cli(cli);
    match &cli.command {
        Command::Version => version(cli.output),
        Command::Certs(CertsCommand::Init(args)) => certs::init(args, &cli.certs_dir, cli.output),
        Command::Agents(AgentsCommand::List) => agents::list(&target, cli.output).await,
        Command::Audit(args) => audit::show(&target, args.limit, cli.output).await,
        Command::Policy => fleet::policy(&target, cli.output).await,
        Command::Halt(args) => fleet::halt(&target, &args.reason, cli.output).await,
        Command::Resume => fleet::resume(&target, cli.output).await,
    }
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
