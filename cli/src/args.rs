//! Command-line flags of `faultctl`: global connection options and one subcommand per operation.

pub mod continuous;
pub mod experiment;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use continuous::{DeleteCommand, ScheduleCommand, WorkflowCommand};
pub use experiment::{
    AbortArgs, ApplyArgs, DescribeCommand, GetCommand, NameArg, PhaseArg, ReportArgs, ReportFormat,
    RunArgs,
};

/// Smallest and largest accepted `--timeout`.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub const TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// Default `--timeout`.
pub const TIMEOUT_DEFAULT: &str = "5s";

#[derive(Debug, Parser)]
#[command(
    name = "faultctl",
    version = faultline_core::VERSION,
    about = "Operate a Faultline fleet: experiments, certificates, agents, audit log, policy, \
halt/resume.",
    long_about = "faultctl talks to the Faultline coordinator over mutual TLS (TLS 1.3, a client \
certificate on every connection). The certificate is picked from --certs-dir by --identity: \
DIR/<identity>.pem, DIR/<identity>-key.pem and the CA DIR/ca.pem, the layout written by \
`faultctl certs init`.",
    after_help = "Examples:\n  faultctl certs init --dir ./faultline-certs --agents node-a,node-b\n  \
faultctl --coordinator https://coord.example:7443 agents list\n  \
faultctl --identity operator apply -f checkout-loss.yaml --dry-run\n  \
faultctl --identity operator apply -f checkout-loss.yaml && faultctl watch checkout-loss\n  \
faultctl report checkout-loss --format md\n  \
faultctl --identity viewer -o json agents list\n  \
faultctl halt --reason \"checkout latency SLO breached\""
)]
pub struct Cli {
    /// Coordinator gRPC address, https://HOST[:PORT] (port defaults to 7443). No plaintext mode.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_COORDINATOR",
        value_name = "URL",
        default_value = "https://127.0.0.1:7443"
    )]
    pub coordinator: String,

    /// Directory with the certificates (layout of `faultctl certs init`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_CERTS_DIR",
        value_name = "DIR",
        default_value = "./faultline-certs"
    )]
    pub certs_dir: PathBuf,

    /// Which certificate to present: DIR/<identity>.pem and DIR/<identity>-key.pem. viewer may
    /// read; operator may also run experiments; admin may also halt and resume the fleet.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_IDENTITY",
        value_enum,
        default_value_t = IdentityArg::Admin
    )]
    pub identity: IdentityArg,

    /// Output format: a table for people or JSON for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// How long to wait for the coordinator (connect and each call), 100ms..=10m.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "DURATION",
        default_value = TIMEOUT_DEFAULT,
        value_parser = parse_timeout
    )]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

/// The certificate `faultctl` presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityArg {
    Admin,
    Operator,
    Viewer,
}

impl IdentityArg {
    /// The file stem in the certs layout (`admin` -> `admin.pem`, `admin-key.pem`).
    pub fn stem(self) -> &'static str {
        match self {
            IdentityArg::Admin => "admin",
            IdentityArg::Operator => "operator",
            IdentityArg::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an experiment from a document and start it (role operator or higher); with
    /// --dry-run print its plan only. A file may hold several documents (`---` between
    /// them) of kind Experiment, Schedule (created or replaced) and Workflow (started).
    Apply(ApplyArgs),
    /// Start an experiment created with `apply --no-start` (role operator or higher).
    Start(NameArg),
    /// List resources (role viewer or higher).
    #[command(subcommand)]
    Get(GetCommand),
    /// Show one resource in full (role viewer or higher).
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// Follow an experiment live until it ends: phase, targets, guard values, time left.
    /// Exits 0 when it completed, 3 when it was aborted, 4 when it failed or was interrupted
    /// (role viewer or higher).
    Watch(NameArg),
    /// Abort a running experiment: every target reverts its faults at once (role operator or
    /// higher).
    Abort(AbortArgs),
    /// Print an experiment's report, Markdown or JSON (role viewer or higher).
    Report(ReportArgs),
    /// Create the development CA and certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Agents known to the coordinator.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Join tokens with which hosts enroll their agents (role admin).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Show the audit log of mutations, newest first (role viewer or higher).
    Audit(AuditArgs),
    /// Show the coordinator's policy, lease and halt state (role viewer or higher).
    #[command(long_about = POLICY_HELP)]
    Policy,
    /// Revert every fault on every agent and refuse new experiments until `faultctl resume`
    /// (role admin).
    Halt(HaltArgs),
    /// Lift a halt so experiments may run again (role admin).
    Resume,
    /// Print the version of faultctl (needs no coordinator).
    Version,
    /// Serve the web UI on localhost, acting as this identity (like `kubectl proxy`).
    #[command(long_about = DASHBOARD_HELP)]
    Dashboard(DashboardArgs),
    /// The CI gate: create and start an experiment, follow it live (as `watch`), print its
    /// report, and exit 0 when it completed with its steady-state hypothesis passed (or
    /// without one), 3 when it was aborted, 4 when it failed or was interrupted, 5 when it
    /// completed but its hypothesis failed (role operator or higher).
    Run(RunArgs),
    /// Remove an ended experiment's record, a schedule, or an ended workflow.
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Suspend, resume or trigger a schedule.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Approve a workflow's step.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
}

/// `faultctl dashboard --help`.
const DASHBOARD_HELP: &str = "Serve the Faultline web UI on this machine. faultctl itself serves \
the page (embedded in the binary, nothing fetched from elsewhere) and turns each action in the \
browser into one gRPC call to the coordinator with the identity it runs as (--identity, \
--certs-dir): the UI may do exactly what that identity may do, and the coordinator enforces it. \
It prints a URL carrying a random token for this run; the page works only for whoever opened \
that URL, and refuses requests from other sites. Runs until Ctrl-C.";

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve on; a non-loopback address also needs --listen-any.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    /// Allow a non-loopback --listen address: whoever reaches it with the printed URL acts as
    /// this identity.
    #[arg(long)]
    pub listen_any: bool,

