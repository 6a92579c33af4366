//! The io-limit driver: throttles a target's cgroup on one block device through cgroup v2
//! `io.max`, or v1 `blkio.throttle.*` where that is the io controller the node has (see
//! [`files`]; a v1 rule holds only for its own cgroup's processes, so there the target's
//! cgroup and every cgroup below it get one), never loosening a limit that was already
//! stricter.
//!
//! A written cgroup file is not inert when the agent dies, so the fault has three ways back:
//! - the journal: `plan` reads the values in effect and the recipe (journaled before any
//!   write) keeps them; revert and the start-up recovery restore them exactly;
//! - a guard process (see [`guard`]) started before the first write and moved out of the
//!   agent's cgroups, holding the same values: it restores them when the agent dies, at the
//!   fault's deadline, and when the lease the agent forwards to it runs out;
//! - the sweep: a guard no journal entry names has its values restored from its argv.
//!
//! Layout: [`files`] encodes, reads, writes and restores the cgroup files; [`device`] resolves
//! `device` to a whole disk; `plan` picks the cgroups and reads the old values; `guards` is the
//! agent's side of the guard processes and [`guard`] the guard process itself.

pub mod device;
pub mod files;
pub mod guard;
mod guards;
mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::fault::{Fault, FaultKind, FaultSpec, Target};
use serde::{Deserialize, Serialize};

use self::files::Setting;
use self::plan::{pick, throttled_dirs};
use super::cgroup::Version;
use super::child::Running;
use super::proc::Identity;
use super::stress::unix_ms;
use super::worker::IO_GUARD_ARG;
use super::{os, scan, Host};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::lease::KernelLease;

const KINDS: &[FaultKind] = &[FaultKind::IoLimit];

/// The journaled plan of an io-limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoLimitRecipe {
    pub fault_id: String,
    pub target: String,
    pub deadline_unix_ms: u64,
    pub exe: PathBuf,
    /// The device as asked and as resolved, for messages.
    pub device: String,
    /// The cgroup, for messages (`blkio:/x`).
    pub cgroup: String,
    /// Every limit set, with the value it replaces.
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub guard: Option<Identity>,
}

impl IoLimitRecipe {
    fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: FaultKind::IoLimit.as_str().into(),
            data: serde_json::to_value(self).map_err(|e| DriverError::Other(e.to_string()))?,
        })
    }

    fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable io-limit recipe: {e}")))
    }
}

struct Live {
    recipe: IoLimitRecipe,
    guard: Running,
}

pub struct IoLimitDriver {
    host: Arc<Host>,
    lease: KernelLease,
    sys_block: PathBuf,
    live: Mutex<HashMap<String, Live>>,
}

/// The driver, subscribed to the kernel-side lease so its guards follow it.
pub fn driver(host: Arc<Host>, lease: &KernelLease) -> Arc<IoLimitDriver> {
    let d = Arc::new(IoLimitDriver {
        host,
        lease: lease.clone(),
        sys_block: PathBuf::from(device::SYS_DEV_BLOCK),
        live: Mutex::new(HashMap::new()),
    });
    let weak: Weak<IoLimitDriver> = Arc::downgrade(&d);
    lease.subscribe(weak);
    d
}

