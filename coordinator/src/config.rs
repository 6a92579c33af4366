//! The coordinator's configuration file (TOML): a raw serde shape that refuses unknown fields,
//! validated into a [`Policy`] and a [`Retention`] whose errors name the field path and the
//! allowed range.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::duration;
use faultline_core::Labels;
use serde::Deserialize;

use crate::store::retention::{self, Retention};

/// Every fault kind Faultline knows (the `kind` oneof of `FaultSpec`).
pub const FAULT_KINDS: [&str; 12] = [
    "network",
    "drop",
    "partition",
    "cpu",
    "memory",
    "io",
    "process",
    // disk faults (issue 13)
    "disk-fill",
    "io-limit",
    // dns (issue 13)
    "dns",
    // Kill faults (issue 13).
    "pod-kill",
    "container-kill",
];

/// The label that marks an agent as protected unless the config says otherwise.
pub const DEFAULT_PROTECTED_LABEL: (&str, &str) = ("faultline.dev/protected", "true");

/// Namespaces whose pods are never targeted unless the config says otherwise: the cluster's
/// own, and Faultline's.
pub const DEFAULT_PROTECTED_NAMESPACES: [&str; 2] = ["kube-system", "faultline"];

const MIN_DURATION: Duration = Duration::from_secs(1);
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub retention: RawRetention,
    /// `[[notifications]]`: where run events are sent (see [`crate::notify`]).
    #[serde(default)]
    pub notifications: Vec<crate::notify::config::RawNotification>,
}

/// The `[retention]` table as written; absent fields take their defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Audit entries older than this are removed, a human duration in 1d..=10y.
    pub audit_max_age: Option<String>,
    /// The most audit entries kept, 1000..=100000000.
    pub audit_max_entries: Option<i64>,
    /// Ended experiments that ended longer ago are removed, 1h..=10y.
    pub experiments_max_age: Option<String>,
    /// The most ended experiments kept, 1..=1000000.
    pub experiments_max_count: Option<i64>,
    /// How often pruning runs, 1m..=24h.
    pub prune_interval: Option<String>,
}

/// The whole validated configuration file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub policy: Policy,
    pub retention: Retention,
    pub notifications: Vec<crate::notify::Sink>,
}

/// The `[policy]` table as written; absent fields take their defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Percent of the fleet that may be under fault at once, 1..=100.
    pub max_fleet_percent_under_fault: Option<f64>,
    /// Experiments that may run at once, 1..=1000.
    pub max_concurrent_experiments: Option<i64>,
    /// Fault kinds experiments may use.
    pub allowed_fault_kinds: Option<Vec<String>>,
    /// Longest experiment, a human duration in 1s..=7d.
    pub max_duration: Option<String>,
    /// Agents carrying all of these labels are never selected as targets (nor pods on the
    /// nodes carrying them).
    pub protected_agent_labels: Option<BTreeMap<String, String>>,
    /// Pods in these namespaces are never selected as targets.
    pub protected_namespaces: Option<Vec<String>>,
    /// Percent of a namespace's matching Running pods that may be under fault at once, 1..=100.
    pub max_pod_percent_per_namespace: Option<f64>,
}

/// The validated blast-radius policy the coordinator enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_fleet_percent_under_fault: f64,
    pub max_concurrent_experiments: u32,
    pub allowed_fault_kinds: Vec<String>,
    pub max_duration: Duration,
    pub protected_agent_labels: Labels,
    pub protected_namespaces: Vec<String>,
    pub max_pod_percent_per_namespace: f64,
}

impl Default for Policy {
    fn default() -> Self {
        let (k, v) = DEFAULT_PROTECTED_LABEL;
        Policy {
            max_fleet_percent_under_fault: 50.0,
            max_concurrent_experiments: 5,
            allowed_fault_kinds: FAULT_KINDS.iter().map(|k| k.to_string()).collect(),
            max_duration: Duration::from_secs(3600),
            protected_agent_labels: Labels(BTreeMap::from([(k.to_string(), v.to_string())])),
            protected_namespaces: DEFAULT_PROTECTED_NAMESPACES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            max_pod_percent_per_namespace: 50.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    #[error("TOML syntax: {0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("{field}: {value} is outside {range}")]
    Range {
        field: String,
        value: String,
        range: String,
    },
}

impl TryFrom<RawConfig> for FileConfig {
    type Error = ConfigError;
    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        Ok(FileConfig {
            policy: Policy::try_from(raw.policy)?,
            retention: Retention::try_from(raw.retention)?,
            notifications: crate::notify::config::sinks(raw.notifications)?,
        })
    }
}

fn duration_field(
    field: &str,
    value: &str,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    duration::parse_in_range(field, value, min, max).map_err(|e| ConfigError::Field {
        field: field.into(),
        message: strip_field(&e.to_string(), field),
    })
}

fn count_field(field: &str, n: i64, (min, max): (u64, u64)) -> Result<u64, ConfigError> {
    u64::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| range(field, n, &format!("{min}..={max}")))
}

