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

pub mod device;
pub mod files;
pub mod guard;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::fault::{Fault, FaultKind, FaultSpec, IoLimitFault, Target};
use serde::{Deserialize, Serialize};

use self::files::{Limit, Setting};
use super::cgroup::{self, CgroupDir, Version};
use super::child::Running;
use super::proc::Identity;
use super::stress::unix_ms;
use super::worker::IO_GUARD_ARG;
use super::{os, scan, Host};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::lease::{KernelLease, Renewable};

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

/// The target's cgroup whose io controller can throttle: v2 with `io.max`, else v1 blkio.
fn pick(description: &str, cgroups: &[CgroupDir]) -> Result<(CgroupDir, Version), DriverError> {
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
fn throttled_dirs(top: &CgroupDir, version: Version) -> Vec<PathBuf> {
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
    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings of a fault in one cgroup directory: the values in effect now and what the
    /// fault sets.
    fn settings(
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

    /// Starts the guard (before anything is written) and moves it into the root cgroups.
    fn start_guard(&self, r: &IoLimitRecipe) -> Result<Running, DriverError> {
        let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
        let settings =
            serde_json::to_string(&r.settings).map_err(|e| DriverError::Other(e.to_string()))?;
        let args = vec![
            IO_GUARD_ARG.to_string(),
            "--fault-id".into(),
            r.fault_id.clone(),
            "--deadline-unix-ms".into(),
            unix_ms(self.lease.bound(deadline)).to_string(),
            "--settings".into(),
            settings,
        ];
        let mut g = Running::start(&r.exe, &args, self.host.proc())
            .map_err(|e| DriverError::io(format!("start io-limit guard {}", r.exe.display()), e))?;
        let placed = if g.wait_line(guard::READY, Duration::from_secs(5)) {
            self.place(g.pid())
        } else {
            Err(DriverError::Other(format!(
                "the io-limit guard (pid {}) did not get ready within 5 s",
                g.pid()
            )))
        };
        if let Err(e) = placed {
            let _ = g.kill();
            return Err(e);
        }
        Ok(g)
    }

    /// The root cgroup of every hierarchy: out of the agent's, so a kill of the agent's whole
    /// cgroup does not take the guard along.
    fn place(&self, pid: u32) -> Result<(), DriverError> {
        for h in self.host.resolver.hierarchies()? {
            cgroup::join(&h.mount, pid).map_err(|e| {
                DriverError::Other(format!(
                    "the io-limit guard must leave the agent's cgroup: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn end_guard(g: &mut Running) -> Result<bool, String> {
        if g.poll_exit().is_some() {
            return Ok(false);
        }
        let _ = g.send(guard::RELEASE);
        if g.wait(Duration::from_secs(2)).is_none() {
            g.kill()
                .map_err(|e| format!("io-limit guard pid {}: {e}", g.pid()))?;
        }
        Ok(true)
    }
}

impl Driver for IoLimitDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        KINDS
    }

    fn available(&self) -> Result<(), String> {
        self.host.available()?;
        let hs = self.host.resolver.hierarchies().map_err(|e| e.to_string())?;
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
        let (dev, shown) =
            device::resolve(&l.device, &self.sys_block).map_err(DriverError::Refused)?;
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
        let mut ids: HashSet<String> = known
            .iter()
            .filter_map(|r| IoLimitRecipe::from_recipe(r).ok())
            .map(|r| r.fault_id)
            .collect();
        ids.extend(self.live().keys().cloned());
        let Ok(exe) = self.host.exe() else {
            return Vec::new();
        };
        let proc = self.host.proc();
        let mut lines = Vec::new();
        for o in scan::owned(proc, exe) {
            if o.role != IO_GUARD_ARG
                || ids.contains(&o.fault_id)
                || o.held_by_another_agent(proc, exe)
            {
                continue;
            }
            let settings: Vec<Setting> = o
                .arg("settings")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let (n, errors) = files::restore_all(&settings);
            let _ = os::signal(proc, o.stat.identity(), libc::SIGKILL);
            lines.push(format!(
                "stopped orphan io-limit guard pid {} (fault {}) after restoring {n} limit(s){}",
                o.stat.pid,
                o.fault_id,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join("; "))
                }
            ));
        }
        lines
    }
}

impl Renewable for IoLimitDriver {
    /// Forwards the lease to every guard: each restores its limits when it runs out.
    fn renew(&self, until: SystemTime) {
        for l in self.live().values_mut() {
            let deadline = UNIX_EPOCH + Duration::from_millis(l.recipe.deadline_unix_ms);
            let line = format!("{} {}", guard::LEASE, unix_ms(until.min(deadline)));
            let _ = l.guard.send(&line);
        }
    }
}
