//! `faultline-agent`: parses and checks the flags, joins the host's cgroup namespace, then runs
//! the agent until SIGTERM or SIGINT, which revert every fault before the process exits.
//! Subcommands: `run` (standalone mode, faults from a file, no coordinator) and `recover`
//! (journal recovery and sweep after a crash).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use faultline_agent::config::file::AgentFile;
use faultline_agent::config::{
    check_certificate, DEFAULT_MAX_BACKOFF, DEFAULT_STATE_DIR, MAX_TELEMETRY_INTERVAL,
    MIN_TELEMETRY_INTERVAL,
};
use faultline_agent::engine::limits::MAX_MAX_DURATION;
use faultline_agent::engine::{Engine, EngineConfig};
use faultline_agent::enroll::{self, Enroller, IdentityFiles};
use faultline_agent::host::cgroupns;
use faultline_agent::standalone;
use faultline_agent::state_dir::StateDir;
use faultline_agent::{Agent, Config, RevertReason};
use faultline_core::{duration, Labels, NodeName};
use faultline_identity::tls::{CertPaths, CoordinatorUrl};
use tokio::signal::unix::{signal, SignalKind};

/// What joining the host's cgroup namespace at start did.
type CgroupNsOutcome = Result<cgroupns::Joined, cgroupns::CgroupNsError>;

/// Exit code for bad flags (as clap uses).
const USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "faultline-agent",
    version = faultline_core::VERSION,
    about = "The Faultline node agent: keeps a mutual-TLS session with the coordinator, reports \
             telemetry, and injects and reverts faults on this node. Every fault is reverted when \
             the session lease lapses, on SIGTERM/SIGINT and at start-up.",
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Standalone mode: apply the faults of a YAML file on this host without a coordinator,
    /// print progress, and revert them after --duration or on Ctrl-C/SIGTERM.
    Run(RunArgs),
    /// Revert every fault a crashed agent left in the journal of --state-dir, then sweep for
    /// orphaned workers, guards and io files; prints what it found.
    Recover(RecoverArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Fault file: one or more YAML documents separated by `---`, each one fault as written in
    /// an experiment (e.g. `kind: cpu` / `load: 50` / `workers: 1`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// How long the faults stay applied, 1s..=7d (and at most the config's max_duration).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_run_duration)]
    duration: Duration,
    #[command(flatten)]
    common: LocalArgs,
}

#[derive(Debug, clap::Args)]
struct RecoverArgs {
    #[command(flatten)]
    common: LocalArgs,
}

/// Flags shared by `run` and `recover`.
#[derive(Debug, clap::Args)]
struct LocalArgs {
    /// Directory of the agent's journal and lock (the daemon's, so a crash of either is
    /// recovered by the next start of either).
    #[arg(long, env = "FAULTLINE_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Agent config file (TOML): local limits and protected processes.
    #[arg(long, env = "FAULTLINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr (the level comes from RUST_LOG, default warn).
    #[arg(long, env = "FAULTLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Coordinator address, https://HOST:PORT (the port defaults to 7443; there is no plaintext mode).
    #[arg(long, env = "FAULTLINE_COORDINATOR", value_name = "URL", value_parser = parse_url, required = true)]
    coordinator: Option<CoordinatorUrl>,

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
    /// Required for enrollment.
    #[arg(long, env = "FAULTLINE_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Join token from `faultctl tokens create`: without certificate files, the agent enrolls
    /// with it on the coordinator's enrollment listener, keeps its key (0600) and certificate
    /// in <state-dir>/identity and renews them itself; once enrolled the token is not needed
    /// again unless the stored certificate has expired.
    #[arg(
        long,
        env = "FAULTLINE_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    join_token: Option<String>,

    /// A file holding the join token (mode 0600); instead of --join-token.
    #[arg(long, env = "FAULTLINE_JOIN_TOKEN_FILE", value_name = "FILE")]
    join_token_file: Option<PathBuf>,

    /// A projected Kubernetes ServiceAccount token (audience faultline), as the Helm chart
    /// mounts it: without certificate files, the agent enrolls with it instead of a join token
    /// (the coordinator checks it with TokenReview and requires its pod to run on this node).
    /// Re-read at each enrollment, since the kubelet replaces it.
    #[arg(long, env = "FAULTLINE_KUBERNETES_TOKEN_FILE", value_name = "FILE")]
    kubernetes_token_file: Option<PathBuf>,

    /// The coordinator's enrollment listener, https://HOST:PORT. [default: the --coordinator
    /// host, the next port (7444)]
    #[arg(long, env = "FAULTLINE_ENROLL_URL", value_name = "URL", value_parser = parse_url)]
    enroll_url: Option<CoordinatorUrl>,

