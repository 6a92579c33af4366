//! Pausing processes: guard processes first (one per cgroup the paused processes are in, moved
//! into that cgroup so that a cgroup-wide kill of the agent leaves it alive; see
//! [`placement`](super::placement)); each resumes its processes if the agent dies, at the
//! deadline, or when told "release". Then SIGSTOP. Revert resumes the processes (identity
//! checked), checks that each left the stopped state, and only then ends the guards; the sweep
//! resumes the processes of guards no journal entry names.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::placement::{self, Group};
use super::{LiveGuard, ProcessDriver, ProcessRecipe};
use crate::engine::driver::{DriverError, Health, Recipe, RevertOutcome};
use crate::host::child::Running;
use crate::host::guard::{format_pids, parse_pids, READY, RELEASE};
use crate::host::proc::{Identity, ProcTable};
use crate::host::worker::GUARD_ARG;
use crate::host::{os, scan};

/// How long a revert waits for SIGCONT to show in `/proc/<pid>/stat`.
const RESUME_WAIT: Duration = Duration::from_secs(1);

impl ProcessDriver {
    pub(super) fn pause(
        &self,
        mut r: ProcessRecipe,
    ) -> Result<(ProcessRecipe, Vec<LiveGuard>), DriverError> {
        let proc = self.host.proc();
        let ids: Vec<Identity> = r.victims.iter().map(|v| v.id).collect();
        // The guards first, each in its processes' cgroups, so that every stop below already
        // has its resume.
        let mut guards: Vec<LiveGuard> = Vec::new();
        for group in placement::groups(self.host.as_ref(), &ids)? {
            match self.start_guard(&r, &group) {
                Ok(g) => {
                    r.guards.push(g.running.ident);
                    guards.push(g);
                }
                Err(e) => {
                    end_guards(&mut guards);
                    return Err(e);
                }
            }
        }
        let order: Vec<Identity> = guards.iter().flat_map(|g| g.pids.clone()).collect();
        for id in order {
            match os::signal(proc, id, libc::SIGSTOP) {
                Ok(true) => r.signalled.push(id),
                Ok(false) => {}
                Err(e) => {
                    let _ = resume(proc, &r.signalled);
                    end_guards(&mut guards);
                    return Err(DriverError::Other(format!("SIGSTOP pid {}: {e}", id.pid)));
                }
            }
        }
        // SIGSTOP lands asynchronously; report the pause applied once it shows.
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end
            && r.signalled
                .iter()
                .any(|id| proc.live(*id).is_some_and(|st| !st.is_stopped()))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        r.applied = true;
        Ok((r, guards))
    }

    /// Starts the guard of one group and moves it into the group's cgroups.
    fn start_guard(&self, r: &ProcessRecipe, group: &Group) -> Result<LiveGuard, DriverError> {
        let args = vec![
            GUARD_ARG.to_string(),
            "--fault-id".into(),
            r.fault_id.clone(),
            "--deadline-unix-ms".into(),
            r.deadline_unix_ms.to_string(),
            "--pids".into(),
            format_pids(&group.victims),
        ];
        let running = Running::start(&r.exe, &args, self.host.proc())
            .map_err(|e| DriverError::io(format!("start pause guard {}", r.exe.display()), e))?;
        let mut g = LiveGuard {
            running,
            pids: group.victims.clone(),
        };
        // The guard starts its only other thread before it says ready: once moved, it never
        // creates a task, so a pids limit of the target's cgroup cannot get in its way.
        let placed = if g.running.wait_line(READY, Duration::from_secs(5)) {
            placement::place(g.running.pid(), group)
        } else {
            Err(DriverError::Other(format!(
                "the pause guard (pid {}) did not get ready within 5 s",
                g.running.pid()
            )))
        };
        if let Err(e) = placed {
            let _ = g.running.kill();
            return Err(e);
        }
        tracing::debug!(
            fault_id = %r.fault_id,
            guard = g.running.pid(),
            cgroups = %group.describe(),
            "pause guard placed in the paused processes' cgroups"
        );
        Ok(g)
    }

