//! The agent config file (`--config FILE`, TOML): local limits and the protected list, parsed
//! into a raw struct (unknown fields refused) and then validated, with errors that name the
//! field and its allowed range.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use faultline_core::duration;
use faultline_core::experiment::guard_doc::is_dns_label;
use faultline_core::fault::FaultKind;
use serde::Deserialize;

use crate::engine::limits::{
    Limits, MAX_CONCURRENT_FAULTS_RANGE, MAX_MAX_DURATION, MIN_MAX_DURATION,
};
use crate::host::{HostConfig, Protected};

/// Process names (regexes on comm and command line) protected when the config file does not
/// say otherwise.
pub const DEFAULT_PROTECTED_NAMES: [&str; 4] = ["^sshd$", "^kubelet$", "^containerd$", "^dockerd$"];
/// Kubernetes namespaces protected when the config file does not say otherwise (the agent's
/// own namespace is protected on top of the list).
pub const DEFAULT_PROTECTED_NAMESPACES: [&str; 1] = ["kube-system"];
/// The highest PID Linux hands out (`/proc/sys/kernel/pid_max` at most 2^22).
pub const MAX_PID: u32 = 1 << 22;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    network: RawNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    /// How long a kept TCX link without a fault stays attached (`crate::net::keep`).
    link_idle: Option<String>,
}

/// The `[network]` section: how the network drivers hold the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFile {
    /// A kept TCX link without a fault is detached after this long (`network.link_idle`,
    /// 100ms..=1h, default 30s).
    pub link_idle: std::time::Duration,
}

impl Default for NetworkFile {
    fn default() -> Self {
        NetworkFile {
            link_idle: crate::net::keep::DEFAULT_IDLE,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    allowed_kinds: Option<Vec<String>>,
    max_concurrent_faults: Option<i64>,
    max_duration: Option<String>,
    protected_pids: Option<Vec<i64>>,
    protected_names: Option<Vec<String>>,
    protected_cgroups: Option<Vec<String>>,
    protected_namespaces: Option<Vec<String>>,
    pod_logs_dir: Option<String>,
    io_paths: Option<Vec<String>>,
    // Kill faults (issue 13).
    container_logs_dir: Option<String>,
}

/// What must never be targeted, besides PID 1 and the agent itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedList {
    pub pids: Vec<u32>,
    /// Regexes on the process name (comm) and command line, each checked to compile.
    pub names: Vec<String>,
    /// Absolute cgroup paths; everything under them is protected.
    pub cgroups: Vec<String>,
    /// Kubernetes namespaces (DNS-1123 labels) whose pods are never targets.
    pub namespaces: Vec<String>,
    /// The kubelet's pod log directories, where pods' namespaces are read.
    pub pod_logs_dir: PathBuf,
    /// The kubelet's container log links, where container-kill reads containers' IDs.
    pub container_logs_dir: PathBuf,
}

impl Default for ProtectedList {
    fn default() -> Self {
        ProtectedList {
            pids: Vec::new(),
            names: DEFAULT_PROTECTED_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cgroups: Vec::new(),
            namespaces: DEFAULT_PROTECTED_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            pod_logs_dir: PathBuf::from(crate::host::pods::DEFAULT_POD_LOGS_DIR),
            container_logs_dir: PathBuf::from(crate::host::kill::DEFAULT_CONTAINER_LOGS_DIR),
        }
    }
}

/// The validated agent config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFile {
    pub limits: Limits,
    pub protected: ProtectedList,
    pub network: NetworkFile,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("--config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// A field error before the file's path is known.
struct Bad {
    field: String,
    message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Bad {
    Bad {
        field: field.into(),
        message: message.into(),
    }
}

impl AgentFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AgentFile, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            Ok(b) => FileError::Invalid {
                path: path.to_path_buf(),
                field: b.field,
                message: b.message,
            },
            Err(message) => FileError::Parse {
                path: path.to_path_buf(),
                message,
            },
        })
    }

    /// Parses and validates TOML text. Outer error: a field is invalid (Ok) or the text is not
    /// TOML of the expected shape (Err).
    fn parse(text: &str) -> Result<AgentFile, Result<Bad, String>> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| Err(e.to_string().trim().to_string()))?;
        let mut file = validate(raw.limits).map_err(Ok)?;
        file.network = validate_network(raw.network).map_err(Ok)?;
        Ok(file)
    }

    /// The host adapters' configuration: this file's protected list and io paths, the system's
    /// cgroup and proc roots, and this process's own executable for workers.
    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            protected: Protected {
                pids: self.protected.pids.clone(),
                names: self.protected.names.clone(),
                cgroups: self.protected.cgroups.clone(),
                namespaces: self.protected.namespaces.clone(),
            },
            pod_logs_dir: self.protected.pod_logs_dir.clone(),
            container_logs_dir: self.protected.container_logs_dir.clone(),
            io_paths: self.limits.io_paths.clone(),
            ..HostConfig::default()
        }
    }

    /// Parses TOML text (for tests and callers without a file); errors as [`AgentFile::load`]
    /// with `<text>` as the path.
    pub fn from_toml(text: &str) -> Result<AgentFile, FileError> {
        let path = PathBuf::from("<text>");
        Self::parse(text).map_err(|e| match e {
            Ok(b) => FileError::Invalid {
                path,
                field: b.field,
                message: b.message,
            },
            Err(message) => FileError::Parse { path, message },
        })
    }
}