    /// Open the URL in a browser (xdg-open).
    #[arg(long)]
    pub open: bool,
}

/// `faultctl policy --help`: what each row means and where it is set.
const POLICY_HELP: &str = "Show the coordinator's blast-radius policy, its agent lease and \
whether the fleet is halted (role viewer or higher).

The policy comes from the [policy] table of the coordinator's --config file, read when the \
coordinator starts; it is not changed at runtime (edit the file and restart the coordinator). \
Each row names its key:

  halted                       \"yes: REASON\" after `faultctl halt` (no experiment runs) until
                               `faultctl resume`
  max fleet under fault        policy.max_fleet_percent_under_fault, 1..=100: percent of the
                               connected agents under fault at once (pod experiments count
                               the pods' nodes)
  max concurrent experiments   policy.max_concurrent_experiments, 1..=1000
  max experiment duration      policy.max_duration, 1s..=7d
  allowed fault kinds          policy.allowed_fault_kinds
  protected agent labels       policy.protected_agent_labels: agents carrying all of them,
                               and pods on their nodes, are never targets
  protected namespaces         policy.protected_namespaces (namespace names, DNS-1123 labels;
                               default kube-system, faultline): pods there are never targets
  max namespace under fault    policy.max_pod_percent_per_namespace, 1..=100 (default 50):
                               percent (rounded down) of a namespace's matching Running pods
                               under fault at once, pods held by other experiments included
  agent lease                  the coordinator's --lease: how long an agent keeps its faults
                               without hearing from the coordinator";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA, the coordinator's certificate, admin/operator/viewer
    /// certificates and one certificate per agent. Existing files are kept (unless --force), so
    /// running it again with more --agents only adds their certificates, signed by the same CA.
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Directory to write into (created if missing). Default: --certs-dir.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Extra DNS name or IP address for the coordinator's certificate; repeat the flag or
    /// separate with commas. localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "san", value_name = "DNS-or-IP", value_delimiter = ',')]
    pub sans: Vec<String>,

    /// Node names that get an agent certificate (agent-NAME.pem), comma separated. Names are
    /// 1..=253 lowercase letters, digits, '-' or '.'.
    #[arg(long, value_name = "a,b,c", value_delimiter = ',')]
    pub agents: Vec<String>,

    /// Validity of each issued certificate in days, 1..=3650 (the CA gets twice as long).
    #[arg(
        long,
        default_value_t = 365,
        value_parser = clap::value_parser!(i64).range(1..=3650)
    )]
    pub days: i64,

    /// Regenerate everything, including the CA. Certificates signed by the old CA stop working.
    #[arg(long)]
    pub force: bool,

    /// After writing the files, print (instead of the summary) the two Kubernetes Secrets the
    /// coordinator in daemonset/manifests mounts: faultline-coordinator-tls (ca.pem, coordinator
    /// pair) and faultline-issuer (the CA as tls.crt and tls.key: the coordinator issues agent
    /// certificates with it). Pipe it to `kubectl apply -f -`. No agent key is included (agents
    /// make theirs and enroll with their pod's ServiceAccount token), nor the
    /// admin/operator/viewer certificates.
    #[arg(long)]
    pub kubernetes: bool,

    /// Namespace of the Secrets printed by --kubernetes (a DNS label, 1..=63 characters).
    #[arg(long, default_value = "faultline", value_name = "NAMESPACE")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List every agent the coordinator has seen: connection state, labels, last telemetry
    /// (role viewer or higher).
    List,
    /// Revoke a node: its session closes at once, its certificates are refused in the TLS
    /// handshake until they expire and its renewals are refused; it may enroll again only with
    /// a join token created afterwards (role admin).
    Revoke(RevokeAgentArgs),
}

