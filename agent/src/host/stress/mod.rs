//! The stress driver (cpu, memory, io, disk-fill): plans worker processes for a target, starts them placed
//! in the target's cgroups, watches them (an OOM kill is a failure, never a silent success),
//! and removes them, their files and their leaf cgroups on revert and sweep.

mod cleanup;
mod fill;
mod io;
mod plan;
mod run;

pub use io::IoTarget;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use faultline_core::fault::{FaultKind, FaultSpec, Target};
use serde::{Deserialize, Serialize};

use super::cgroup::CgroupDir;
use super::child::Running;
use super::proc::Identity;
use super::{scan, Host};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};

const KINDS: &[FaultKind] = &[
    FaultKind::Cpu,
    FaultKind::Memory,
    FaultKind::Io,
    FaultKind::DiskFill,
];

/// The journaled plan of a stress fault; apply fills in what only exists afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StressRecipe {
    pub fault_id: String,
    /// `cpu`, `memory`, `io` or `disk-fill`.
    pub kind: String,
    pub target: String,
    pub deadline_unix_ms: u64,
    pub exe: PathBuf,
    /// The target's cgroups; workers join them (or a leaf below a v2 inner cgroup).
    pub cgroups: Vec<CgroupDir>,
    /// Kind-specific arguments of each worker.
    pub workers: Vec<Vec<String>>,
    /// io and disk-fill: the directory in the target's filesystem and the file names (a
    /// disk-fill's file has its name only if the filesystem lacks `O_TMPFILE`, and only for
    /// an instant).
    #[serde(default)]
    pub io: Option<IoTarget>,
    /// Host paths of io files, as recipes of earlier agents named them; read for their revert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_dir: Option<PathBuf>,
    #[serde(default)]
    pub pids: Vec<Identity>,
    #[serde(default)]
    pub joined: Vec<CgroupDir>,
    #[serde(default)]
    pub oom_base: Vec<(PathBuf, u64)>,
    #[serde(default)]
    pub host_oom_base: Option<u64>,
    /// Limit hits of the memory cgroups joined, before the workers started.
    #[serde(default)]
    pub limit_hits_base: Vec<(PathBuf, u64)>,
}

impl StressRecipe {
    pub fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: self.kind.clone(),
            data: serde_json::to_value(self).map_err(|e| DriverError::Other(e.to_string()))?,
        })
    }

    pub fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable {} recipe: {e}", r.kind)))
    }

    fn leaf_name(&self) -> String {
        scan::cgroup_name(&self.fault_id)
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Live {
    recipe: StressRecipe,
    workers: Vec<Running>,
}

pub struct StressDriver {
    host: Arc<Host>,
    live: Mutex<HashMap<String, Live>>,
}

impl StressDriver {
    pub fn new(host: Arc<Host>) -> Self {
        StressDriver {
            host,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // A panic elsewhere must not stop reverts: the map stays usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Driver for StressDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        KINDS
    }

    fn available(&self) -> Result<(), String> {
        self.host.available()
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        if let Target::Netns(p) = &spec.target {
            return Err(DriverError::Refused(format!(
                "{} faults act on processes and cgroups, not on network namespace {p}; target \
                 the host, a cgroup, a pid or a container",
                spec.kind()
            )));
        }
        let exe = self.host.exe()?.to_path_buf();
        let resolved = self.host.resolver.resolve(&spec.target)?;
        if resolved.cgroups.is_empty() && !matches!(spec.target, Target::Host) {
            return Err(DriverError::Refused(format!(
                "{}: none of its cgroups is visible under {} (workers could not be placed in it)",
                resolved.description,
                self.host.resolver.cgroups.root().display()
            )));
        }
        let (workers, io) = self.plan_workers(ctx, spec, &resolved)?;
        StressRecipe {
            fault_id: ctx.fault_id.clone(),
            kind: spec.kind().as_str().into(),
            target: resolved.description,
            deadline_unix_ms: unix_ms(ctx.deadline),
            exe,
            cgroups: resolved.cgroups,
            workers,
            io,
            files: Vec::new(),
            io_dir: None,
            pids: Vec::new(),
            joined: Vec::new(),
            oom_base: Vec::new(),
            host_oom_base: None,
            limit_hits_base: Vec::new(),
        }
        .to_recipe()
    }

    fn apply(
        &self,
        _ctx: &FaultCtx,
        _spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let r = StressRecipe::from_recipe(recipe)?;
        let mut live = self.live();
        if let Some(l) = live.get(&r.fault_id) {
            return l.recipe.to_recipe();
        }
        if r.pids.iter().any(|p| self.host.proc().is_alive(*p)) {
            return Ok(recipe.clone());
        }
        let fault_id = r.fault_id.clone();
        let (r, workers) = self.start(r)?;
        let out = r.to_recipe()?;
        live.insert(fault_id, Live { recipe: r, workers });
        Ok(out)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        self.revert_recipe(&StressRecipe::from_recipe(recipe)?)
    }

    fn health(&self, recipe: &Recipe) -> Health {
        match StressRecipe::from_recipe(recipe) {
            Ok(r) => self.health_of(&r),
            Err(e) => Health::Failed {
                error: e.to_string(),
                counters: Vec::new(),
            },
        }
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        self.sweep_orphans(known)
    }
}