impl TryFrom<RawRetention> for Retention {
    type Error = ConfigError;
    fn try_from(raw: RawRetention) -> Result<Self, Self::Error> {
        let mut r = Retention::default();
        if let Some(d) = raw.audit_max_age {
            r.audit_max_age = duration_field(
                "retention.audit_max_age",
                &d,
                retention::AUDIT_MAX_AGE_RANGE,
            )?;
        }
        if let Some(n) = raw.audit_max_entries {
            r.audit_max_entries = count_field(
                "retention.audit_max_entries",
                n,
                retention::AUDIT_MAX_ENTRIES_RANGE,
            )?;
        }
        if let Some(d) = raw.experiments_max_age {
            r.experiments_max_age = duration_field(
                "retention.experiments_max_age",
                &d,
                retention::EXPERIMENTS_MAX_AGE_RANGE,
            )?;
        }
        if let Some(n) = raw.experiments_max_count {
            r.experiments_max_count = count_field(
                "retention.experiments_max_count",
                n,
                retention::EXPERIMENTS_MAX_COUNT_RANGE,
            )?;
        }
        if let Some(d) = raw.prune_interval {
            r.prune_interval = duration_field(
                "retention.prune_interval",
                &d,
                retention::PRUNE_INTERVAL_RANGE,
            )?;
        }
        Ok(r)
    }
}

impl TryFrom<RawPolicy> for Policy {
    type Error = ConfigError;
    fn try_from(raw: RawPolicy) -> Result<Self, Self::Error> {
        let mut policy = Policy::default();
        if let Some(p) = raw.max_fleet_percent_under_fault {
            if !(1.0..=100.0).contains(&p) {
                return Err(range("policy.max_fleet_percent_under_fault", p, "1..=100"));
            }
            policy.max_fleet_percent_under_fault = p;
        }
        if let Some(n) = raw.max_concurrent_experiments {
            policy.max_concurrent_experiments = u32::try_from(n)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| range("policy.max_concurrent_experiments", n, "1..=1000"))?;
        }
        if let Some(kinds) = raw.allowed_fault_kinds {
            let mut out: Vec<String> = Vec::new();
            for (i, kind) in kinds.into_iter().enumerate() {
                if !FAULT_KINDS.contains(&kind.as_str()) {
                    return Err(ConfigError::Field {
                        field: format!("policy.allowed_fault_kinds[{i}]"),
                        message: format!(
                            "{kind:?} is not a fault kind; use any of {}",
                            FAULT_KINDS.join(", ")
                        ),
                    });
                }
                if !out.contains(&kind) {
                    out.push(kind);
                }
            }
            policy.allowed_fault_kinds = out;
        }
        if let Some(d) = raw.max_duration {
            policy.max_duration =
                duration_field("policy.max_duration", &d, (MIN_DURATION, MAX_DURATION))?;
        }
        if let Some(labels) = raw.protected_agent_labels {
            policy.protected_agent_labels =
                Labels::from_map(labels).map_err(|e| ConfigError::Field {
                    field: "policy.protected_agent_labels".into(),
                    message: e.to_string(),
                })?;
        }
        if let Some(namespaces) = raw.protected_namespaces {
            let mut out: Vec<String> = Vec::new();
            for (i, ns) in namespaces.into_iter().enumerate() {
                if !faultline_core::experiment::guard_doc::is_dns_label(&ns) {
                    return Err(ConfigError::Field {
                        field: format!("policy.protected_namespaces[{i}]"),
                        message: format!("{ns:?} is not a namespace name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
                    });
                }
                if !out.contains(&ns) {
                    out.push(ns);
                }
            }
            policy.protected_namespaces = out;
        }
        if let Some(p) = raw.max_pod_percent_per_namespace {
            if !(1.0..=100.0).contains(&p) {
                return Err(range("policy.max_pod_percent_per_namespace", p, "1..=100"));
            }
            policy.max_pod_percent_per_namespace = p;
        }
        Ok(policy)
    }
}

fn range(field: &str, value: impl std::fmt::Display, range: &str) -> ConfigError {
    ConfigError::Range {
        field: field.to_string(),
        value: value.to_string(),
        range: range.to_string(),
    }
}

/// `duration` errors already start with the field name; avoid saying it twice.
fn strip_field(message: &str, field: &str) -> String {
    message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
        .to_string()
}

/// Parses and validates the text of a configuration file.
pub fn parse_config(text: &str) -> Result<FileConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    FileConfig::try_from(raw)
}

/// The `[policy]` of a configuration file's text (the whole file is validated).
pub fn parse_policy(text: &str) -> Result<Policy, ConfigError> {
    parse_config(text).map(|c| c.policy)
}

/// Reads, parses and validates a configuration file; errors name the file.
pub fn load_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&text).map_err(|e| ConfigError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// The `[policy]` of a configuration file.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    load_config(path).map(|c| c.policy)
}

/// Turns a TOML/serde error into one that names the dotted field path (`policy.foo`), found
/// from the error's position: the key on that line under the last `[table]` header above it.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let Some(span) = e.span() else {
        return ConfigError::Syntax(e.message().to_string());
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .map(|h| h.trim().trim_matches(['[', ']']).trim().to_string())
    };
    let path = if let Some(table) = header(line) {
        Some(table)
    } else if let Some((key, _)) = line.split_once('=') {
        let key = key.trim().trim_matches('"').to_string();
        let table = text[..line_start].lines().rev().find_map(header);
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        })
    } else {
        None
    };
    match path {
        Some(field) if !field.is_empty() => ConfigError::Field {
            field,
            message: e.message().to_string(),
        },
        _ => ConfigError::Syntax(e.to_string()),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
