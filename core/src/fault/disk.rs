//! The disk faults: `disk-fill` (take space on a filesystem) and `io-limit` (throttle a
//! target's reads and writes on one block device), their validation and their parsing from
//! documents (`{kind: disk-fill, path: /var/tmp, percent: 80}`,
//! `{kind: io-limit, device: /dev/sda, writeBytesPerSecond: 1Mi, target: {cgroup: /x}}`).

use super::doc::{RawFault, Scalar};
use super::{join, FaultSpec, SpecError, Target};
use crate::units;

/// How much a disk fill takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAmount {
    /// Fill until the filesystem is this full (used / (used + available), as `df` shows it),
    /// 1..=99.
    Percent(u32),
    /// Take this many bytes.
    Bytes(u64),
}

/// `kind: disk-fill`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFillFault {
    /// A directory on the filesystem to fill, as the target sees it.
    pub path: String,
    pub amount: DiskAmount,
    /// Never leave less than this available; the fill stops short instead.
    pub keep_free_bytes: u64,
}

/// `kind: io-limit`: 0 leaves that direction or unit unlimited (at least one is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoLimitFault {
    /// A block device (`/dev/sda`), or any path: the device of its filesystem.
    pub device: String,
    pub read_bytes_per_second: u64,
    pub write_bytes_per_second: u64,
    pub read_iops: u64,
    pub write_iops: u64,
}

pub const DEFAULT_KEEP_FREE: u64 = 64 << 20;
pub const MAX_FILL_BYTES: u64 = 1 << 50;
/// Slower than a page per second would stall every write; faster than 1 TiB/s limits nothing.
pub const MIN_LIMIT_BPS: u64 = 4096;
pub const MAX_LIMIT_BPS: u64 = 1 << 40;
pub const MAX_LIMIT_IOPS: u64 = 10_000_000;

fn absolute(path: &str, field: &str, value: &str, what: &str) -> Result<(), SpecError> {
    if !value.starts_with('/') || value.split('/').any(|c| c == "..") {
        return Err(SpecError::new(
            join(path, field),
            format!("{value:?} must be an absolute {what} path without '..'"),
        ));
    }
    Ok(())
}