/// An absolute path without `..`, normalized (no trailing slash).
fn absolute(field: &str, p: &str) -> Result<PathBuf, Bad> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(bad(
            field,
            format!("{p:?} must be an absolute path without '..'"),
        ));
    }
    Ok(path.components().collect())
}

/// `duration::parse_in_range` with the field name left to [`Bad`].
fn duration_in(
    field: &str,
    text: &str,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, Bad> {
    duration::parse_in_range(field, text, min, max).map_err(|e| {
        let text = e.to_string();
        let message = text
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&text)
            .to_string();
        bad(field, message)
    })
}

fn validate_network(raw: RawNetwork) -> Result<NetworkFile, Bad> {
    let mut network = NetworkFile::default();
    if let Some(d) = raw.link_idle {
        use crate::net::keep::{MAX_IDLE, MIN_IDLE};
        network.link_idle = duration_in("network.link_idle", &d, MIN_IDLE, MAX_IDLE)?;
    }
    Ok(network)
}

fn validate(raw: RawLimits) -> Result<AgentFile, Bad> {
    let mut limits = Limits::default();
    let mut protected = ProtectedList::default();
    if let Some(kinds) = raw.allowed_kinds {
        let mut set = BTreeSet::new();
        for (i, k) in kinds.iter().enumerate() {
            let kind: FaultKind = k
                .parse()
                .map_err(|e: String| bad(format!("limits.allowed_kinds[{i}]"), e))?;
            set.insert(kind);
        }
        limits.allowed_kinds = set;
    }
    if let Some(n) = raw.max_concurrent_faults {
        let range = MAX_CONCURRENT_FAULTS_RANGE;
        limits.max_concurrent_faults = usize::try_from(n)
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                bad(
                    "limits.max_concurrent_faults",
                    format!("{n} is outside {}..={}", range.start(), range.end()),
                )
            })?;
    }
    if let Some(d) = raw.max_duration {
        limits.max_duration = duration_in(
            "limits.max_duration",
            &d,
            MIN_MAX_DURATION,
            MAX_MAX_DURATION,
        )?;
    }
    if let Some(pids) = raw.protected_pids {
        protected.pids = pids
            .iter()
            .enumerate()
            .map(|(i, p)| {
                u32::try_from(*p)
                    .ok()
                    .filter(|p| (1..=MAX_PID).contains(p))
                    .ok_or_else(|| {
                        bad(
                            format!("limits.protected_pids[{i}]"),
                            format!("{p} is outside 1..={MAX_PID}"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(names) = raw.protected_names {
        for (i, n) in names.iter().enumerate() {
            regex::Regex::new(n).map_err(|e| {
                bad(
                    format!("limits.protected_names[{i}]"),
                    format!("{n:?} is not a regular expression: {e}"),
                )
            })?;
        }
        protected.names = names;
    }
    if let Some(cgroups) = raw.protected_cgroups {
        protected.cgroups = cgroups
            .iter()
            .enumerate()
            .map(|(i, c)| {
                absolute(&format!("limits.protected_cgroups[{i}]"), c)
                    .map(|p| p.display().to_string())
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(namespaces) = raw.protected_namespaces {
        for (i, n) in namespaces.iter().enumerate() {
            if !is_dns_label(n) {
                return Err(bad(
                    format!("limits.protected_namespaces[{i}]"),
                    format!("{n:?} is not a namespace name (1..=63 of a-z, 0-9, -, starting and ending alphanumeric)"),
                ));
            }
        }
        protected.namespaces = namespaces;
    }
    if let Some(dir) = raw.pod_logs_dir {
        protected.pod_logs_dir = absolute("limits.pod_logs_dir", &dir)?;
    }
    if let Some(dir) = raw.container_logs_dir {
        protected.container_logs_dir = absolute("limits.container_logs_dir", &dir)?;
    }
    if let Some(paths) = raw.io_paths {
        limits.io_paths = paths
            .iter()
            .enumerate()
            .map(|(i, p)| absolute(&format!("limits.io_paths[{i}]"), p))
            .collect::<Result<_, _>>()?;
    }
    Ok(AgentFile {
        limits,
        protected,
        network: NetworkFile::default(),
    })
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