#[derive(Debug, Args)]
pub struct RevokeAgentArgs {
    /// The node name (as in `faultctl agents list`).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Why; recorded in the audit log.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

/// Longest `tokens create --ttl`.
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most `tokens create --uses`.
pub const TOKEN_USES_MAX: u32 = 10_000;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a join token and print it (shown once: the coordinator keeps only its hash).
    /// `faultline-agent --join-token TOKEN --ca ca.pem` enrolls with it.
    Create(CreateTokenArgs),
    /// List join tokens: uses, expiry, labels, the nodes that enrolled (never the secrets).
    List,
    /// Revoke a join token so no further node can enroll with it.
    Revoke(RevokeTokenArgs),
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// How long the token may be used, 1s..=7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_token_ttl)]
    pub ttl: Duration,
    /// How many nodes may enroll with it, 1..=10000.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=TOKEN_USES_MAX as i64))]
    pub uses: u32,
    /// Labels every node enrolled with it gets, k=v,k=v (they win over the agent's own
    /// --labels for the same key).
    #[arg(long, value_name = "K=V,...", default_value = "", value_parser = parse_token_labels)]
    pub labels: faultline_core::Labels,
    /// What the token is for, shown by `tokens list` (at most 256 characters).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
}

#[derive(Debug, Args)]
pub struct RevokeTokenArgs {
    /// The token's id (the part before the dot; `faultctl tokens list` shows it).
    #[arg(value_name = "ID")]
    pub id: String,
}

fn parse_token_ttl(value: &str) -> Result<Duration, String> {
    faultline_core::duration::parse_in_range("--ttl", value, Duration::from_secs(1), TOKEN_TTL_MAX)
        .map_err(|e| e.to_string())
}

fn parse_token_labels(value: &str) -> Result<faultline_core::Labels, String> {
    faultline_core::Labels::parse(value).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Show at most this many entries, 1..=10000.
    #[arg(
        long,
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=10000)
    )]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct HaltArgs {
    /// Why the fleet is halted; recorded in the audit log and shown by `faultctl policy`.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: String,
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    faultline_core::duration::parse_in_range("--timeout", value, TIMEOUT_MIN, TIMEOUT_MAX).map_err(
        |e| match e {
            faultline_core::duration::DurationError::Range {
                value, min, max, ..
            } => {
                format!("{value} is outside the allowed range {min}..={max}")
            }
            faultline_core::duration::DurationError::Syntax { reason, .. } => {
                format!("not a duration ({reason}); use e.g. 500ms, 5s, 1m")
            }
        },
    )
}

fn parse_reason(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty: say why the fleet is halted".into());
    }
    if trimmed.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeout_range_is_enforced_and_named() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        let err = parse_timeout("0s").expect_err("too short");
        assert_eq!(err, "0s is outside the allowed range 100ms..=10m");
        let err =
            Cli::try_parse_from(["faultctl", "--timeout", "1h", "version"]).expect_err("too long");
        assert!(err.to_string().contains("--timeout"), "{err}");
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["faultctl", "agents", "list"]).expect("parses");
        assert_eq!(cli.identity, IdentityArg::Admin);
        assert_eq!(cli.output, OutputFormat::Table);
        assert_eq!(cli.timeout, Duration::from_secs(5));
    }

    #[test]
    fn certs_init_lists_split_on_commas() {
        let cli = Cli::try_parse_from([
            "faultctl",
            "certs",
            "init",
            "--dir",
            "/x",
            "--agents",
            "a,b",
            "--san",
            "c.example",
            "--san",
            "10.0.0.1,10.0.0.2",
        ])
        .expect("parses");
        let Command::Certs(CertsCommand::Init(args)) = cli.command else {
            panic!("expected certs init");
        };
        assert_eq!(args.agents, ["a", "b"]);
        assert_eq!(args.sans, ["c.example", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(args.days, 365);
    }

    #[test]
    fn halt_needs_a_reason() {
        let err = Cli::try_parse_from(["faultctl", "halt", "--reason", "  "]).expect_err("empty");
        assert!(err.to_string().contains("--reason"), "{err}");
    }
}
