//! Where a pause guard lives: in the cgroups of the processes it watches, never in the agent's.
//! A cgroup-wide kill of the agent (container stop, OOM group kill, systemd's final SIGKILL,
//! `cgroup.kill`) then leaves the guard alive to resume them; a kill of the target's own cgroup
//! takes the guard along with the paused processes, so nothing is left stopped either way.
//!
//! The paused processes are grouped by the cgroups they are in (one guard per group), and the
//! guard joins exactly those cgroups in every hierarchy the agent sees (v1 and v2). A process's
//! own v2 cgroup always accepts another process (it holds one already), so this works in
//! kubelet's layouts too, where the pod's cgroup is an inner node and only the container's leaf
//! may hold processes.

use std::collections::BTreeMap;

use crate::engine::driver::DriverError;
use crate::host::cgroup::{self, CgroupDir};
use crate::host::proc::Identity;
use crate::host::Host;

/// Processes that share their cgroups, and those cgroups (one per visible hierarchy).
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub cgroups: Vec<CgroupDir>,
    pub victims: Vec<Identity>,
}

impl Group {
    /// `cgroup2:/a/b, pids:/a/b`.
    pub fn describe(&self) -> String {
        self.cgroups
            .iter()
            .map(CgroupDir::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Groups the living `victims` by their cgroups; processes that are gone are left out.
/// Refuses when a victim's cgroup in a hierarchy the agent sees cannot be located (a path
/// outside the agent's cgroup namespace): its guard could not leave the agent's cgroup.
pub(super) fn groups(host: &Host, victims: &[Identity]) -> Result<Vec<Group>, DriverError> {
    let proc = host.proc();
    let hs = host.resolver.hierarchies()?;
    let mut by_key: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    for id in victims {
        let Ok(text) = proc.cgroup_text(id.pid) else {
            continue;
        };
        // The text must be that of the process we selected, not of a newcomer with its PID.
        if !proc.is_alive(*id) {
            continue;
        }
        let mut dirs = Vec::new();
        for line in cgroup::parse_proc_cgroup(&text) {
            let Some(h) = cgroup::hierarchy_of(&hs, &line) else {
                // A hierarchy that is not mounted where the agent looks: nothing to join.
                continue;
            };
            let dir = h.dir(&line.path).filter(|d| d.is_dir()).ok_or_else(|| {
                DriverError::Other(format!(
                    "pid {} is in cgroup {}:{}, which {} does not show; the pause guard could \
                     not join it and would die with the agent's cgroup",
                    id.pid,
                    h.label(),
                    line.path,
                    h.mount.display()
                ))
            })?;
            dirs.push(CgroupDir {
                hierarchy: h.clone(),
                path: line.path.clone(),
                dir,
            });
        }
        let key: Vec<String> = dirs.iter().map(|d| d.dir.display().to_string()).collect();
        by_key
            .entry(key)
            .or_insert_with(|| Group {
                cgroups: dirs,
                victims: Vec::new(),
            })
            .victims
            .push(*id);
    }
    Ok(by_key.into_values().collect())
}

/// Moves a guard (our own unreaped child, so its PID cannot have been reused) into a group's
/// cgroups.
pub(super) fn place(guard_pid: u32, group: &Group) -> Result<(), DriverError> {
    for d in &group.cgroups {
        cgroup::join(&d.dir, guard_pid).map_err(|e| {
            DriverError::Other(format!(
                "the pause guard must live outside the agent's cgroup: {e}"
            ))
        })?;
    }
    Ok(())
}