impl DiskFillFault {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        absolute(path, "path", &self.path, "directory")?;
        match self.amount {
            DiskAmount::Percent(p) if !(1..=99).contains(&p) => Err(SpecError::new(
                join(path, "percent"),
                format!("{p} is outside 1..=99 (whole percent of the filesystem)"),
            )),
            DiskAmount::Bytes(b) if b == 0 || b > MAX_FILL_BYTES => Err(SpecError::new(
                join(path, "size"),
                format!("{b} bytes is outside 1B..=1PiB"),
            )),
            _ if self.keep_free_bytes > MAX_FILL_BYTES => Err(SpecError::new(
                join(path, "keepFree"),
                format!("{} bytes is outside 0..=1PiB", self.keep_free_bytes),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let amount = match self.amount {
            DiskAmount::Percent(p) => format!("to {p}%"),
            DiskAmount::Bytes(b) => format!("by {}", units::format_size(b)),
        };
        format!(
            "disk-fill {} {amount} (keep {} free)",
            self.path,
            units::format_size(self.keep_free_bytes)
        )
    }
}

impl IoLimitFault {
    /// `(document field, value, is bytes)` of each limit.
    pub fn limits(&self) -> [(&'static str, u64, bool); 4] {
        [
            ("readBytesPerSecond", self.read_bytes_per_second, true),
            ("writeBytesPerSecond", self.write_bytes_per_second, true),
            ("readIops", self.read_iops, false),
            ("writeIops", self.write_iops, false),
        ]
    }

    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        absolute(path, "device", &self.device, "device or file")?;
        let mut any = false;
        for (field, v, bytes) in self.limits() {
            if v == 0 {
                continue;
            }
            any = true;
            let (lo, hi, range) = if bytes {
                (MIN_LIMIT_BPS, MAX_LIMIT_BPS, "4Ki..=1Ti bytes per second")
            } else {
                (1, MAX_LIMIT_IOPS, "1..=10000000 operations per second")
            };
            if !(lo..=hi).contains(&v) {
                return Err(SpecError::new(
                    join(path, field),
                    format!("{v} is outside {range}"),
                ));
            }
        }
        if !any {
            return Err(SpecError::new(
                path,
                "io-limit needs at least one of readBytesPerSecond, writeBytesPerSecond, \
                 readIops, writeIops",
            ));
        }
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (field, v, bytes) in self.limits() {
            if v == 0 {
                continue;
            }
            let name = match field {
                "readBytesPerSecond" => "read",
                "writeBytesPerSecond" => "write",
                "readIops" => "read",
                _ => "write",
            };
            parts.push(if bytes {
                format!("{name} {}/s", units::format_size(v))
            } else {
                format!("{name} {v} IOPS")
            });
        }
        format!("io-limit {} on {}", parts.join(", "), self.device)
    }
}

/// io-limit acts on a cgroup: the host (the root cgroup) and a network namespace have none.
pub(crate) fn check_io_limit_target(spec: &FaultSpec, path: &str) -> Result<(), SpecError> {
    match &spec.target {
        Target::Host | Target::Netns(_) => Err(SpecError::new(
            join(path, "target"),
            "io-limit throttles a cgroup: give target cgroup, pid, container or pod",
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Documents.
// ---------------------------------------------------------------------------

/// Fields of `kind: disk-fill` in documents.
pub const DISK_FILL_FIELDS: &[&str] = &["path", "percent", "size", "keepFree"];
/// Fields of `kind: io-limit` in documents.
pub const IO_LIMIT_FIELDS: &[&str] = &[
    "device",
    "readBytesPerSecond",
    "writeBytesPerSecond",
    "readIops",
    "writeIops",
];

fn size(s: &Scalar, path: &str) -> Result<u64, SpecError> {
    let text = s.text();
    if text.trim().starts_with('-') {
        return Err(SpecError::new(
            path,
            format!("{text} is negative; sizes are 0 or more"),
        ));
    }
    units::parse_size(&text).map_err(|e| SpecError::new(path, e))
}

pub(crate) fn raw_disk_fill(
    raw: &RawFault,
    at: &dyn Fn(&str) -> String,
) -> Result<DiskFillFault, SpecError> {
    let path = raw
        .path
        .clone()
        .ok_or_else(|| SpecError::new(at("path"), "is required (an absolute directory to fill)"))?;
    let amount = match (&raw.percent, &raw.size) {
        (Some(p), None) => {
            let v =
                units::parse_percent(&p.text()).map_err(|e| SpecError::new(at("percent"), e))?;
            if v.fract() != 0.0 || !(1.0..=99.0).contains(&v) {
                return Err(SpecError::new(
                    at("percent"),
                    format!(
                        "{} is outside 1..=99 (whole percent of the filesystem)",
                        p.text()
                    ),
                ));
            }
            DiskAmount::Percent(v as u32)
        }
        (None, Some(s)) => DiskAmount::Bytes(size(s, &at("size"))?),
        (Some(_), Some(_)) => {
            return Err(SpecError::new(
                at("size"),
                "give percent (1..=99) or size, not both",
            ))
        }
        (None, None) => {
            return Err(SpecError::new(
                at("percent"),
                "disk-fill needs percent (1..=99, how full the filesystem ends up) or size \
                 (bytes to take, e.g. 1Gi)",
            ))
        }
    };
    Ok(DiskFillFault {
        path,
        amount,
        keep_free_bytes: match &raw.keep_free {
            None => DEFAULT_KEEP_FREE,
            Some(k) => size(k, &at("keepFree"))?,
        },
    })
}

pub(crate) fn raw_io_limit(
    raw: &RawFault,
    at: &dyn Fn(&str) -> String,
) -> Result<IoLimitFault, SpecError> {
    let rate = |s: &Option<Scalar>, field: &str| -> Result<u64, SpecError> {
        let Some(s) = s else { return Ok(0) };
        let text = s.text();
        let text = text.trim();
        let text = text.strip_suffix("/s").unwrap_or(text);
        if text.starts_with('-') {
            return Err(SpecError::new(
                at(field),
                format!("{text} is negative; limits are more than 0"),
            ));
        }
        units::parse_size(text).map_err(|e| SpecError::new(at(field), format!("{e} (per second)")))
    };
    Ok(IoLimitFault {
        device: raw.device.clone().ok_or_else(|| {
            SpecError::new(
                at("device"),
                "is required (a block device such as /dev/sda, or a path on the filesystem to \
                 throttle)",
            )
        })?,
        read_bytes_per_second: rate(&raw.read_bytes_per_second, "readBytesPerSecond")?,
        write_bytes_per_second: rate(&raw.write_bytes_per_second, "writeBytesPerSecond")?,
        read_iops: rate(&raw.read_iops, "readIops")?,
        write_iops: rate(&raw.write_iops, "writeIops")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::doc::parse_fault;
    use super::super::Fault;
    use super::*;

    fn err(text: &str) -> String {
        parse_fault(text).expect_err(text).to_string()
    }

    #[test]
    fn parses_disk_fill_and_io_limit() {
        let f = parse_fault("{kind: disk-fill, path: /var/tmp, percent: 80}").expect("fill");
        assert_eq!(
            f.fault,
            Fault::DiskFill(DiskFillFault {
                path: "/var/tmp".into(),
                amount: DiskAmount::Percent(80),
                keep_free_bytes: 64 << 20,
            })
        );
        let f =
            parse_fault("{kind: disk-fill, path: /data, size: 1Gi, keepFree: 0}").expect("fill");
        assert_eq!(
            f.fault,
            Fault::DiskFill(DiskFillFault {
                path: "/data".into(),
                amount: DiskAmount::Bytes(1 << 30),
                keep_free_bytes: 0,
            })
        );
        assert_eq!(f.describe(), "disk-fill /data by 1GiB (keep 0B free)");
        let l = parse_fault(
            "{kind: io-limit, device: /dev/loop3, writeBytesPerSecond: 1Mi/s, readIops: 100, \
             target: {cgroup: /faultline-t}}",
        )
        .expect("limit");
        assert_eq!(
            l.fault,
            Fault::IoLimit(IoLimitFault {
                device: "/dev/loop3".into(),
                read_bytes_per_second: 0,
                write_bytes_per_second: 1 << 20,
                read_iops: 100,
                write_iops: 0,
            })
        );
        assert_eq!(
            l.describe(),
            "io-limit write 1MiB/s, read 100 IOPS on /dev/loop3 on cgroup /faultline-t"
        );
    }

    #[test]
    fn bad_disk_input_names_field_and_range() {
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, percent: 0}"),
            "percent: 0 is outside 1..=99 (whole percent of the filesystem)"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, percent: 100}"),
            "percent: 100 is outside 1..=99 (whole percent of the filesystem)"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, percent: 50.5}"),
            "percent: 50.5 is outside 1..=99 (whole percent of the filesystem)"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, percent: 50, size: 1Gi}"),
            "size: give percent (1..=99) or size, not both"
        );
        assert!(err("{kind: disk-fill, path: /tmp}").starts_with("percent: disk-fill needs"));
        assert_eq!(
            err("{kind: disk-fill, percent: 5}"),
            "path: is required (an absolute directory to fill)"
        );
        assert_eq!(
            err("{kind: disk-fill, path: tmp, percent: 5}"),
            "path: \"tmp\" must be an absolute directory path without '..'"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp/../etc, percent: 5}"),
            "path: \"/tmp/../etc\" must be an absolute directory path without '..'"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, size: 0}"),
            "size: 0 bytes is outside 1B..=1PiB"
        );
        assert_eq!(
            err("{kind: disk-fill, path: /tmp, size: 1Gi, keepFree: -1}"),
            "keepFree: -1 is negative; sizes are 0 or more"
        );
        assert!(err("{kind: disk-fill, path: /tmp, size: 1Gi, workers: 2}")
            .starts_with("workers: is not a field of kind disk-fill"));
    }

    #[test]
    fn bad_io_limit_input_names_field_and_range() {
        let t = "target: {cgroup: /x}";
        assert_eq!(
            err(&format!("{{kind: io-limit, device: /dev/sda, {t}}}")),
            ": io-limit needs at least one of readBytesPerSecond, writeBytesPerSecond, readIops, \
             writeIops"
        );
        assert_eq!(
            err(&format!(
                "{{kind: io-limit, device: /dev/sda, readIops: 0, {t}}}"
            )),
            ": io-limit needs at least one of readBytesPerSecond, writeBytesPerSecond, readIops, \
             writeIops"
        );
        assert_eq!(
            err(&format!("{{kind: io-limit, writeIops: 10, {t}}}")),
            "device: is required (a block device such as /dev/sda, or a path on the filesystem \
             to throttle)"
        );
        assert_eq!(
            err(&format!(
                "{{kind: io-limit, device: sda, writeIops: 10, {t}}}"
            )),
            "device: \"sda\" must be an absolute device or file path without '..'"
        );
        assert_eq!(
            err(&format!(
                "{{kind: io-limit, device: /dev/sda, writeBytesPerSecond: 100, {t}}}"
            )),
            "writeBytesPerSecond: 100 is outside 4Ki..=1Ti bytes per second"
        );
        assert_eq!(
            err(&format!(
                "{{kind: io-limit, device: /dev/sda, readIops: 20000000, {t}}}"
            )),
            "readIops: 20000000 is outside 1..=10000000 operations per second"
        );
        assert_eq!(
            err(&format!(
                "{{kind: io-limit, device: /dev/sda, readIops: -3, {t}}}"
            )),
            "readIops: -3 is negative; limits are more than 0"
        );
        assert!(err(&format!(
            "{{kind: io-limit, device: /dev/sda, readIops: fast, {t}}}"
        ))
        .starts_with("readIops: \"fast\" is not a size"));
        assert_eq!(
            err("{kind: io-limit, device: /dev/sda, readIops: 10}"),
            "target: io-limit throttles a cgroup: give target cgroup, pid, container or pod"
        );
        assert!(err(&format!(
            "{{kind: io-limit, device: /dev/sda, readIops: 5, percent: 3, {t}}}"
        ))
        .starts_with("percent: is not a field of kind io-limit"));
    }

    #[test]
    fn in_an_experiment_the_error_names_the_fault() {
        let text = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: t}\nspec:\n  \
                    duration: 10s\n  targets: {mode: all}\n  faults:\n    - {kind: cpu, load: 10}\n    \
                    - {kind: disk-fill, path: /tmp, percent: 100}\n    \
                    - {kind: io-limit, device: /dev/sda, target: {cgroup: /x}}\n";
        let err = crate::experiment::parse_experiment(text, std::time::Duration::from_secs(3600))
            .expect_err("100%");
        assert_eq!(
            err.to_string(),
            "spec.faults[1].percent: 100 is outside 1..=99 (whole percent of the filesystem)"
        );
        let text = text.replace("percent: 100", "percent: 50");
        let err = crate::experiment::parse_experiment(&text, std::time::Duration::from_secs(3600))
            .expect_err("no limit");
        assert!(
            err.to_string()
                .starts_with("spec.faults[2]: io-limit needs at least one of"),
            "{err}"
        );
    }

