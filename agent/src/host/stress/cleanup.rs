//! Undoing a stress fault and sweeping orphans: workers (by identity, and by the fault id in
//! their argv), io files (in the target's filesystem, see [`io`](super::io)) and leaf cgroups,
//! all found by their deterministic names.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::{StressDriver, StressRecipe};
use crate::engine::driver::{DriverError, Recipe, RevertOutcome};
use crate::host::proc::Identity;
use crate::host::worker::WORKER_ARG;
use crate::host::{os, scan};

impl StressDriver {
    pub(super) fn revert_recipe(&self, r: &StressRecipe) -> Result<RevertOutcome, DriverError> {
        let proc = self.host.proc();
        let mut did = false;
        let mut errors = Vec::new();
        if let Some(mut l) = self.live().remove(&r.fault_id) {
            for w in &mut l.workers {
                match w.kill() {
                    Ok(was) => did |= was,
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        // Workers of an earlier life of the agent, or started before apply failed.
        let mut ids: Vec<Identity> = r.pids.clone();
        if let Ok(exe) = self.host.exe() {
            ids.extend(
                scan::owned(proc, exe)
                    .into_iter()
                    .filter(|o| o.role == WORKER_ARG && o.fault_id == r.fault_id)
                    .map(|o| o.stat.identity()),
            );
        }
        ids.sort();
        ids.dedup();
        for id in &ids {
            match os::signal(proc, *id, libc::SIGKILL) {
                Ok(sent) => did |= sent,
                Err(e) => errors.push(format!("SIGKILL pid {}: {e}", id.pid)),
            }
        }
        for id in os::wait_gone(proc, &ids, Duration::from_secs(5)) {
            errors.push(format!(
                "worker pid {} is still alive after SIGKILL",
                id.pid
            ));
        }
        let (removed, errs) = self.remove_io_files(r);
        did |= removed;
        errors.extend(errs);
        for d in &r.cgroups {
            let leaf = d.dir.join(r.leaf_name());
            match remove_cgroup(&leaf) {
                Ok(removed) => did |= removed,
                Err(e) => errors.push(e),
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

    pub(super) fn sweep_orphans(&self, known: &[Recipe]) -> Vec<String> {
        let mut ids: HashSet<String> = known
            .iter()
            .filter_map(|r| StressRecipe::from_recipe(r).ok())
            .map(|r| r.fault_id)
            .collect();
        ids.extend(self.live().keys().cloned());
        let proc = self.host.proc();
        let mut lines = Vec::new();
        if let Ok(exe) = self.host.exe() {
            for o in scan::owned(proc, exe) {
                if o.role != WORKER_ARG || ids.contains(&o.fault_id) {
                    continue;
                }
                if o.held_by_another_agent(proc, exe) {
                    // Another live agent's worker: its io files are not orphans either.
                    ids.insert(o.fault_id.clone());
                    continue;
                }
                let id = o.stat.identity();
                match os::signal(proc, id, libc::SIGKILL) {
                    Ok(true) => {
                        os::wait_gone(proc, &[id], Duration::from_secs(2));
                        lines.push(format!(
                            "killed orphan {} worker pid {} (fault {})",
                            o.kind(),
                            id.pid,
                            o.fault_id
                        ));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        lines.push(format!("could not kill orphan worker pid {}: {e}", id.pid))
                    }
                }
            }
        }
        lines.extend(self.sweep_io_files(&ids));
        for h in self.host.resolver.hierarchies().unwrap_or_default() {
            for (dir, id) in scan::cgroups_below(&h.mount, 8) {
                if ids.contains(&id) {
                    continue;
                }
                match remove_cgroup(&dir) {
                    Ok(true) => lines.push(format!(
                        "removed orphan cgroup {} (fault {id})",
                        dir.display()
                    )),
                    Ok(false) => {}
                    Err(e) => lines.push(e),
                }
            }
        }
        lines
    }
}

/// Removes a leaf cgroup once its processes are gone (retrying for up to a second); `Ok(false)`
/// when it did not exist.
fn remove_cgroup(dir: &Path) -> Result<bool, String> {
    let end = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) if std::time::Instant::now() >= end => {
                return Err(format!("remove cgroup {}: {e}", dir.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
