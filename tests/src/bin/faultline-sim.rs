//! `faultline-sim`: many simulated agents in one process over the real protocol and real mutual
//! TLS (`agents`), and the coordinator benchmark built on them (`bench`).
#![forbid(unsafe_code)]

#[path = "faultline-sim/agents.rs"]
mod agents;
#[path = "faultline-sim/bench.rs"]
mod bench;
#[path = "faultline-sim/coordinator.rs"]
mod coordinator;
#[path = "faultline-sim/shared.rs"]
mod shared;
#[path = "faultline-sim/stats.rs"]
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use faultline_identity::tls::CoordinatorUrl;

const USAGE: &str = "\
usage:
  faultline-sim bench [--agents 100,1000] [--runs 20] [--idle 30s] [--hold 10s]
                      [--coordinator-bin PATH] [--keep] [--json FILE]
      Starts the coordinator binary as a child process on 127.0.0.1, connects N simulated
      agents per size, and prints: time from Create(start) to every fault acknowledged applied;
      time from Experiments.Abort, and from a telemetry guard breach, to every revert
      acknowledged (p50/p99 over --runs runs each); coordinator CPU and RSS while the agents
      idle (telemetry every second) for --idle, and then (unless --hold 0s) CPU, RSS and
      storage writes for --hold while one experiment holds a fault on every agent with its
      guard evaluated every second. --coordinator-bin defaults to the
      faultline-coordinator next to this binary. A run that fails is counted (failed runs,
      reverts never acknowledged) and the next one goes on; the exit status is 1 when any
      run failed. --json FILE also writes the figures per fleet size as JSON.
  faultline-sim agents --coordinator URL --certs-dir DIR [--count 100] [--prefix sim-]
                       [--telemetry-interval 1s]
      Runs --count simulated agents against a running coordinator until Ctrl-C. DIR holds the
      `faultctl certs init` layout including ca-key.pem; agent certificates for
      <prefix><00000..> are issued into it when missing. The agents carry the labels sim=true
      and zone=z0|z1|z2.
";

/// Every failure of the simulator, as text for the operator.
#[derive(Debug)]
pub struct SimError(pub String);

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

macro_rules! from_error {
    ($($t:ty),*) => {$(
        impl From<$t> for SimError {
            fn from(e: $t) -> Self {
                SimError(faultline_identity::tls::error_chain(&e))
            }
        }
    )*};
}
from_error!(
    std::io::Error,
    faultline_identity::tls::TlsError,
    faultline_identity::pki::PkiError
);

impl From<tonic::Status> for SimError {
    fn from(s: tonic::Status) -> Self {
        SimError(format!(
            "coordinator answered {:?}: {}",
            s.code(),
            s.message()
        ))
    }
}

/// `--flag value` pairs and bare `--flag`s after the subcommand.
struct Flags(Vec<String>);

impl Flags {
    fn value(&mut self, flag: &str) -> Result<Option<String>, SimError> {
        let Some(i) = self.0.iter().position(|a| a == flag) else {
            return Ok(None);
        };
        if i + 1 >= self.0.len() {
            return Err(SimError(format!("{flag} needs a value")));
        }
        let v = self.0.remove(i + 1);
        self.0.remove(i);
        Ok(Some(v))
    }

    fn switch(&mut self, flag: &str) -> bool {
        match self.0.iter().position(|a| a == flag) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }

    fn done(self) -> Result<(), SimError> {
        match self.0.first() {
            Some(extra) => Err(SimError(format!("unknown argument {extra:?}"))),
            None => Ok(()),
        }
    }
}

fn number(flag: &str, v: &str, min: usize, max: usize) -> Result<usize, SimError> {
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| SimError(format!("{flag}: {v:?} is outside {min}..={max}")))
}

fn duration(flag: &str, v: &str, min: Duration, max: Duration) -> Result<Duration, SimError> {
    faultline_core::duration::parse_in_range(flag, v, min, max).map_err(|e| SimError(e.to_string()))
}

