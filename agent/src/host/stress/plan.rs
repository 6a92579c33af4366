//! Planning a stress fault: how many workers with which arguments, the memory a percent is
//! of, and the io directory (one of the agent's io paths).

use std::path::{Path, PathBuf};

use faultline_core::fault::{Fault, FaultSpec, MemoryAmount, Target};

use super::StressDriver;
use crate::engine::driver::{DriverError, FaultCtx};
use crate::host::cgroup::{self, CgroupDir};
use crate::host::scan;

/// Per-worker arguments, the io files, the io directory.
pub(super) type WorkerPlan = (Vec<Vec<String>>, Vec<PathBuf>, Option<PathBuf>);

impl StressDriver {
    pub(super) fn plan_workers(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        cgroups: &[CgroupDir],
    ) -> Result<WorkerPlan, DriverError> {
        let s = |v: &dyn ToString| v.to_string();
        match &spec.fault {
            Fault::Cpu(c) => {
                let n = if c.workers > 0 {
                    c.workers
                } else {
                    cgroup::cpus_available(cgroups).unwrap_or_else(cgroup::online_cpus)
                };
                let args = vec!["--load".into(), s(&c.load_percent)];
                Ok((vec![args; n as usize], Vec::new(), None))
            }
            Fault::Memory(m) => {
                let bytes = match m.amount {
                    MemoryAmount::Bytes(b) => b,
                    MemoryAmount::Percent(p) => {
                        let limit = self.memory_base(&spec.target, cgroups)?;
                        ((limit as f64) * p / 100.0) as u64
                    }
                };
                Ok((
                    vec![vec!["--bytes".into(), s(&bytes.max(1))]],
                    Vec::new(),
                    None,
                ))
            }
            Fault::Io(io) => {
                let dir = self.io_dir(&io.path)?;
                let rate = if io.rate_bytes_per_second == 0 {
                    0
                } else {
                    io.rate_bytes_per_second.div_ceil(u64::from(io.workers))
                };
                let files: Vec<PathBuf> = (0..io.workers)
                    .map(|n| scan::io_file(&dir, &ctx.fault_id, n))
                    .collect();
                let workers = files
                    .iter()
                    .map(|f| {
                        vec![
                            "--file".into(),
                            f.display().to_string(),
                            "--size".into(),
                            s(&io.size_bytes),
                            "--rate".into(),
                            s(&rate),
                        ]
                    })
                    .collect();
                Ok((workers, files, Some(dir)))
            }
            other => Err(DriverError::Other(format!(
                "the stress driver does not handle {} faults",
                other.kind()
            ))),
        }
    }

    /// The bytes a memory percent is of: MemTotal for the host, else the target's limit.
    fn memory_base(&self, target: &Target, cgroups: &[CgroupDir]) -> Result<u64, DriverError> {
        if matches!(target, Target::Host) {
            return self
                .host
                .proc()
                .mem_total()
                .map_err(|e| DriverError::Other(e.to_string()));
        }
        match cgroup::memory_limit(cgroups) {
            Some((limit, _)) => Ok(limit),
            None if cgroup::memory_dir(cgroups).is_none() => Err(DriverError::Refused(
                "percent: the target has no memory cgroup to take a percent of; give size in bytes"
                    .into(),
            )),
            None => Err(DriverError::Refused(
                "percent: the target's memory cgroup is unlimited, so a percent of its limit means \
                 nothing; give size in bytes"
                    .into(),
            )),
        }
    }

    /// The io directory if it is one of the configured io paths.
    fn io_dir(&self, path: &str) -> Result<PathBuf, DriverError> {
        let want = Path::new(path.trim_end_matches('/'));
        let allowed: Vec<String> = self
            .host
            .io_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if !self.host.io_paths.iter().any(|p| p == want) {
            return Err(DriverError::Refused(format!(
                "path {path} is not one of the agent's io_paths ({}) (agent config)",
                allowed.join(", ")
            )));
        }
        if !want.is_dir() {
            return Err(DriverError::Refused(format!(
                "path {path} is not an existing directory"
            )));
        }
        Ok(want.to_path_buf())
    }
}