impl IoLimitDriver {
    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Driver for IoLimitDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        KINDS
    }

    fn available(&self) -> Result<(), String> {
        self.host.available()?;
        let hs = self
            .host
            .resolver
            .hierarchies()
            .map_err(|e| e.to_string())?;
        if hs.iter().any(|h| match h.version {
            Version::V1 => h.has("blkio"),
            Version::V2 => h.has("io"),
        }) {
            return Ok(());
        }
        Err(format!(
            "no cgroup io controller is mounted under {} (neither v1 blkio nor the v2 io              controller)",
            self.host.resolver.cgroups.root().display()
        ))
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let Fault::IoLimit(l) = &spec.fault else {
            return Err(DriverError::Other(format!(
                "the io-limit driver does not handle {} faults",
                spec.kind()
            )));
        };
        if matches!(spec.target, Target::Host | Target::Netns(_)) {
            return Err(DriverError::Refused(
                "target: io-limit throttles a cgroup: give target cgroup, pid, container or pod"
                    .into(),
            ));
        }
        let exe = self.host.exe()?.to_path_buf();
        let resolved = self.host.resolver.resolve(&spec.target)?;
        let (dir, version) = pick(&resolved.description, &resolved.cgroups)?;
        let node_root = self.host.proc().path(1, "root");
        let (dev, shown) = device::resolve_in(&l.device, Some(&node_root), &self.sys_block)
            .map_err(DriverError::Refused)?;
        let mut settings = Vec::new();
        for d in throttled_dirs(&dir, version) {
            settings.extend(self.settings(l, &d, version, dev)?);
        }
        for (id, other) in self.live().iter() {
            let clash = other.recipe.settings.iter().any(|o| {
                settings
                    .iter()
                    .any(|s| s.file == o.file && s.dev == o.dev && s.limit == o.limit)
            });
            if clash {
                return Err(DriverError::Refused(format!(
                    "io-limit fault {id} already limits {dev} in {}; one io-limit per cgroup \
                     and device at a time",
                    dir.describe()
                )));
            }
        }
        IoLimitRecipe {
            fault_id: ctx.fault_id.clone(),
            target: resolved.description,
            deadline_unix_ms: unix_ms(ctx.deadline),
            exe,
            device: shown,
            cgroup: dir.describe(),
            settings,
            guard: None,
        }
        .to_recipe()
    }

    fn apply(
        &self,
        _ctx: &FaultCtx,
        _spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let mut r = IoLimitRecipe::from_recipe(recipe)?;
        let mut live = self.live();
        if let Some(l) = live.get(&r.fault_id) {
            return l.recipe.to_recipe();
        }
        // The undo is in place before the first write.
        let mut g = self.start_guard(&r)?;
        let mut written = Vec::new();
        for s in r.settings.iter().filter(|s| s.old != Some(s.new)) {
            if let Err(e) = files::write(s, Some(s.new)) {
                let (_, mut errors) = files::restore_all(&written);
                errors.insert(0, e.to_string());
                if errors.len() == 1 {
                    let _ = Self::end_guard(&mut g);
                }
                return Err(DriverError::Other(errors.join("; ")));
            }
            written.push(s.clone());
        }
        r.guard = Some(g.ident);
        let out = r.to_recipe()?;
        live.insert(
            r.fault_id.clone(),
            Live {
                recipe: r,
                guard: g,
            },
        );
        Ok(out)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let r = IoLimitRecipe::from_recipe(recipe)?;
        let mut live = self.live().remove(&r.fault_id);
        let (restored, errors) = files::restore_all(&r.settings);
        if !errors.is_empty() {
            // The guard stays: it restores these if the agent dies before a retry succeeds.
            if let Some(l) = live {
                self.live().insert(r.fault_id.clone(), l);
            }
            return Err(DriverError::Other(errors.join("; ")));
        }
        let mut did = restored > 0;
        let mut errors = Vec::new();
        if let Some(l) = live.as_mut() {
            match Self::end_guard(&mut l.guard) {
                Ok(was) => did |= was,
                Err(e) => errors.push(e),
            }
        }
        // Guards of an earlier life of the agent, or left by a failed apply.
        let proc = self.host.proc();
        let mut stale: Vec<Identity> = r.guard.into_iter().collect();
        if let Ok(exe) = self.host.exe() {
            stale.extend(
                scan::owned(proc, exe)
                    .into_iter()
                    .filter(|o| o.role == IO_GUARD_ARG && o.fault_id == r.fault_id)
                    .map(|o| o.stat.identity()),
            );
        }
        for id in stale {
            match os::signal(proc, id, libc::SIGKILL) {
                Ok(sent) => did |= sent,
                Err(e) => errors.push(format!("SIGKILL io-limit guard pid {}: {e}", id.pid)),
            }
        }
        if !errors.is_empty() {
            return Err(DriverError::Other(errors.join("; ")));
        }
        Ok(if did {
            RevertOutcome::Reverted
        } else {
            RevertOutcome::AlreadyGone
        })
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let r = match IoLimitRecipe::from_recipe(recipe) {
            Ok(r) => r,
            Err(e) => {
                return Health::Failed {
                    error: e.to_string(),
                    counters: Vec::new(),
                }
            }
        };
        let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
        if SystemTime::now() >= deadline {
            // Ending anyway (its guard may already have restored the limits).
            return Health::Ok(Vec::new());
        }
        let mut in_effect = 0u64;
        for s in &r.settings {
            match files::read(s) {
                Ok(Some(v)) if v == s.new => in_effect += 1,
                Ok(now) => {
                    return Health::Failed {
                        error: format!(
                            "the {} limit of {} in {} is {now:?}, not the fault's {} (changed \
                             by someone else, or its guard restored it)",
                            s.limit.v2_key(),
                            s.dev,
                            r.cgroup,
                            s.new
                        ),
                        counters: vec![("limits_in_effect".into(), in_effect)],
                    }
                }
                Err(e) => {
                    return Health::Failed {
                        error: format!("{}: {e} (the target's cgroup is gone)", s.file.display()),
                        counters: vec![("limits_in_effect".into(), in_effect)],
                    }
                }
            }
        }
        let counters = vec![("limits_in_effect".into(), in_effect)];
        if let Some(l) = self.live().get_mut(&r.fault_id) {
            if let Some(st) = l.guard.poll_exit() {
                if SystemTime::now() < deadline {
                    return Health::Failed {
                        error: format!(
                            "the io-limit guard (pid {}) exited ({st}); nothing would restore \
                             the limits if the agent died",
                            l.guard.pid()
                        ),
                        counters,
                    };
                }
            }
        }
        Health::Ok(counters)
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        self.sweep_guards(known)
    }
}