    #[test]
    fn a_pod_experiment_takes_an_io_limit_without_a_target_and_aims_it_at_each_pod() {
        let text = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: p}\nspec:\n  \
                    duration: 30s\n  targets: {pods: {namespace: shop}, mode: all}\n  faults:\n    \
                    - {kind: io-limit, device: /dev/sda, writeBytesPerSecond: 1Mi}\n    \
                    - {kind: disk-fill, path: /tmp, percent: 80}\n";
        let s = crate::experiment::parse_experiment(text, std::time::Duration::from_secs(3600))
            .expect("valid");
        assert_eq!(s.faults[0].target, Target::Host, "aimed per pod later");
        let pod = super::super::ContainerRef {
            pod_uid: "1f2e-33".into(),
            ..Default::default()
        };
        for f in &s.faults {
            let aimed = crate::experiment::pods::aim(f, &pod);
            assert_eq!(aimed.target, Target::Container(pod.clone()));
            aimed.validate("f").expect("valid for the agent");
        }
        let bad = text.replace("writeBytesPerSecond: 1Mi", "readIops: 0");
        let err = crate::experiment::parse_experiment(&bad, std::time::Duration::from_secs(3600))
            .expect_err("no limit");
        assert!(
            err.to_string()
                .starts_with("spec.faults[0]: io-limit needs at least one of"),
            "{err}"
        );
    }
}