    pub(super) fn revert_pause(
        &self,
        r: &ProcessRecipe,
        mut guards: Vec<LiveGuard>,
    ) -> Result<RevertOutcome, DriverError> {
        let proc = self.host.proc();
        let ids: Vec<Identity> = r.victims.iter().map(|v| v.id).collect();
        let resumed = resume(proc, &ids);
        if !resumed.failures.is_empty() {
            // The guards stay: they are what resumes these processes if the agent dies before
            // a retry succeeds.
            if !guards.is_empty() {
                self.keep_guards(r, guards);
            }
            return Err(DriverError::Other(resumed.failures.join("; ")));
        }
        let mut did = resumed.reached > 0;
        let mut errors = Vec::new();
        for g in &mut guards {
            let running = g.running.poll_exit().is_none();
            if running {
                let _ = g.running.send(RELEASE);
                if g.running.wait(Duration::from_secs(2)).is_none() {
                    if let Err(e) = g.running.kill() {
                        errors.push(format!("pause guard pid {}: {e}", g.running.pid()));
                    }
                }
            }
            did |= running;
        }
        // Guards from an earlier life of the agent, or started before apply failed.
        let mut stale: Vec<Identity> = r.guards.iter().copied().chain(r.guard).collect();
        if let Ok(exe) = self.host.exe() {
            stale.extend(
                scan::owned(proc, exe)
                    .into_iter()
                    .filter(|o| o.role == GUARD_ARG && o.fault_id == r.fault_id)
                    .map(|o| o.stat.identity()),
            );
        }
        for g in stale {
            match os::signal(proc, g, libc::SIGKILL) {
                Ok(sent) => did |= sent,
                Err(e) => errors.push(format!("SIGKILL pause guard pid {}: {e}", g.pid)),
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

    fn keep_guards(&self, r: &ProcessRecipe, guards: Vec<LiveGuard>) {
        let mut live = self.live();
        let entry = live
            .entry(r.fault_id.clone())
            .or_insert_with(|| super::Live {
                recipe: r.clone(),
                guards: Vec::new(),
            });
        entry.guards.extend(guards);
    }

    pub(super) fn health_pause(&self, r: &ProcessRecipe) -> Health {
        let proc = self.host.proc();
        let (mut stopped, mut exited) = (0u64, 0u64);
        for id in &r.signalled {
            match proc.live(*id) {
                None => exited += 1,
                Some(st) if st.is_stopped() => stopped += 1,
                Some(st) => {
                    return Health::Failed {
                        error: format!(
                            "pid {} ({}) is running again (state {}) although it should be paused",
                            id.pid, st.comm, st.state
                        ),
                        counters: vec![("stopped".into(), stopped), ("exited".into(), exited)],
                    }
                }
            }
        }
        let counters = vec![("stopped".into(), stopped), ("exited".into(), exited)];
        let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
        let mut live = self.live();
        let guards = live
            .get_mut(&r.fault_id)
            .map(|l| l.guards.iter_mut())
            .into_iter()
            .flatten();
        for g in guards {
            let Some(st) = g.running.poll_exit() else {
                continue;
            };
            // A kill of the target's cgroup ends its guard too; that is harmless once every
            // process the guard watched is gone as well.
            let orphaned: Vec<u32> = g
                .pids
                .iter()
                .filter(|id| proc.is_alive(**id))
                .map(|id| id.pid)
                .collect();
            if SystemTime::now() < deadline && !orphaned.is_empty() {
                return Health::Failed {
                    error: format!(
                        "the pause guard (pid {}) exited ({st}); nothing would resume pid(s) \
                         {orphaned:?} if the agent died",
                        g.running.pid()
                    ),
                    counters,
                };
            }
        }
        Health::Ok(counters)
    }

    pub(super) fn sweep_guards(&self, known: &[Recipe]) -> Vec<String> {
        let mut ids: HashSet<String> = known
            .iter()
            .filter_map(|r| ProcessRecipe::from_recipe(r).ok())
            .map(|r| r.fault_id)
            .collect();
        ids.extend(self.live().keys().cloned());
        let Ok(exe) = self.host.exe() else {
            return Vec::new();
        };
        let proc = self.host.proc();
        let mut lines = Vec::new();
        for o in scan::owned(proc, exe) {
            if o.role != GUARD_ARG
                || ids.contains(&o.fault_id)
                || o.held_by_another_agent(proc, exe)
            {
                continue;
            }
            let pids = o
                .arg("pids")
                .and_then(|p| parse_pids(p).ok())
                .unwrap_or_default();
            let resumed = resume(proc, &pids);
            let mut what = format!("after resuming {} process(es)", resumed.reached);
            if !resumed.failures.is_empty() {
                what.push_str(&format!(" ({})", resumed.failures.join("; ")));
            }
            let id = o.stat.identity();
            match os::signal(proc, id, libc::SIGKILL) {
                Ok(_) => lines.push(format!(
                    "stopped orphan pause guard pid {} (fault {}) {what}",
                    id.pid, o.fault_id
                )),
                Err(e) => lines.push(format!("could not stop orphan guard pid {}: {e}", id.pid)),
            }
        }
        lines
    }
}

/// Releases and reaps guards started by an apply that then failed (they resume whatever was
/// stopped on their way out).
fn end_guards(guards: &mut [LiveGuard]) {
    for g in guards {
        let _ = g.running.send(RELEASE);
        g.running.wait(Duration::from_secs(2));
        let _ = g.running.kill();
    }
}

/// What [`resume`] achieved.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Processes the SIGCONT reached.
    pub reached: usize,
    /// One line per process that is still stopped (or could not be signalled), naming it.
    pub failures: Vec<String>,
}

/// SIGCONTs each identity still alive, then waits (up to a second) until none of them is
/// stopped any more. A process that has exited counts as resumed; one still in state `T`
/// (stopped) or `t` (stopped by a tracer, which SIGCONT does not resume) is a failure.
pub fn resume(proc: &ProcTable, ids: &[Identity]) -> Resumed {
    let mut out = Resumed::default();
    for id in ids {
        match os::signal(proc, *id, libc::SIGCONT) {
            Ok(true) => out.reached += 1,
            Ok(false) => {}
            Err(e) => out.failures.push(format!("SIGCONT pid {}: {e}", id.pid)),
        }
    }
    out.failures.extend(still_stopped(proc, ids, RESUME_WAIT));
    out
}

/// The processes of `ids` that are still stopped after up to `limit`, each as a line naming
/// it and its state (read from `/proc/<pid>/stat`); gone processes are not listed.
pub fn still_stopped(proc: &ProcTable, ids: &[Identity], limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    loop {
        let stopped: Vec<String> = ids
            .iter()
            .filter_map(|id| proc.live(*id).filter(|st| st.is_stopped()))
            .map(|st| {
                format!(
                    "pid {} ({}) is still stopped (state {}) after SIGCONT",
                    st.pid, st.comm, st.state
                )
            })
            .collect();
        if stopped.is_empty() || Instant::now() >= end {
            return stopped;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_process_is_named_until_it_runs_and_a_gone_one_counts_as_resumed() {
        let table = ProcTable::new("/proc");
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").stdin(std::process::Stdio::null());
        let mut child = os::spawn(cmd).expect("spawn sleep");
        let id = table.identity(child.id()).expect("identity");
        assert!(still_stopped(&table, &[id], Duration::ZERO).is_empty());
        // SIGSTOP through the same funnel; the state shows T once it lands.
        assert!(os::signal(&table, id, libc::SIGSTOP).expect("SIGSTOP"));
        let left = still_stopped(&table, &[id], Duration::ZERO);
        let end = Instant::now() + Duration::from_secs(2);
        let mut left = left;
        while left.is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
            left = still_stopped(&table, &[id], Duration::ZERO);
        }
        assert_eq!(left.len(), 1, "a stopped sleep is named");
        assert!(
            left[0].contains(&format!(
                "pid {} (sleep) is still stopped (state T)",
                id.pid
            )),
            "{left:?}"
        );
        let r = resume(&table, &[id]);
        assert_eq!((r.reached, r.failures.len()), (1, 0), "{:?}", r.failures);
        assert!(os::signal(&table, id, libc::SIGKILL).expect("SIGKILL"));
        os::wait_child(&mut child, Duration::from_secs(5)).expect("exit");
        let r = resume(&table, &[id]);
        assert_eq!((r.reached, r.failures.len()), (0, 0), "gone = resumed");
    }
}
