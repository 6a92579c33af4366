//! Command-line flags of `faultline-coordinator` and their translation into a library
//! [`Config`]; every error names the flag and the allowed range.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use faultline_coordinator::config::{load_config, FileConfig};
use faultline_coordinator::enroll::ratelimit::DEFAULT_ATTEMPTS_PER_MINUTE;
use faultline_coordinator::enroll::{MAX_AGENT_CERT_TTL, MIN_AGENT_CERT_TTL};
use faultline_coordinator::kube::enroll::{AgentServiceAccount, DEFAULT_AGENT_SERVICE_ACCOUNT};
use faultline_coordinator::kube::NamespacedName;
use faultline_coordinator::{Config, EnrollmentConfig, IssuerConfig, MAX_LEASE, MIN_LEASE};
use faultline_core::duration::parse_in_range;
use faultline_identity::tls::{CertPaths, HandshakeLimits, DEFAULT_MAX_HANDSHAKES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--metrics-listen`: an address, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(MetricsListen(None));
        }
        s.parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|e| format!("{s:?} is neither ADDR:PORT nor \"none\" ({e})"))
    }
}

/// The Faultline coordinator: serves the faultline.v1 gRPC API over mutual TLS, keeps the
/// agent sessions with their leases, the agent registry and the audit log.
#[derive(Debug, Parser)]
#[command(name = "faultline-coordinator", version = faultline_core::VERSION)]
pub struct Args {
    /// gRPC listen address (mutual TLS 1.3; agents and faultctl connect here).
    #[arg(
        long,
        env = "FAULTLINE_LISTEN",
        default_value = "0.0.0.0:7443",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Plain-HTTP listen address for /metrics (Prometheus), /healthz and /readyz, or "none"
    /// to serve nothing.
    #[arg(
        long,
        env = "FAULTLINE_METRICS_LISTEN",
        default_value = "0.0.0.0:9466",
        value_name = "ADDR"
    )]
    pub metrics_listen: MetricsListen,

    /// Directory of the coordinator's store (agents seen, experiments and their results, audit
    /// log, halt state); created 0700
    /// if missing. Only one coordinator may use it at a time.
    #[arg(
        long,
        env = "FAULTLINE_DATA_DIR",
        default_value = "/var/lib/faultline-coordinator",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Certificates in the `faultctl certs init` layout: DIR/coordinator.pem,
    /// DIR/coordinator-key.pem and DIR/ca.pem. Required unless --tls-cert, --tls-key and
    /// --client-ca are all given; those win over this layout file by file.
    #[arg(long, env = "FAULTLINE_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,

    /// Lease granted to agents: an agent reverts every fault when it hears nothing for this
    /// long, and a silent agent's session ends after it. Range 1s..=60s.
    #[arg(
        long,
        env = "FAULTLINE_LEASE",
        default_value = "5s",
        value_name = "DURATION"
    )]
    pub lease: String,

    /// How often the lease is renewed on every session: each agent's telemetry is answered
    /// with a renewal once 3/4 of this has passed since the last, and when no telemetry comes a
    /// timer renews anyway at 1.5 times this (less when the lease leaves less room). Range
    /// 100ms..=59s, and shorter than --lease.
    #[arg(
        long,
        env = "FAULTLINE_RENEW_INTERVAL",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub renew_interval: String,

    /// Configuration file (TOML) with the [policy] and [retention] tables; without it the
    /// defaults apply (50% of the fleet, 5 experiments, every fault kind, 1h, protected label
    /// faultline.dev/protected=true; audit log kept 90 days and at most 1,000,000 entries,
    /// ended experiments 30 days and at most 10,000).
    #[arg(long, env = "FAULTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The coordinator's server certificate (PEM). Default: DIR/coordinator.pem of --certs-dir.
    #[arg(long, env = "FAULTLINE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The server certificate's private key (PEM). Default: DIR/coordinator-key.pem of
    /// --certs-dir.
    #[arg(long, env = "FAULTLINE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The CA that client certificates must be issued by (PEM). Default: DIR/ca.pem of
    /// --certs-dir.
    #[arg(long, env = "FAULTLINE_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// TLS handshakes in progress at once. While all are taken, new connections wait
    /// unaccepted in the listen backlog (they are not dropped). Range 1..=65535.
    #[arg(
        long,
        env = "FAULTLINE_MAX_HANDSHAKES",
        default_value_t = DEFAULT_MAX_HANDSHAKES as u32,
        value_parser = clap::value_parser!(u32).range(1..=65535),
        value_name = "N"
    )]
    pub max_handshakes: u32,

    /// How long a TLS handshake may take from accept; a connection still handshaking after it
    /// is closed. Range 1s..=2m.
    #[arg(
        long,
        env = "FAULTLINE_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub handshake_timeout: String,

    /// Log format on stderr. Filter with RUST_LOG (default info).
    #[arg(long, env = "FAULTLINE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Enrollment listener: TLS that authenticates only the coordinator (agents enrolling
    /// have no certificate yet), serving nothing but Enrollment. "none" serves none. Started
    /// only with --issuer-cert and --issuer-key.
    #[arg(
        long,
        env = "FAULTLINE_ENROLL_LISTEN",
        default_value = "0.0.0.0:7444",
        value_name = "ADDR"
    )]
    pub enroll_listen: MetricsListen,

    /// The issuing CA for agent certificates (PEM): the CA certificate first, then its chain
    /// if it is an intermediate (cert-manager's tls.crt). Clients must trust its root
    /// (--client-ca). Needs --issuer-key.
    #[arg(
        long,
        env = "FAULTLINE_ISSUER_CERT",
        value_name = "FILE",
        requires = "issuer_key"
    )]
    pub issuer_cert: Option<PathBuf>,

    /// The issuing CA's private key (PEM, PKCS#8 "PRIVATE KEY"). Needs --issuer-cert.
    #[arg(
        long,
        env = "FAULTLINE_ISSUER_KEY",
        value_name = "FILE",
        requires = "issuer_cert"
    )]
    pub issuer_key: Option<PathBuf>,

    /// Lifetime of the agent certificates the issuer signs; agents renew at two thirds of it.
    /// Range 1m..=30d.
    #[arg(
        long,
        env = "FAULTLINE_AGENT_CERT_TTL",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub agent_cert_ttl: String,

    /// Enrollment attempts allowed per minute from one source address (also the burst).
    /// Range 1..=10000.
    #[arg(
        long,
        env = "FAULTLINE_ENROLL_ATTEMPTS_PER_MINUTE",
        default_value_t = DEFAULT_ATTEMPTS_PER_MINUTE,
        value_parser = clap::value_parser!(u32).range(1..=10000),
        value_name = "N"
    )]
    pub enroll_attempts_per_minute: u32,

    /// Kubernetes enrollment: agents present a projected ServiceAccount token (audience
    /// faultline) of this ServiceAccount, NAMESPACE/NAME, bound to a running pod on the node
    /// they enroll; checked with TokenReview. "none" turns it off. Needs Kubernetes access
    /// (in a pod, or --kubeconfig) and --issuer-cert/--issuer-key.
    #[arg(
        long,
        env = "FAULTLINE_AGENT_SERVICE_ACCOUNT",
        default_value = DEFAULT_AGENT_SERVICE_ACCOUNT,
        value_name = "NAMESPACE/NAME",
        value_parser = parse_service_account
    )]
    pub agent_service_account: ::std::option::Option<AgentServiceAccount>,

    /// Publish the CA bundle agents trust for the coordinator (the --client-ca file) as this
    /// ConfigMap, NAMESPACE/NAME (key ca.pem), and keep it current; "none" publishes nothing.
    /// Needs Kubernetes access.
    #[arg(
        long,
        env = "FAULTLINE_PUBLISH_CA_BUNDLE",
        default_value = "none",
        value_name = "NAMESPACE/NAME",
        value_parser = parse_configmap
    )]
    pub publish_ca_bundle: ::std::option::Option<NamespacedName>,

    /// Kubeconfig file(s) for pod targets (a ':'-separated list is merged like kubectl does).
    /// Without it, a coordinator running in a pod uses its service account; elsewhere pod
    /// targets are refused.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<String>,
}

fn parse_service_account(s: &str) -> Result<Option<AgentServiceAccount>, String> {
    match s {
        "none" => Ok(None),
        _ => s.parse().map(Some),
    }
}

fn parse_configmap(s: &str) -> Result<Option<NamespacedName>, String> {
    match s {
        "none" => Ok(None),
        _ => s.parse().map(Some),
    }
}

/// The TLS files: explicit flags win over the --certs-dir layout.
pub fn tls_paths(args: &Args) -> Result<CertPaths, String> {
    let layout = args
        .certs_dir
        .as_ref()
        .map(|dir| CertPaths::in_dir(dir, "coordinator"));
    let pick = |explicit: &Option<PathBuf>, from_dir: Option<PathBuf>, flag: &'static str| {
        explicit.clone().or(from_dir).ok_or(flag)
    };
    let cert = pick(
        &args.tls_cert,
        layout.as_ref().map(|l| l.cert.clone()),
        "--tls-cert",
    );
    let key = pick(
        &args.tls_key,
        layout.as_ref().map(|l| l.key.clone()),
        "--tls-key",
    );
    let ca = pick(&args.client_ca, layout.map(|l| l.ca), "--client-ca");
    match (cert, key, ca) {
        (Ok(cert), Ok(key), Ok(ca)) => Ok(CertPaths { cert, key, ca }),
        (cert, key, ca) => {
            let missing: Vec<&str> = [cert.err(), key.err(), ca.err()]
                .into_iter()
                .flatten()
                .collect();
            Err(format!(
                "no TLS certificates configured: give --certs-dir DIR (the `faultctl certs init` \
                 layout), or all of --tls-cert, --tls-key and --client-ca (missing: {})",
                missing.join(", ")
            ))
        }
    }
}

/// The issuer and enrollment flags.
pub fn to_enrollment(args: &Args) -> Result<EnrollmentConfig, String> {
    let ttl = parse_in_range(
        "--agent-cert-ttl",
        &args.agent_cert_ttl,
        MIN_AGENT_CERT_TTL,
        MAX_AGENT_CERT_TTL,
    )
    .map_err(|e| e.to_string())?;
    let issuer = match (&args.issuer_cert, &args.issuer_key) {
        (Some(cert), Some(key)) => Some(IssuerConfig {
            cert: cert.clone(),
            key: key.clone(),
            agent_cert_ttl: ttl,
        }),
        (None, None) => None,
        _ => return Err("--issuer-cert and --issuer-key go together".into()),
    };
    Ok(EnrollmentConfig {
        issuer,
        listen: args.enroll_listen.0,
        attempts_per_minute: args.enroll_attempts_per_minute,
        kubernetes: args.agent_service_account.clone(),
    })
}

/// Validates the flags (and the config file) into a library configuration.
pub fn to_config(args: &Args) -> Result<Config, String> {
    let lease =
        parse_in_range("--lease", &args.lease, MIN_LEASE, MAX_LEASE).map_err(|e| e.to_string())?;
    let renew_interval = parse_in_range(
        "--renew-interval",
        &args.renew_interval,
        Duration::from_millis(100),
        MAX_LEASE - Duration::from_secs(1),
    )
    .map_err(|e| e.to_string())?;
    faultline_coordinator::validate_timing(lease, renew_interval).map_err(|e| e.to_string())?;
    let tls = tls_paths(args)?;
    let handshake_timeout = parse_in_range(
        "--handshake-timeout",
        &args.handshake_timeout,
        Duration::from_secs(1),
        Duration::from_secs(120),
    )
    .map_err(|e| e.to_string())?;
    let file = match &args.config {
        Some(path) => load_config(path).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    Ok(Config {
        listen: args.listen,
        metrics_listen: args.metrics_listen.0,
        data_dir: args.data_dir.clone(),
        tls,
        handshakes: HandshakeLimits {
            max_concurrent: args.max_handshakes as usize,
            timeout: handshake_timeout,
        },
        lease,
        renew_interval,
        policy: file.policy,
        retention: file.retention,
        notifications: file.notifications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["faultline-coordinator"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn certs_dir_layout_and_explicit_overrides() {
        let a = args(&["--certs-dir", "/c", "--tls-key", "/k.pem"]);
        let p = tls_paths(&a).expect("paths");
        assert_eq!(p.cert, PathBuf::from("/c/coordinator.pem"));
        assert_eq!(p.key, PathBuf::from("/k.pem"));
        assert_eq!(p.ca, PathBuf::from("/c/ca.pem"));
        let a = args(&["--tls-cert", "/a", "--tls-key", "/b", "--client-ca", "/c"]);
        assert_eq!(tls_paths(&a).expect("explicit").ca, PathBuf::from("/c"));
    }

    #[test]
    fn missing_tls_flags_are_named() {
        let err = tls_paths(&args(&["--tls-cert", "/a"])).expect_err("missing");
        assert!(err.contains("--certs-dir"), "{err}");
        assert!(err.ends_with("(missing: --tls-key, --client-ca)"), "{err}");
    }

    #[test]
    fn lease_and_renew_interval_ranges() {
        let err = to_config(&args(&["--certs-dir", "/c", "--lease", "0s"])).expect_err("0s");
        assert_eq!(err, "--lease: 0s is outside the allowed range 1s..=1m");
        let err = to_config(&args(&[
            "--certs-dir",
            "/c",
            "--lease",
            "2s",
            "--renew-interval",
            "2s",
        ]))
        .expect_err("renew >= lease");
        assert!(
            err.starts_with(
                "--renew-interval 2s must be greater than 0 and shorter than --lease 2s"
            ),
            "{err}"
        );
        let c = to_config(&args(&["--certs-dir", "/c"])).expect("defaults");
        assert_eq!(c.lease, Duration::from_secs(5));
        assert_eq!(c.renew_interval, Duration::from_secs(1));
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.metrics_listen.map(|a| a.port()), Some(9466));
        let c = to_config(&args(&["--certs-dir", "/c", "--metrics-listen", "none"])).expect("none");
        assert_eq!(c.metrics_listen, None);
        let err = Args::try_parse_from(["x", "--metrics-listen", "nowhere"]).expect_err("bad");
        assert!(err.to_string().contains("--metrics-listen"), "{err}");
    }

    #[test]
    fn enrollment_flags_and_their_ranges() {
        let e = to_enrollment(&args(&[])).expect("defaults");
        assert_eq!(e.issuer, None);
        assert_eq!(e.listen.map(|a| a.port()), Some(7444));
        assert_eq!(e.attempts_per_minute, 30);
        let e = to_enrollment(&args(&[
            "--issuer-cert",
            "/i.pem",
            "--issuer-key",
            "/i-key.pem",
            "--agent-cert-ttl",
            "1m",
            "--enroll-listen",
            "none",
        ]))
        .expect("set");
        let issuer = e.issuer.expect("issuer");
        assert_eq!(issuer.agent_cert_ttl, Duration::from_secs(60));
        assert_eq!(issuer.cert, PathBuf::from("/i.pem"));
        assert_eq!(e.listen, None);
        for bad in ["59s", "31d"] {
            let err = to_enrollment(&args(&["--agent-cert-ttl", bad])).expect_err(bad);
            assert!(err.starts_with("--agent-cert-ttl: "), "{err}");
            assert!(
                err.ends_with(" is outside the allowed range 1m..=30days"),
                "{err}"
            );
        }
        let err = Args::try_parse_from(["x", "--issuer-cert", "/i.pem"]).expect_err("alone");
        assert!(err.to_string().contains("--issuer-key"), "{err}");
        let err = Args::try_parse_from(["x", "--enroll-attempts-per-minute", "0"]).expect_err("0");
        assert!(err.to_string().contains("1..=10000"), "{err}");
    }

    #[test]
    fn handshake_limits_and_their_ranges() {
        let c = to_config(&args(&["--certs-dir", "/c"])).expect("defaults");
        assert_eq!(c.handshakes, HandshakeLimits::default());
        assert_eq!(c.handshakes.max_concurrent, 256);
        assert_eq!(c.handshakes.timeout, Duration::from_secs(10));
        let c = to_config(&args(&[
            "--certs-dir",
            "/c",
            "--max-handshakes",
            "8",
            "--handshake-timeout",
            "2s",
        ]))
        .expect("set");
        assert_eq!(c.handshakes.max_concurrent, 8);
        assert_eq!(c.handshakes.timeout, Duration::from_secs(2));
        let err = to_config(&args(&[
            "--certs-dir",
            "/c",
            "--handshake-timeout",
            "500ms",
        ]))
        .expect_err("too short");
        assert_eq!(
            err,
            "--handshake-timeout: 500ms is outside the allowed range 1s..=2m"
        );
        for bad in ["0", "65536", "many"] {
            let err = Args::try_parse_from(["x", "--max-handshakes", bad]).expect_err(bad);
            assert!(err.to_string().contains("--max-handshakes"), "{err}");
        }
        let err = Args::try_parse_from(["x", "--max-handshakes", "0"]).expect_err("0");
        assert!(err.to_string().contains("1..=65535"), "{err}");
    }

    #[test]
    fn the_config_file_sets_policy_and_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "[policy]\nmax_concurrent_experiments = 2\n[retention]\naudit_max_age = \"7d\"\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf-8 path");
        let c = to_config(&args(&["--certs-dir", "/c", "--config", file])).expect("config");
        assert_eq!(c.policy.max_concurrent_experiments, 2);
        assert_eq!(
            c.retention.audit_max_age,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(c.retention.experiments_max_count, 10_000, "default");
        std::fs::write(&path, "[retention]\nprune_interval = \"1s\"\n").expect("write");
        let err = to_config(&args(&["--certs-dir", "/c", "--config", file])).expect_err("range");
        assert!(
            err.ends_with("retention.prune_interval: 1s is outside the allowed range 1m..=1day"),
            "{err}"
        );
    }
}