    /// How often to send telemetry, 100ms..=60s.
    #[arg(long, env = "FAULTLINE_TELEMETRY_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    telemetry_interval: Duration,

    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, env = "FAULTLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Agent config file (TOML): local limits (allowed_kinds, max_concurrent_faults 1..=1000,
    /// max_duration 1s..=7d, io_paths) and protected pids, process names, cgroups and
    /// Kubernetes namespaces (protected_namespaces, pod_logs_dir).
    /// [default: built-in limits: all kinds, 16 faults, 1h]
    #[arg(long, env = "FAULTLINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
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

fn parse_run_duration(s: &str) -> Result<Duration, String> {
    duration::parse_in_range("--duration", s, Duration::from_secs(1), MAX_MAX_DURATION)
        .map_err(|e| e.to_string())
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

/// Certificate files given (`--certs-dir`, `--tls-cert`, `--tls-key`): those, checked to be this
/// node's. Otherwise the coordinator issues the identity: the files in <state-dir>/identity,
/// enrolled with the join token when they are missing or expired.
fn resolve_identity(
    args: &Args,
    coordinator: &CoordinatorUrl,
    node: &NodeName,
) -> Result<(CertPaths, Option<Arc<Enroller>>), String> {
    let token = enroll::read_token(args.join_token.as_deref(), args.join_token_file.as_deref())?;
    let kubernetes = args.kubernetes_token_file.clone();
    if token.is_some() && kubernetes.is_some() {
        return Err(
            "--join-token/--join-token-file and --kubernetes-token-file: give one credential, \
             not both"
                .into(),
        );
    }
    let explicit = args.certs_dir.is_some() || args.tls_cert.is_some() || args.tls_key.is_some();
    if explicit {
        if kubernetes.is_some() {
            return Err(
                "--kubernetes-token-file enrolls an agent that has no certificate files; it \
                 cannot be combined with --certs-dir, --tls-cert or --tls-key"
                    .into(),
            );
        }
        if token.is_some() {
            return Err(
                "--join-token/--join-token-file enroll an agent that has no certificate \
                        files; they cannot be combined with --certs-dir, --tls-cert or --tls-key"
                    .into(),
            );
        }
        let tls = resolve_certs(args, node)?;
        check_certificate(&tls.cert, node).map_err(|e| e.to_string())?;
        return Ok((tls, None));
    }
    let ca = args.ca.clone().ok_or_else(|| {
        format!(
            "no certificates: pass --ca FILE (the CA of the coordinator's certificate) with \
             --join-token, --join-token-file or --kubernetes-token-file to enroll, or certificate \
             files (--certs-dir DIR holding agent-{node}.pem, agent-{node}-key.pem and ca.pem, or \
             --tls-cert, --tls-key and --ca)"
        )
    })?;
    let files = IdentityFiles::new(&args.state_dir);
    if token.is_none() && kubernetes.is_none() {
        if let Some(why) = files.unusable(node) {
            return Err(format!(
                "no usable certificate ({why}) and no join token: pass --join-token or \
                 --join-token-file (from `faultctl tokens create`) to enroll"
            ));
        }
    }
    let enroller = Enroller {
        url: args
            .enroll_url
            .clone()
            .unwrap_or_else(|| enroll::default_enroll_url(coordinator)),
        ca: ca.clone(),
        node: node.clone(),
        token,
        kubernetes_token_file: kubernetes,
        files: files.clone(),
    };
    Ok((files.paths(&ca), Some(Arc::new(enroller))))
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
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
    // Worker and guard processes of the host adapters: before clap and before any runtime.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if matches!(
        argv.get(1).map(String::as_str),
        Some("__worker" | "__guard" | "__io-guard")
    ) {
        std::process::exit(faultline_agent::host::worker_main(&argv[1..]));
    }
    let cli = Cli::parse();
    // Before any thread exists (a namespace change reaches only threads created after it): the
    // host's cgroup namespace, so pods' /proc/<pid>/cgroup read from the hierarchy root. Logged
    // once logging is set up.
    let cgroupns = cgroupns::join_host(std::path::Path::new("/proc"));
    match cli.command {
        Some(Command::Run(a)) => return run_standalone(a, &cgroupns),
        Some(Command::Recover(a)) => return recover(a, &cgroupns),
        None => {}
    }
    let args = cli.daemon;
    let Some(coordinator) = args.coordinator.clone() else {
        return usage_error("--coordinator is required");
    };
    let agent_file = match load_agent_file(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let node_name = match resolve_node_name(args.node_name.clone()) {
        Ok(n) => n,
        Err(e) => return usage_error(&e),
    };
    init_logging(args.log_format, "info");
    let (tls, enroller) = match resolve_identity(&args, &coordinator, &node_name) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    cgroupns::log(&cgroupns);
    let metrics = match args.metrics_listen.0 {
        None => None,
        Some(_) => match install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("error: cannot install the metrics recorder: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = Config {
        coordinator,
        node_name,
        labels: args.labels,
        state_dir: args.state_dir,
        metrics_listen: args.metrics_listen.0,
        tls,
        telemetry_interval: args.telemetry_interval,
        max_backoff: DEFAULT_MAX_BACKOFF,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(run(config, agent_file, metrics, enroller)) {
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
    agent_file: AgentFile,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    enroller: Option<Arc<Enroller>>,
) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM during start-up is not lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The state-dir lock comes before the journal and the identity inside it.
    let state = StateDir::open(&config.state_dir)?;
    if let Some(enroller) = &enroller {
        // Enroll now (or find the stored certificate usable; with a Kubernetes token, always
        // enroll): a refused credential ends the agent with the coordinator's reason; an
        // unreachable coordinator is waited for.
        let mut wait = Duration::from_secs(1);
        loop {
            match enroller.at_start().await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    tracing::warn!("{e}; trying again in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = term.recv() => return Ok(()),
                        _ = int.recv() => return Ok(()),
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let lease = faultline_agent::net::KernelLease::new();
    let drivers =
        faultline_agent::drivers::all(&agent_file.host_config(), Some(&config.coordinator), &lease);
    let engine = Engine::open(
        EngineConfig {
            lease: Some(lease),
            ..EngineConfig::new(state.path().join("journal"), agent_file.limits.clone())
        },
        drivers,
    )?;
    let agent = match enroller {
        Some(enroller) => {
            Agent::start_enrolled(config, Some(state), Arc::new(engine), metrics, enroller).await?
        }
        None => Agent::start_locked(config, Some(state), Arc::new(engine), metrics).await?,
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "received {name}: shutting down");
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus recorder, with real histogram buckets for every `*_seconds` metric.
fn install_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &faultline_agent::metrics::SECONDS_BUCKETS,
        )?
        .install_recorder()?;
    Ok(handle)
}

/// The `--config` file, or the built-in defaults without one; its `[network]` settings take
/// effect here.
fn load_agent_file(path: Option<&std::path::Path>) -> Result<AgentFile, String> {
    let file = match path {
        None => AgentFile::default(),
        Some(p) => AgentFile::load(p).map_err(|e| e.to_string())?,
    };
    faultline_agent::net::keep::set_idle(file.network.link_idle);
    Ok(file)
}

/// A runtime for the subcommands, or the exit code saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn run_standalone(a: RunArgs, cgroupns: &CgroupNsOutcome) -> ExitCode {
    let agent_file = match load_agent_file(a.common.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = agent_file.limits.check_duration(a.duration) {
        return usage_error(&format!("--duration: {e}"));
    }
    init_logging(a.common.log_format, "warn");
    cgroupns::log(cgroupns);
    let opts = standalone::RunOptions {
        file: a.file,
        duration: a.duration,
        state_dir: a.common.state_dir,
        limits: agent_file.limits.clone(),
        progress_every: standalone::PROGRESS_EVERY,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        // Handlers first: a Ctrl-C or SIGTERM from now on reverts instead of killing.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = int.recv() => RevertReason::Abort,
                _ = term.recv() => RevertReason::Shutdown,
            }
        };
        let drivers = faultline_agent::drivers::all(
            &agent_file.host_config(),
            None,
            &faultline_agent::net::KernelLease::new(),
        );
        let mut out = std::io::stdout();
        standalone::run(&opts, drivers, &mut out, stop)
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(outcome) if outcome.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<standalone::StandaloneError>() {
                Some(se) => ExitCode::from(se.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn recover(a: RecoverArgs, cgroupns: &CgroupNsOutcome) -> ExitCode {
    let agent_file = match load_agent_file(a.common.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    init_logging(a.common.log_format, "warn");
    cgroupns::log(cgroupns);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let drivers = faultline_agent::drivers::all(
        &agent_file.host_config(),
        None,
        &faultline_agent::net::KernelLease::new(),
    );
    let mut out = std::io::stdout();
    let result = rt.block_on(standalone::recover(
        &a.common.state_dir,
        agent_file.limits.clone(),
        drivers,
        &mut out,
    ));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
