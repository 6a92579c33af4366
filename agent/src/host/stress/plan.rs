//! Planning a stress fault: how many workers with which arguments, the memory a percent is
//! of, and for io the directory in the target's filesystem (see [`io`](super::io)).

use faultline_core::fault::{Fault, FaultSpec, MemoryAmount, Target};

use super::io::IoTarget;
use super::StressDriver;
use crate::engine::driver::{DriverError, FaultCtx};
use crate::host::cgroup::{self, CgroupDir};
use crate::host::target::Resolved;

/// Per-worker arguments, and where io workers write.
pub(super) type WorkerPlan = (Vec<Vec<String>>, Option<IoTarget>);

impl StressDriver {
    pub(super) fn plan_workers(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        resolved: &Resolved,
    ) -> Result<WorkerPlan, DriverError> {
        let cgroups = &resolved.cgroups;
        let s = |v: &dyn ToString| v.to_string();
        match &spec.fault {
            Fault::Cpu(c) => {
                let n = if c.workers > 0 {
                    c.workers
                } else {
                    cgroup::cpus_available(cgroups).unwrap_or_else(cgroup::online_cpus)
                };
                let args = vec!["--load".into(), s(&c.load_percent)];
                Ok((vec![args; n as usize], None))
            }
            Fault::Memory(m) => {
                let bytes = match m.amount {
                    MemoryAmount::Bytes(b) => b,
                    MemoryAmount::Percent(p) => {
                        let limit = self.memory_base(&spec.target, cgroups)?;
                        ((limit as f64) * p / 100.0) as u64
                    }
                };
                Ok((vec![vec!["--bytes".into(), s(&bytes.max(1))]], None))
            }
            Fault::Io(io) => {
                let (t, workers) = self.plan_io(ctx, io, &spec.target, resolved)?;
                Ok((workers, Some(t)))
            }
            Fault::DiskFill(f) => {
                let (t, workers) = self.plan_fill(ctx, f, &spec.target, resolved)?;
                Ok((workers, Some(t)))
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
}
