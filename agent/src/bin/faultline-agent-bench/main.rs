//! `faultline-agent-bench` (root; `make bench-agent`): the agent's own figures, each measured
//! beside what the anchors do in one run: apply and revert latency per fault kind through the
//! real engine and drivers (cold and warm apart for faults in kept TCX links), against `tc` and
//! `iptables` exec'd through `nsenter`. Everything it
//! makes (namespaces, veth pair, qdiscs, rules, eBPF links, workers, the journal) is removed
//! when it ends, also on failure.

mod agentproc;
mod costs;
mod datapath;
mod latency;
mod report;
mod session;
mod world;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use faultline_agent::engine::{Engine, EngineConfig, Limits};
use faultline_agent::host::HostConfig;
use faultline_agent::net::KernelLease;
use faultline_agent::FaultManager;

#[derive(Debug, Parser)]
#[command(
    name = "faultline-agent-bench",
    about = "The agent's apply/revert latency beside tc and iptables (root)"
)]
struct Args {
    /// Apply+revert cycles per fault kind and per anchor command (1..=10000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10000))]
    runs: u16,
    /// Pause after each revert before the next apply, in ms (0..=10000). A revert's cleanup
    /// (closing the fault's objects, detaching cgroup links) finishes on a background thread;
    /// an apply right behind it competes with that (0 measures back-to-back orders).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10000))]
    gap_ms: u64,
    /// Also write the figures as JSON to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds of iperf3 per data-path configuration (0 skips the data-path figures).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=600))]
    datapath_secs: u32,
    /// SIGKILLs of a `faultline-agent run` holding a 100% drop, each timed to the first packet
    /// through (0 skips these and the footprint figures).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=1000))]
    kill_runs: u16,
    /// A faultline-coordinator binary: with --faultctl-bin, also measure the agent daemon in a
    /// real session, sending telemetry every second: idle, and holding 16 drop faults of an
    /// experiment.
    #[arg(long, requires = "faultctl_bin")]
    coordinator_bin: Option<PathBuf>,
    /// The faultctl binary that makes the session's development certificates.
    #[arg(long, requires = "coordinator_bin")]
    faultctl_bin: Option<PathBuf>,
    /// The faultline-agent binary resource-fault workers re-exec (default: next to this one).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
}

fn agent_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    let p = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("reading /proc/self/exe")?
            .with_file_name("faultline-agent"),
    };
    anyhow::ensure!(
        p.is_file(),
        "--agent-bin {}: no such file (build it: cargo build --release -p faultline-agent --bin faultline-agent)",
        p.display()
    );
    Ok(p)
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "faultline-agent-bench needs root (network namespaces, eBPF, qdiscs)"
    );
    let bin = agent_bin(args.agent_bin)?;
    let host = HostConfig {
        agent_exe: Some(bin.clone()),
        ..HostConfig::default()
    };
    let runs = usize::from(args.runs);
    let gap = std::time::Duration::from_millis(args.gap_ms);
    let state = world::TempDir::new()?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let load_before = report::load_now();
    let world = world::World::new()?;
    let (rows, costs, process) = rt.block_on(async {
        let drivers = faultline_agent::drivers::all(&host, None, &KernelLease::new());
        let engine = Engine::open(
            EngineConfig::new(state.0.join("journal"), Limits::default()),
            drivers,
        )?;
        let mut rows = Vec::new();
        let mut costs = Vec::new();
        let result: Result<()> = async {
            for (what, doc) in latency::fault_docs(&world) {
                rows.push(latency::agent_row(&engine, what, &doc, runs, gap).await?);
            }
            if args.datapath_secs > 0 {
                costs = costs::all(&engine, &world, args.datapath_secs).await?;
            }
            Ok(())
        }
        .await;
        let _ = engine
            .revert_all(faultline_agent::RevertReason::Shutdown)
            .await;
        engine.close().await;
        result?;
        rows.push(latency::tc_row(&world, runs, gap)?);
        rows.push(latency::iptables_row(&world, runs, gap)?);
        let mut process = report::Process::default();
        if args.kill_runs > 0 {
            process.kill_ms =
                agentproc::sigkill_to_inert(&world, &bin, usize::from(args.kill_runs))?;
            for n in [1, 16] {
                let (rss, cores) =
                    agentproc::holding(&world, &bin, n, std::time::Duration::from_secs(10))?;
                process.holding.push((n, rss, cores));
            }
        }
        if let (Some(c), Some(f)) = (&args.coordinator_bin, &args.faultctl_bin) {
            process.session = Some(session::footprints(
                &bin,
                c,
                f,
                16,
                &agentproc::flow_target(&world),
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(20),
            )?);
        }
        anyhow::Ok((rows, costs, process))
    })?;
    drop(world);
    let report = report::Report::new(runs, args.gap_ms, rows, costs, process, load_before);
    print!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, report.json()?)
            .with_context(|| format!("--json {}: cannot write", path.display()))?;
    }
    Ok(())
}
