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
pub const FAULT_KINDS: [&str; 7] = [
    "network",
    "drop",
    "partition",
    "cpu",
    "memory",
    "io",
    "process",
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
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let p = parse_policy(
            r#"
[policy]
max_fleet_percent_under_fault = 25      # 1..=100
max_concurrent_experiments = 3
allowed_fault_kinds = ["network", "cpu", "network"]
max_duration = "30m"
protected_agent_labels = { "tier" = "db" }
protected_namespaces = ["kube-system", "payments", "kube-system"]
max_pod_percent_per_namespace = 25
"#,
        )
        .expect("valid");
        assert_eq!(p.protected_namespaces, ["kube-system", "payments"]);
        assert_eq!(p.max_pod_percent_per_namespace, 25.0);
        assert_eq!(p.max_fleet_percent_under_fault, 25.0);
        assert_eq!(p.max_concurrent_experiments, 3);
        assert_eq!(p.allowed_fault_kinds, vec!["network", "cpu"]);
        assert_eq!(p.max_duration, Duration::from_secs(1800));
        assert_eq!(p.protected_agent_labels.to_string(), "tier=db");
    }

    #[test]
    fn empty_file_is_the_default_policy() {
        assert_eq!(parse_policy("").expect("empty"), Policy::default());
        assert_eq!(
            parse_policy("[policy]\n").expect("empty"),
            Policy::default()
        );
        let d = Policy::default();
        assert_eq!(d.max_fleet_percent_under_fault, 50.0);
        assert_eq!(d.allowed_fault_kinds.len(), 7);
        assert_eq!(
            d.protected_agent_labels.to_string(),
            "faultline.dev/protected=true"
        );
        assert_eq!(d.protected_namespaces, ["kube-system", "faultline"]);
        assert_eq!(d.max_pod_percent_per_namespace, 50.0);
    }

    #[test]
    fn errors_name_the_field_and_range() {
        let cases: &[(&str, &str)] = &[
            (
                "[policy]\nmax_fleet_percent_under_fault = 150\n",
                "policy.max_fleet_percent_under_fault: 150 is outside 1..=100",
            ),
            (
                "[policy]\nmax_fleet_percent_under_fault = 0.5\n",
                "policy.max_fleet_percent_under_fault: 0.5 is outside 1..=100",
            ),
            (
                "[policy]\nmax_concurrent_experiments = 0\n",
                "policy.max_concurrent_experiments: 0 is outside 1..=1000",
            ),
            (
                "[policy]\nmax_concurrent_experiments = -4\n",
                "policy.max_concurrent_experiments: -4 is outside 1..=1000",
            ),
            (
                "[policy]\nmax_pod_percent_per_namespace = 0\n",
                "policy.max_pod_percent_per_namespace: 0 is outside 1..=100",
            ),
            (
                "[policy]\nprotected_namespaces = [\"ok\", \"Not_OK\"]\n",
                "policy.protected_namespaces[1]: \"Not_OK\" is not a namespace name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
            ),
            (
                "[policy]\nmax_duration = \"8d\"\n",
                "policy.max_duration: 8days is outside the allowed range 1s..=7days",
            ),
            (
                "[policy]\nmax_duration = \"0s\"\n",
                "policy.max_duration: 0s is outside the allowed range 1s..=7days",
            ),
        ];
        for (text, want) in cases {
            let err = parse_policy(text).expect_err(text);
            assert_eq!(err.to_string(), *want, "{text}");
        }
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named_with_their_path() {
        let err = parse_policy("[policy]\nmax_fleet_percent = 10\n").expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.starts_with("policy.max_fleet_percent: unknown field `max_fleet_percent`"),
            "{msg}"
        );
        assert!(msg.contains("max_fleet_percent_under_fault"), "{msg}");

        let err = parse_policy("[polcy]\n").expect_err("unknown table");
        assert!(
            err.to_string().starts_with("polcy: unknown field `polcy`"),
            "{err}"
        );

        let err = parse_policy("[policy]\nmax_duration = 5\n").expect_err("type");
        assert!(
            err.to_string()
                .starts_with("policy.max_duration: invalid type"),
            "{err}"
        );

        let err = parse_policy("[policy]\nallowed_fault_kinds = [\"cpu\", \"meteor\"]\n")
            .expect_err("kind");
        assert_eq!(
            err.to_string(),
            "policy.allowed_fault_kinds[1]: \"meteor\" is not a fault kind; use any of \
             network, drop, partition, cpu, memory, io, process"
        );

        let err = parse_policy("[policy]\nprotected_agent_labels = { \"-x\" = \"y\" }\n")
            .expect_err("label");
        assert!(
            err.to_string()
                .starts_with("policy.protected_agent_labels: label key \"-x\" is invalid"),
            "{err}"
        );
    }

    #[test]
    fn retention_defaults_and_overrides() {
        let d = parse_config("").expect("empty").retention;
        assert_eq!(d, Retention::default());
        assert_eq!(d.audit_max_age, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(d.audit_max_entries, 1_000_000);
        assert_eq!(d.experiments_max_age, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(d.experiments_max_count, 10_000);
        assert_eq!(d.prune_interval, Duration::from_secs(3600));
        let r = parse_config(
            r#"
[retention]
audit_max_age = "400d"
audit_max_entries = 5000
experiments_max_age = "2h"
experiments_max_count = 3
prune_interval = "10m"
"#,
        )
        .expect("valid")
        .retention;
        assert_eq!(r.audit_max_age, Duration::from_secs(400 * 24 * 3600));
        assert_eq!(r.audit_max_entries, 5000);
        assert_eq!(r.experiments_max_age, Duration::from_secs(7200));
        assert_eq!(r.experiments_max_count, 3);
        assert_eq!(r.prune_interval, Duration::from_secs(600));
    }

    #[test]
    fn retention_errors_name_the_field_and_range() {
        let cases: &[(&str, &str)] = &[
            (
                "[retention]\naudit_max_age = \"1h\"\n",
                "retention.audit_max_age: 1h is outside the allowed range 1day..=10years",
            ),
            (
                "[retention]\naudit_max_entries = 10\n",
                "retention.audit_max_entries: 10 is outside 1000..=100000000",
            ),
            (
                "[retention]\nexperiments_max_age = \"30m\"\n",
                "retention.experiments_max_age: 30m is outside the allowed range 1h..=10years",
            ),
            (
                "[retention]\nexperiments_max_count = 0\n",
                "retention.experiments_max_count: 0 is outside 1..=1000000",
            ),
            (
                "[retention]\nexperiments_max_count = -1\n",
                "retention.experiments_max_count: -1 is outside 1..=1000000",
            ),
            (
                "[retention]\nprune_interval = \"2d\"\n",
                "retention.prune_interval: 2days is outside the allowed range 1m..=1day",
            ),
        ];
        for (text, want) in cases {
            let err = parse_config(text).expect_err(text);
            assert_eq!(err.to_string(), *want, "{text}");
        }
        let err = parse_config("[retention]\naudit_days = 3\n").expect_err("unknown");
        assert!(
            err.to_string()
                .starts_with("retention.audit_days: unknown field `audit_days`"),
            "{err}"
        );
        let err = parse_config("[retention]\nprune_interval = \"soon\"\n").expect_err("syntax");
        assert!(
            err.to_string()
                .starts_with("retention.prune_interval: \"soon\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, "[policy]\nmax_concurrent_experiments = 5000\n").expect("write");
        let err = load_policy(&path).expect_err("range");
        assert_eq!(
            err.to_string(),
            format!(
                "config file {}: policy.max_concurrent_experiments: 5000 is outside 1..=1000",
                path.display()
            )
        );
        let err = load_policy(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(err.to_string().starts_with("reading config file"), "{err}");
    }
}
