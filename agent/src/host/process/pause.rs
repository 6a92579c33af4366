//! Pausing processes: a guard process first (it resumes them if the agent dies, at the
//! deadline, or when told "release"), then SIGSTOP; revert resumes them (identity checked)
//! and ends the guard; the sweep resumes the processes of guards no journal entry names.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ProcessDriver, ProcessRecipe};
use crate::engine::driver::{DriverError, Health, Recipe, RevertOutcome};
use crate::host::child::Running;
use crate::host::guard::{format_pids, parse_pids, READY, RELEASE};
use crate::host::proc::Identity;
use crate::host::worker::GUARD_ARG;
use crate::host::{os, scan, Host};

impl ProcessDriver {
    pub(super) fn pause(
        &self,
        mut r: ProcessRecipe,
    ) -> Result<(ProcessRecipe, Running), DriverError> {
        let proc = self.host.proc();
        let ids: Vec<Identity> = r.victims.iter().map(|v| v.id).collect();
        let args = vec![
            GUARD_ARG.to_string(),
            "--fault-id".into(),
            r.fault_id.clone(),
            "--deadline-unix-ms".into(),
            r.deadline_unix_ms.to_string(),
            "--pids".into(),
            format_pids(&ids),
        ];
        // The guard first, so that every stop below already has its resume.
        let mut guard = Running::start(&r.exe, &args, proc)
            .map_err(|e| DriverError::io(format!("start pause guard {}", r.exe.display()), e))?;
        if !guard.wait_line(READY, Duration::from_secs(5)) {
            let _ = guard.kill();
            return Err(DriverError::Other(format!(
                "the pause guard (pid {}) did not get ready within 5 s",
                guard.pid()
            )));
        }
        r.guard = Some(guard.ident);
        for id in &ids {
            match os::signal(proc, *id, libc::SIGSTOP) {
                Ok(true) => r.signalled.push(*id),
                Ok(false) => {}
                Err(e) => {
                    resume(self.host.as_ref(), &r.signalled);
                    let _ = guard.send(RELEASE);
                    guard.wait(Duration::from_secs(2));
                    let _ = guard.kill();
                    return Err(DriverError::Other(format!("SIGSTOP pid {}: {e}", id.pid)));
                }
            }
        }
        // SIGSTOP lands asynchronously; report the pause applied once it shows.
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < end
            && r.signalled
                .iter()
                .any(|id| proc.live(*id).is_some_and(|st| !st.is_stopped()))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        r.applied = true;
        Ok((r, guard))
    }

    pub(super) fn revert_pause(
        &self,
        r: &ProcessRecipe,
        guard: Option<Running>,
    ) -> Result<RevertOutcome, DriverError> {
        let proc = self.host.proc();
        let ids: Vec<Identity> = r.victims.iter().map(|v| v.id).collect();
        let mut did = resume(self.host.as_ref(), &ids) > 0;
        let mut errors = Vec::new();
        if let Some(mut g) = guard {
            let running = g.poll_exit().is_none();
            if running {
                let _ = g.send(RELEASE);
                if g.wait(Duration::from_secs(2)).is_none() {
                    if let Err(e) = g.kill() {
                        errors.push(format!("pause guard pid {}: {e}", g.pid()));
                    }
                }
            }
            did |= running;
        }
        // A guard from an earlier life of the agent, or one started before apply failed.
        let mut guards: Vec<Identity> = r.guard.into_iter().collect();
        if let Ok(exe) = self.host.exe() {
            guards.extend(
                scan::owned(proc, exe)
                    .into_iter()
                    .filter(|o| o.role == GUARD_ARG && o.fault_id == r.fault_id)
                    .map(|o| o.stat.identity()),
            );
        }
        for g in guards {
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
        let mut live = self.live();
        if let Some(g) = live.get_mut(&r.fault_id).and_then(|l| l.guard.as_mut()) {
            let deadline = UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms);
            if let Some(st) = g.poll_exit() {
                if SystemTime::now() < deadline {
                    return Health::Failed {
                        error: format!(
                            "the pause guard (pid {}) exited ({st}); nothing would resume the \
                             paused processes if the agent died",
                            g.pid()
                        ),
                        counters,
                    };
                }
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
            let resumed = resume(self.host.as_ref(), &pids);
            let id = o.stat.identity();
            match os::signal(proc, id, libc::SIGKILL) {
                Ok(_) => lines.push(format!(
                    "stopped orphan pause guard pid {} (fault {}) after resuming {resumed} process(es)",
                    id.pid, o.fault_id
                )),
                Err(e) => lines.push(format!("could not stop orphan guard pid {}: {e}", id.pid)),
            }
        }
        lines
    }
}

/// SIGCONTs each identity still alive and waits (up to a second) until none shows stopped;
/// returns how many it reached.
fn resume(host: &Host, ids: &[Identity]) -> usize {
    let proc = host.proc();
    let reached: Vec<Identity> = ids
        .iter()
        .copied()
        .filter(|id| matches!(os::signal(proc, *id, libc::SIGCONT), Ok(true)))
        .collect();
    let end = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < end
        && reached
            .iter()
            .any(|id| proc.live(*id).is_some_and(|st| st.is_stopped()))
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    reached.len()
}
