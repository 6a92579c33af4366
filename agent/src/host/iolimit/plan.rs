//! Planning an io-limit: the cgroup whose io controller can throttle, the cgroups the rule
//! must be written into, and the values in effect before the fault (journaled with the plan).

use std::path::{Path, PathBuf};

use faultline_core::fault::IoLimitFault;

use super::files::{self, Limit, Setting};
use super::IoLimitDriver;
use crate::engine::driver::DriverError;
use crate::host::cgroup::{CgroupDir, Version};

/// The target's cgroup whose io controller can throttle: v2 with `io.max`, else v1 blkio.
pub(super) fn pick(
    description: &str,
    cgroups: &[CgroupDir],
) -> Result<(CgroupDir, Version), DriverError> {
    let v2 = cgroups
        .iter()
        .find(|d| d.hierarchy.version == Version::V2 && d.dir.join(files::IO_MAX).exists());
    let v1 = cgroups.iter().find(|d| {
        d.hierarchy.version == Version::V1
            && d.hierarchy.has("blkio")
            && d.dir.join(Limit::WriteBps.v1_file()).exists()
    });
    let (d, v) = match (v2, v1) {
        (Some(d), _) => (d, Version::V2),
        (None, Some(d)) => (d, Version::V1),
        (None, None) => {
            return Err(DriverError::Refused(format!(
                "target: {description} has no cgroup with an io controller (neither io.max of \
                 cgroup v2 nor blkio.throttle.* of v1 in {})",
                cgroups
                    .iter()
                    .map(|d| d.dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if d.dir == d.hierarchy.mount {
        return Err(DriverError::Refused(format!(
            "target: {description} is in the root cgroup of {}; io-limit throttles a cgroup \
             below it",
            d.hierarchy.label()
        )));
    }
    Ok((d.clone(), v))
}

/// How deep below a v1 target the driver looks for cgroups to throttle.
const V1_DEPTH: usize = 8;

/// Where the limit must be written: v2 `io.max` is hierarchical, so the target's cgroup is
/// enough; a v1 throttle rule applies only to the processes of its own cgroup (a limit on a
/// pod's cgroup does not slow its containers, which sit in child cgroups), so the target's
/// cgroup and every cgroup below it, as they exist when the fault is planned.
pub(super) fn throttled_dirs(top: &CgroupDir, version: Version) -> Vec<PathBuf> {
    let mut out = vec![top.dir.clone()];
    if version == Version::V2 {
        return out;
    }
    let mut stack = vec![(top.dir.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth >= V1_DEPTH {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut children: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        children.sort();
        for c in children {
            out.push(c.clone());
            stack.push((c, depth + 1));
        }
    }
    out
}

impl IoLimitDriver {
    /// The settings of a fault in one cgroup directory: the values in effect now and what the
    /// fault sets.
    pub(super) fn settings(
        &self,
        l: &IoLimitFault,
        d: &Path,
        version: Version,
        dev: files::DevNum,
    ) -> Result<Vec<Setting>, DriverError> {
        let asked = [
            (Limit::ReadBps, l.read_bytes_per_second),
            (Limit::WriteBps, l.write_bytes_per_second),
            (Limit::ReadIops, l.read_iops),
            (Limit::WriteIops, l.write_iops),
        ];
        let mut out = Vec::new();
        for (limit, want) in asked {
            if want == 0 {
                continue;
            }
            let mut s = Setting {
                file: files::file_in(d, version, limit),
                version,
                limit,
                dev,
                old: None,
                new: want,
            };
            s.old = files::read(&s)
                .map_err(|e| DriverError::io(format!("read {}", s.file.display()), e))?;
            // Never loosen a stricter limit that was there before.
            s.new = s.old.map_or(want, |o| o.min(want));
            out.push(s);
        }
        Ok(out)
    }
}