fn bench_options(mut f: Flags) -> Result<bench::BenchOptions, SimError> {
    let sizes = match f.value("--agents")? {
        Some(v) => v
            .split(',')
            .map(|s| number("--agents", s, 1, 10_000))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![100, 1000],
    };
    let runs = match f.value("--runs")? {
        Some(v) => number("--runs", &v, 0, 1000)?,
        None => 20,
    };
    let idle = match f.value("--idle")? {
        Some(v) => duration(
            "--idle",
            &v,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        None => Duration::from_secs(30),
    };
    let hold = match f.value("--hold")? {
        Some(v) => duration("--hold", &v, Duration::ZERO, Duration::from_secs(3600))?,
        None => Duration::from_secs(10),
    };
    let coordinator_bin = match f.value("--coordinator-bin")? {
        Some(v) => PathBuf::from(v),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("faultline-coordinator"))
            .ok_or_else(|| SimError("cannot locate this binary's directory".into()))?,
    };
    let keep = f.switch("--keep");
    let json = f.value("--json")?.map(PathBuf::from);
    f.done()?;
    Ok(bench::BenchOptions {
        coordinator_bin,
        sizes,
        runs,
        idle,
        hold,
        keep,
        json,
    })
}

async fn run_agents(mut f: Flags) -> Result<(), SimError> {
    let url = f
        .value("--coordinator")?
        .ok_or_else(|| SimError("--coordinator URL is required".into()))?;
    let url = CoordinatorUrl::parse(&url)?;
    let certs = f
        .value("--certs-dir")?
        .map(PathBuf::from)
        .ok_or_else(|| SimError("--certs-dir DIR is required".into()))?;
    let count = match f.value("--count")? {
        Some(v) => number("--count", &v, 1, 10_000)?,
        None => 100,
    };
    let prefix = f.value("--prefix")?.unwrap_or_else(|| "sim-".into());
    let interval = match f.value("--telemetry-interval")? {
        Some(v) => duration(
            "--telemetry-interval",
            &v,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?,
        None => Duration::from_secs(1),
    };
    f.done()?;
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !certs.join(format!("agent-{n}.pem")).exists())
        .cloned()
        .collect();
    agents::issue_certs(&certs, &missing)?;
    let fleet = agents::Fleet::start(agents::FleetConfig {
        url,
        certs_dir: certs,
        names,
        telemetry_interval: interval,
        connect_concurrency: 64,
    });
    let took = fleet.wait_connected(Duration::from_secs(120)).await?;
    println!(
        "{count} simulated agents connected in {:.2} s; Ctrl-C stops them",
        took.as_secs_f64()
    );
    tokio::signal::ctrl_c().await?;
    fleet.stop().await;
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let command = args.remove(0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let flags = Flags(args);
    let result = match command.as_str() {
        "bench" => bench_options(flags).and_then(|opts| {
            let figures = runtime.block_on(bench::run(&opts))?;
            let header = format!(
                "faultline-sim bench: coordinator {}, {} run(s) per figure, {} CPU(s) on this \
                 machine (shared with the simulator)",
                opts.coordinator_bin.display(),
                opts.runs,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            print!("{}", stats::render(&figures, &header));
            if let Some(path) = &opts.json {
                let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
                let text = serde_json::to_string_pretty(&stats::json(&figures, opts.runs, cpus))
                    .map_err(|e| SimError(format!("encoding the figures: {e}")))?;
                std::fs::write(path, text + "\n")
                    .map_err(|e| SimError(format!("writing {}: {e}", path.display())))?;
                eprintln!("figures written to {}", path.display());
            }
            let failed: usize = figures.iter().map(|f| f.failed_runs).sum();
            if failed > 0 {
                return Err(SimError(format!(
                    "{failed} benchmark run(s) failed; see the lines marked FAILED"
                )));
            }
            Ok(())
        }),
        "agents" => runtime.block_on(run_agents(flags)),
        other => Err(SimError(format!("unknown command {other:?}\n{USAGE}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let usage = e.0.contains("--") && !e.0.contains('\n');
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
