//! The agent side of the io-limit guards: starting one before the first write and moving it
//! out of the agent's cgroups, ending it after a revert, forwarding the lease to it, and
//! sweeping the guards no journal entry names (restoring the values in their argv).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::files::{self, Setting};
use super::{guard, IoLimitDriver, IoLimitRecipe};
use crate::engine::driver::{DriverError, Recipe};
use crate::host::child::Running;
use crate::host::stress::unix_ms;
use crate::host::worker::IO_GUARD_ARG;
use crate::host::{cgroup, os, scan};
use crate::lease::Renewable;

impl IoLimitDriver {
    /// Starts the guard (before anything is written) and moves it into the root cgroups.
    pub(super) fn start_guard(&self, r: &IoLimitRecipe) -> Result<Running, DriverError> {
        let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
        let settings =
            serde_json::to_string(&r.settings).map_err(|e| DriverError::Other(e.to_string()))?;
        let args = vec![
            IO_GUARD_ARG.to_string(),
            "--fault-id".into(),
            r.fault_id.clone(),
            // The fault's own end: the lease only ever shortens it (`lease` lines below and
            // at each renewal). Bounding this by the lease at start would end every io-limit
            // at the first lease's end, whatever the renewals said.
            "--deadline-unix-ms".into(),
            unix_ms(deadline).to_string(),
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
        // The lease as it stands now (a standalone run has none: the deadline alone counts).
        let placed = placed.and_then(|()| match self.lease.until() {
            Some(_) => g
                .send(&format!(
                    "{} {}",
                    guard::LEASE,
                    unix_ms(self.lease.bound(deadline))
                ))
                .map_err(|e| DriverError::io("tell the io-limit guard the lease".to_string(), e)),
            None => Ok(()),
        });
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

    pub(super) fn end_guard(g: &mut Running) -> Result<bool, String> {
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

    pub(super) fn sweep_guards(&self, known: &[Recipe]) -> Vec<String> {
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
