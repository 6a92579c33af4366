//! `faultctl`: the operator CLI for a Faultline coordinator (experiments, certificates, agents,
//! audit log, policy, halt and resume).
#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod dashboard;
mod error;
mod faults;
mod format;
mod json;
mod summary;
mod table;
mod targets;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(commands::run(&cli, &mut stdout)) {
        Ok(printed) => {
            // A closed pipe (`faultctl agents list | head`) is not an error worth reporting.
            let mut lock = stdout.lock();
            let _ = lock.write_all(printed.text.as_bytes());
            let _ = lock.flush();
            ExitCode::from(printed.exit)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
