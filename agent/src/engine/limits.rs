//! The agent's local limits (from its config file): which kinds it accepts, how many faults at
//! once, for how long, and where io faults may write. Checked before anything changes, even for
//! faults the coordinator sent, so a buggy coordinator cannot exceed them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::fault::{Fault, FaultKind, FaultSpec};

pub const DEFAULT_MAX_CONCURRENT_FAULTS: usize = 16;
pub const MAX_CONCURRENT_FAULTS_RANGE: std::ops::RangeInclusive<usize> = 1..=1000;
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);
pub const MIN_MAX_DURATION: Duration = Duration::from_secs(1);
pub const MAX_MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_IO_PATHS: [&str; 2] = ["/var/tmp", "/tmp"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub allowed_kinds: BTreeSet<FaultKind>,
    /// 1..=1000
    pub max_concurrent_faults: usize,
    /// 1s..=7d
    pub max_duration: Duration,
    /// The only directories io faults may write to (and that the sweep scans).
    pub io_paths: Vec<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            allowed_kinds: FaultKind::ALL.into_iter().collect(),
            max_concurrent_faults: DEFAULT_MAX_CONCURRENT_FAULTS,
            max_duration: DEFAULT_MAX_DURATION,
            io_paths: DEFAULT_IO_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// A duration rounded to whole seconds (or milliseconds below one second) for messages.
pub fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(((d.as_millis() + 500) / 1000) as u64)
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Limits {
    pub fn check_kind(&self, kind: FaultKind) -> Result<(), String> {
        if self.allowed_kinds.contains(&kind) {
            return Ok(());
        }
        let allowed: Vec<&str> = self.allowed_kinds.iter().map(|k| k.as_str()).collect();
        Err(format!(
            "fault kind {kind} is not in the agent's allowed_kinds [{}] (agent config)",
            allowed.join(", ")
        ))
    }

    /// `held` = faults the agent holds now (before this one).
    pub fn check_concurrency(&self, held: usize) -> Result<(), String> {
        if held < self.max_concurrent_faults {
            return Ok(());
        }
        Err(format!(
            "{held} faults are active, the agent's max_concurrent_faults is {} (agent config)",
            self.max_concurrent_faults
        ))
    }

    /// `duration` = deadline - now.
    pub fn check_duration(&self, duration: Duration) -> Result<(), String> {
        // Up to half a second of transit time is not held against the sender.
        if duration <= self.max_duration + Duration::from_millis(500) {
            return Ok(());
        }
        Err(format!(
            "duration {} exceeds the agent's max_duration {} (agent config)",
            human(duration),
            human(self.max_duration)
        ))
    }

    /// An io fault must write into one of `io_paths`, and a disk-fill fill one of them;
    /// `path` names the spec (`spec`).
    pub fn check_io_path(&self, spec: &FaultSpec, path: &str) -> Result<(), String> {
        let dir = match &spec.fault {
            Fault::Io(io) => &io.path,
            Fault::DiskFill(d) => &d.path,
            _ => return Ok(()),
        };
        let wanted = normalize(Path::new(dir));
        if self.io_paths.iter().any(|p| normalize(p) == wanted) {
            return Ok(());
        }
        Err(format!(
            "{}: {} is not one of the agent's io_paths [{}] (agent config)",
            faultline_core::fault::join(path, "path"),
            dir,
            list(&self.io_paths)
        ))
    }

    /// Every check that needs only the spec and the number of held faults.
    pub fn check(
        &self,
        spec: &FaultSpec,
        path: &str,
        duration: Duration,
        held: usize,
    ) -> Result<(), String> {
        self.check_kind(spec.kind())?;
        self.check_duration(duration)?;
        self.check_concurrency(held)?;
        self.check_io_path(spec, path)
    }
}

/// `/var/tmp/` and `/var/tmp` are the same directory.
fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_core::fault::doc::parse_fault;

    #[test]
    fn durations_round_to_what_was_meant() {
        assert_eq!(human(Duration::from_millis(7_199_600)), "2h");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_millis(90_400)), "1m 30s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn each_limit_names_itself_and_its_value() {
        let limits = Limits {
            allowed_kinds: [FaultKind::Cpu, FaultKind::Io].into_iter().collect(),
            max_concurrent_faults: 2,
            max_duration: Duration::from_secs(3600),
            io_paths: vec!["/var/tmp".into(), "/tmp".into()],
        };
        let cpu = parse_fault("{kind: cpu, load: 10}").expect("cpu");
        let mem = parse_fault("{kind: memory, size: 1Mi}").expect("memory");
        let io = parse_fault("{kind: io, path: /data, workers: 1, size: 1Mi}").expect("io");
        let ok_io = parse_fault("{kind: io, path: /var/tmp/, workers: 1, size: 1Mi}").expect("io");
        let hour = Duration::from_secs(3600);
        assert_eq!(limits.check(&cpu, "spec", hour, 1), Ok(()));
        assert_eq!(limits.check(&ok_io, "spec", hour, 0), Ok(()));
        assert_eq!(
            limits.check(&mem, "spec", hour, 0),
            Err(
                "fault kind memory is not in the agent's allowed_kinds [cpu, io] (agent config)"
                    .into()
            )
        );
        assert_eq!(
            limits.check(&cpu, "spec", Duration::from_millis(7_199_700), 0),
            Err("duration 2h exceeds the agent's max_duration 1h (agent config)".into())
        );
        assert_eq!(
            limits.check(&cpu, "spec", hour, 2),
            Err(
                "2 faults are active, the agent's max_concurrent_faults is 2 (agent config)".into()
            )
        );
        assert_eq!(
            limits.check(&io, "spec", hour, 0),
            Err("spec.path: /data is not one of the agent's io_paths [/var/tmp, /tmp] (agent config)".into())
        );
        let mut all = limits.clone();
        all.allowed_kinds = FaultKind::ALL.into_iter().collect();
        let fill = parse_fault("{kind: disk-fill, path: /etc, percent: 50}").expect("fill");
        assert_eq!(
            all.check(&fill, "spec", hour, 0),
            Err("spec.path: /etc is not one of the agent's io_paths [/var/tmp, /tmp] (agent config)".into())
        );
    }
}
