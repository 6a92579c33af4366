//! The agent's validated configuration (flags, and the `--config` file in [`file`]) and the
//! start-up check that its certificate is its own.

pub mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::duration::{check_range, DurationError};
use faultline_core::{Identity, Labels, NodeName, Role};
use faultline_identity::tls::{self, CertPaths, CoordinatorUrl};

pub const DEFAULT_TELEMETRY_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_TELEMETRY_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_TELEMETRY_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3);
pub const MIN_MAX_BACKOFF: Duration = Duration::from_millis(10);
pub const MAX_MAX_BACKOFF: Duration = Duration::from_secs(300);
pub const DEFAULT_STATE_DIR: &str = "/var/lib/faultline";

#[derive(Debug, Clone)]
pub struct Config {
    pub coordinator: CoordinatorUrl,
    pub node_name: NodeName,
    pub labels: Labels,
    pub state_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub tls: CertPaths,
    /// Default 1s, allowed 100ms..=60s.
    pub telemetry_interval: Duration,
    /// Reconnect backoff cap, default 3s, allowed 10ms..=5m.
    pub max_backoff: Duration,
}

impl Config {
    /// A configuration with defaults for everything else: no labels, no metrics listener,
    /// telemetry every second, backoff capped at 3 s.
    pub fn new(
        coordinator: CoordinatorUrl,
        node_name: NodeName,
        tls: CertPaths,
        state_dir: PathBuf,
    ) -> Self {
        Config {
            coordinator,
            node_name,
            labels: Labels::default(),
            state_dir,
            metrics_listen: None,
            tls,
            telemetry_interval: DEFAULT_TELEMETRY_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// Checks the ranges; errors name the field and the allowed range.
    pub fn validate(&self) -> Result<(), DurationError> {
        check_range(
            "telemetry_interval",
            self.telemetry_interval,
            MIN_TELEMETRY_INTERVAL,
            MAX_TELEMETRY_INTERVAL,
        )?;
        check_range(
            "max_backoff",
            self.max_backoff,
            MIN_MAX_BACKOFF,
            MAX_MAX_BACKOFF,
        )?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertCheckError {
    #[error("{0}")]
    Unreadable(String),
    #[error("certificate {path} is for {found}, but --node-name is {node}")]
    Mismatch {
        path: PathBuf,
        found: Identity,
        node: NodeName,
    },
}

/// Checks that the certificate at `cert` carries the identity `agent/<node>`: the coordinator
/// would refuse any other, so the agent says so at start-up instead of retrying forever.
pub fn check_certificate(cert: &Path, node: &NodeName) -> Result<(), CertCheckError> {
    let found = faultline_identity::spiffe::identity_of_file(cert)
        .map_err(|e| CertCheckError::Unreadable(tls::error_chain(&e)))?;
    if found != Identity::new(Role::Agent, node.as_str()) {
        return Err(CertCheckError::Mismatch {
            path: cert.to_path_buf(),
            found,
            node: node.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_identity::pki;

    fn config() -> Config {
        Config::new(
            CoordinatorUrl::parse("https://127.0.0.1:7443").expect("url"),
            "node-a".parse().expect("node"),
            CertPaths::in_dir(Path::new("/c"), "agent-node-a"),
            PathBuf::from("/tmp/x"),
        )
    }

    #[test]
    fn defaults_are_valid_and_ranges_are_named() {
        let mut c = config();
        assert_eq!(c.telemetry_interval, Duration::from_secs(1));
        assert_eq!(c.max_backoff, Duration::from_secs(3));
        c.validate().expect("defaults are valid");
        c.telemetry_interval = Duration::ZERO;
        assert_eq!(
            c.validate().expect_err("0s").to_string(),
            "telemetry_interval: 0s is outside the allowed range 100ms..=1m"
        );
        c.telemetry_interval = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(3600);
        assert_eq!(
            c.validate().expect_err("1h").to_string(),
            "max_backoff: 1h is outside the allowed range 10ms..=5m"
        );
    }

    #[test]
    fn certificate_must_be_for_this_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        pki::init_dir(
            dir.path(),
            &pki::InitOptions {
                sans: vec![],
                agents: vec!["node-a".into(), "node-b".into()],
                days: 1,
                force: false,
            },
        )
        .expect("pki");
        let a: NodeName = "node-a".parse().expect("node");
        let cert_a = dir.path().join("agent-node-a.pem");
        let cert_b = dir.path().join("agent-node-b.pem");
        check_certificate(&cert_a, &a).expect("own certificate");
        let msg = check_certificate(&cert_b, &a)
            .expect_err("other node")
            .to_string();
        assert_eq!(
            msg,
            format!(
                "certificate {} is for agent/node-b, but --node-name is node-a",
                cert_b.display()
            )
        );
        let admin = dir.path().join("admin.pem");
        let msg = check_certificate(&admin, &a)
            .expect_err("admin")
            .to_string();
        assert!(msg.contains("is for admin/admin"), "{msg}");
        let missing = dir.path().join("agent-node-c.pem");
        let msg = check_certificate(&missing, &a)
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("agent-node-c.pem"), "{msg}");
    }
}
