//! `faultline-agent`: parses and checks the flags, then runs the agent until SIGTERM or SIGINT,
//! which revert every fault before the process exits.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use faultline_agent::config::{
    check_certificate, DEFAULT_MAX_BACKOFF, DEFAULT_STATE_DIR, MAX_TELEMETRY_INTERVAL,
    MIN_TELEMETRY_INTERVAL,
};
use faultline_agent::faults::Unsupported;
use faultline_agent::{Agent, Config};
use faultline_core::{duration, Labels, NodeName};
use faultline_proto::tls::{CertPaths, CoordinatorUrl};
use tokio::signal::unix::{signal, SignalKind};

/// Exit code for bad flags (as clap uses).
const USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "faultline-agent",
    version = faultline_core::VERSION,
    about = "The Faultline node agent: keeps a mutual-TLS session with the coordinator, reports \
             telemetry, and injects and reverts faults on this node. Every fault is reverted when \
             the session lease lapses, on SIGTERM/SIGINT and at start-up."
)]
struct Args {
    /// Coordinator address, https://HOST:PORT (the port defaults to 7443; there is no plaintext mode).
    #[arg(long, env = "FAULTLINE_COORDINATOR", value_name = "URL", value_parser = parse_url)]
    coordinator: CoordinatorUrl,

    /// This node's name: 1..=253 lowercase letters, digits, '-' or '.', starting and ending with a
    /// letter or digit. Must match the agent certificate (agent/<name>). [default: $NODE_NAME,
    /// then the hostname]
    #[arg(long, env = "FAULTLINE_NODE_NAME", value_name = "NAME", value_parser = parse_node)]
    node_name: Option<NodeName>,

    /// Labels of this node, k=v,k=v (keys [prefix/]name with name 1..=63 chars; values 0..=63
    /// chars of letters, digits, '-', '_', '.').
    #[arg(long, env = "FAULTLINE_LABELS", value_name = "K=V,...", default_value = "", value_parser = parse_labels)]
    labels: Labels,

    /// Directory for the agent's journal and lock (created 0700 if missing; one agent per directory).
    #[arg(long, env = "FAULTLINE_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Where to serve /metrics, /healthz and /readyz over plain HTTP: ADDR:PORT, or "none" to
    /// serve nothing.
    #[arg(long, env = "FAULTLINE_METRICS_LISTEN", value_name = "ADDR:PORT", default_value = "0.0.0.0:9465", value_parser = parse_listen)]
    metrics_listen: MetricsListen,

    /// Directory in the `faultctl certs init` layout: this agent uses agent-<node-name>.pem,
    /// agent-<node-name>-key.pem and ca.pem. Re-read at every reconnect.
    #[arg(long, env = "FAULTLINE_CERTS_DIR", value_name = "DIR")]
    certs_dir: Option<PathBuf>,

    /// Agent certificate (PEM); overrides the one from --certs-dir.
    #[arg(long, env = "FAULTLINE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// Agent private key (PEM); overrides the one from --certs-dir.
    #[arg(long, env = "FAULTLINE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// CA certificate that signed the coordinator's certificate (PEM); overrides ca.pem from --certs-dir.
    #[arg(long, env = "FAULTLINE_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// How often to send telemetry, 100ms..=60s.
    #[arg(long, env = "FAULTLINE_TELEMETRY_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    telemetry_interval: Duration,

    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, env = "FAULTLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy)]
struct MetricsListen(Option<SocketAddr>);

fn parse_url(s: &str) -> Result<CoordinatorUrl, String> {
    CoordinatorUrl::parse(s).map_err(|e| e.to_string())
}

fn parse_node(s: &str) -> Result<NodeName, String> {
    s.parse()
        .map_err(|e: faultline_core::labels::LabelError| e.to_string())
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    Labels::parse(s).map_err(|e| e.to_string())
}

fn parse_listen(s: &str) -> Result<MetricsListen, String> {
    match s {
        "none" | "off" | "" => Ok(MetricsListen(None)),
        _ => s.parse().map(|a| MetricsListen(Some(a))).map_err(|_| {
            format!("{s:?} is not ADDR:PORT (e.g. 0.0.0.0:9465, 127.0.0.1:0) or \"none\"")
        }),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    duration::parse_in_range(
        "--telemetry-interval",
        s,
        MIN_TELEMETRY_INTERVAL,
        MAX_TELEMETRY_INTERVAL,
    )
    .map_err(|e| e.to_string())
}

/// --node-name, else $NODE_NAME, else the hostname (lowercased).
fn resolve_node_name(flag: Option<NodeName>) -> Result<NodeName, String> {
    if let Some(n) = flag {
        return Ok(n);
    }
    if let Some(v) = std::env::var_os("NODE_NAME") {
        let v = v.to_string_lossy().into_owned();
        return v.parse().map_err(|e| {
            format!("--node-name is not given and $NODE_NAME {v:?} is not usable: {e}")
        });
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
        format!(
            "--node-name is not given, $NODE_NAME is unset and the hostname cannot be read: {e}"
        )
    })?;
    let host = host.trim().to_lowercase();
    host.parse().map_err(|e| {
        format!("--node-name is not given, $NODE_NAME is unset and the hostname {host:?} is not usable: {e}")
    })
}

fn resolve_certs(args: &Args, node: &NodeName) -> Result<CertPaths, String> {
    let from_dir = args
        .certs_dir
        .as_ref()
        .map(|d| CertPaths::in_dir(d, &format!("agent-{node}")));
    let pick = |explicit: &Option<PathBuf>, from: Option<PathBuf>, flag: &str| {
        explicit.clone().or(from).ok_or_else(|| {
            format!(
                "no certificates: pass --certs-dir DIR (holding agent-{node}.pem, agent-{node}-key.pem \
                 and ca.pem), or {flag} together with the other explicit files (--tls-cert, --tls-key, --ca)"
            )
        })
    };
    Ok(CertPaths {
        cert: pick(
            &args.tls_cert,
            from_dir.as_ref().map(|p| p.cert.clone()),
            "--tls-cert",
        )?,
        key: pick(
            &args.tls_key,
            from_dir.as_ref().map(|p| p.key.clone()),
            "--tls-key",
        )?,
        ca: pick(&args.ca, from_dir.as_ref().map(|p| p.ca.clone()), "--ca")?,
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(USAGE)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let node_name = match resolve_node_name(args.node_name.clone()) {
        Ok(n) => n,
        Err(e) => return usage_error(&e),
    };
    let tls = match resolve_certs(&args, &node_name) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = check_certificate(&tls.cert, &node_name) {
        return usage_error(&e.to_string());
    }
    init_logging(args.log_format);
    let metrics = match args.metrics_listen.0 {
        None => None,
        Some(_) => match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("error: cannot install the metrics recorder: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = Config {
        coordinator: args.coordinator,
        node_name,
        labels: args.labels,
        state_dir: args.state_dir,
        metrics_listen: args.metrics_listen.0,
        tls,
        telemetry_interval: args.telemetry_interval,
        max_backoff: DEFAULT_MAX_BACKOFF,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, metrics)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM during start-up is not lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let agent = Agent::start(config, Arc::new(Unsupported), metrics).await?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "received {name}: shutting down");
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
