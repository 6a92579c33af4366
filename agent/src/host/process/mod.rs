//! The process driver: `kill` sends a signal to the selected processes (pid, name pattern or
//! container; oldest first when counted), `pause` stops them with SIGSTOP under the watch of
//! guard processes that live in the paused processes' cgroups and resume them if the agent dies.
//! Protected processes are never touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

mod pause;
mod placement;

pub use pause::{resume, still_stopped, Resumed};

use faultline_core::fault::{Fault, FaultKind, FaultSpec, ProcessAction, ProcessSelector};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::child::Running;
use super::proc::{Identity, Stat};
use super::protect::{matches_process, Checker};
use super::stress::unix_ms;
use super::worker::{GUARD_ARG, WORKER_ARG};
use super::{os, Host};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};

const KINDS: &[FaultKind] = &[FaultKind::Process];
const KIND: &str = "process";

/// A selected process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    pub id: Identity,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecipe {
    pub fault_id: String,
    /// `kill` or `pause`.
    pub action: String,
    pub signal: Option<i32>,
    pub deadline_unix_ms: u64,
    pub exe: std::path::PathBuf,
    pub victims: Vec<Victim>,
    /// Protected processes the selector matched and that were left alone, with the reason.
    pub skipped: Vec<String>,
    /// Kill: the processes the signal reached. Pause: those stopped.
    #[serde(default)]
    pub signalled: Vec<Identity>,
    /// Pause: the guard processes, one per cgroup the paused processes are in.
    #[serde(default)]
    pub guards: Vec<Identity>,
    /// The single guard of recipes journaled by earlier agents; read for their revert only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Identity>,
    #[serde(default)]
    pub applied: bool,
}

impl ProcessRecipe {
    fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: KIND.into(),
            data: serde_json::to_value(self).map_err(|e| DriverError::Other(e.to_string()))?,
        })
    }

    fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable process recipe: {e}")))
    }
}

struct Live {
    recipe: ProcessRecipe,
    guards: Vec<LiveGuard>,
}

/// A running pause guard and the processes it resumes.
struct LiveGuard {
    running: Running,
    pids: Vec<Identity>,
}

pub struct ProcessDriver {
    host: Arc<Host>,
    live: Mutex<HashMap<String, Live>>,
}

impl ProcessDriver {
    pub fn new(host: Arc<Host>) -> Self {
        ProcessDriver {
            host,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a process is one of our own workers or guards (never selected by pattern or by
    /// container, even when a stress fault placed it in the container's cgroups).
    fn is_ours(&self, argv: &[String]) -> bool {
        let ours = self
            .host
            .exe()
            .is_ok_and(|e| argv.first().is_some_and(|a| *a == e.to_string_lossy()));
        ours && matches!(
            argv.get(1).map(String::as_str),
            Some(WORKER_ARG | GUARD_ARG)
        )
    }

    /// The processes a selector picks, oldest first, and the protected ones it skipped.
    pub fn select(
        &self,
        sel: &ProcessSelector,
        count: u32,
    ) -> Result<(Vec<Victim>, Vec<String>), DriverError> {
        let r = &self.host.resolver;
        let proc = &r.proc;
        let checker = Checker::new(r);
        let mut found: Vec<Stat> = Vec::new();
        let mut skipped = Vec::new();
        match sel {
            ProcessSelector::Pid(pid) => {
                let st = proc.stat(*pid).map_err(|_| {
                    DriverError::Refused(format!("selector.pid: pid {pid} does not exist"))
                })?;
                if let Some(why) = checker.why(*pid, Some(&st)) {
                    return Err(DriverError::Refused(why));
                }
                found.push(st);
            }
            ProcessSelector::Name(pattern) => {
                let re = Regex::new(pattern).map_err(|e| {
                    DriverError::Refused(format!("selector.name: {pattern:?} is not a regex: {e}"))
                })?;
                for pid in proc.pids().map_err(|e| DriverError::Other(e.to_string()))? {
                    let (Ok(st), Ok(argv)) = (proc.stat(pid), proc.cmdline(pid)) else {
                        continue;
                    };
                    // Kernel threads have no command line; they are not ours to signal.
                    if argv.is_empty() || st.state == 'Z' || self.is_ours(&argv) {
                        continue;
                    }
                    // The same two strings the protected names are matched against.
                    if !matches_process(&re, &st.comm, &argv) {
                        continue;
                    }
                    match checker.why(pid, Some(&st)) {
                        Some(why) => skipped.push(why),
                        None => found.push(st),
                    }
                }
            }
            ProcessSelector::Container(c) => {
                if let Some(why) = checker.why_namespace(&c.pod_namespace) {
                    return Err(DriverError::Refused(format!(
                        "selector: {}: {why}",
                        describe(sel)
                    )));
                }
                for (st, _) in r.container_members(c) {
                    // A stress worker of ours placed in the container is not the container's.
                    if proc.cmdline(st.pid).is_ok_and(|argv| self.is_ours(&argv)) {
                        continue;
                    }
                    match checker.why(st.pid, Some(&st)) {
                        Some(why) => skipped.push(why),
                        None => found.push(st),
                    }
                }
            }
        }
        found.sort_by_key(|s| (s.start, s.pid));
        if count > 0 {
            found.truncate(count as usize);
        }
        if found.is_empty() {
            let mut msg = format!("selector: no targetable process matches {}", describe(sel));
            if !skipped.is_empty() {
                msg.push_str(&format!(" (left alone: {})", skipped.join("; ")));
            }
            return Err(DriverError::Refused(msg));
        }
        let victims = found
            .into_iter()
            .map(|s| Victim {
                id: s.identity(),
                comm: s.comm,
            })
            .collect();
        Ok((victims, skipped))
    }

    fn kill(&self, mut r: ProcessRecipe) -> Result<ProcessRecipe, DriverError> {
        let signo = r.signal.unwrap_or(libc::SIGTERM);
        let proc = self.host.proc();
        let mut errors = Vec::new();
        for v in &r.victims {
            match os::signal(proc, v.id, signo) {
                Ok(true) => r.signalled.push(v.id),
                Ok(false) => {}
                Err(e) => errors.push(format!("signal {signo} to pid {}: {e}", v.id.pid)),
            }
        }
        if r.signalled.is_empty() && !errors.is_empty() {
            return Err(DriverError::Other(errors.join("; ")));
        }
        r.applied = true;
        Ok(r)
    }
}

fn describe(sel: &ProcessSelector) -> String {
    match sel {
        ProcessSelector::Pid(p) => format!("pid {p}"),
        ProcessSelector::Name(n) => format!("name pattern {n:?}"),
        ProcessSelector::Container(c) if !c.container_id.is_empty() => {
            format!("container {}", c.container_id)
        }
        ProcessSelector::Container(c) => format!("pod {}", c.pod_uid),
    }
}

impl Driver for ProcessDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        KINDS
    }

    fn available(&self) -> Result<(), String> {
        self.host.available()
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let Fault::Process(p) = &spec.fault else {
            return Err(DriverError::Other(format!(
                "the process driver does not handle {} faults",
                spec.kind()
            )));
        };
        let exe = self.host.exe()?.to_path_buf();
        let (victims, skipped) = self.select(&p.selector, p.count)?;
        let (action, signal) = match p.action {
            ProcessAction::Kill { signal } => ("kill", Some(signal)),
            ProcessAction::Pause => ("pause", None),
        };
        ProcessRecipe {
            fault_id: ctx.fault_id.clone(),
            action: action.into(),
            signal,
            deadline_unix_ms: unix_ms(ctx.deadline),
            exe,
            victims,
            skipped,
            signalled: Vec::new(),
            guards: Vec::new(),
            guard: None,
            applied: false,
        }
        .to_recipe()
    }

    fn apply(
        &self,
        _ctx: &FaultCtx,
        _spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let r = ProcessRecipe::from_recipe(recipe)?;
        let mut live = self.live();
        if let Some(l) = live.get(&r.fault_id) {
            return l.recipe.to_recipe();
        }
        if r.applied {
            return Ok(recipe.clone());
        }
        let id = r.fault_id.clone();
        let (r, guards) = if r.action == "pause" {
            self.pause(r)?
        } else {
            (self.kill(r)?, Vec::new())
        };
        let out = r.to_recipe()?;
        live.insert(id, Live { recipe: r, guards });
        Ok(out)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let r = ProcessRecipe::from_recipe(recipe)?;
        let live = self.live().remove(&r.fault_id);
        if r.action != "pause" {
            // A signal cannot be taken back.
            return Ok(RevertOutcome::AlreadyGone);
        }
        self.revert_pause(&r, live.map(|l| l.guards).unwrap_or_default())
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let r = match ProcessRecipe::from_recipe(recipe) {
            Ok(r) => r,
            Err(e) => {
                return Health::Failed {
                    error: e.to_string(),
                    counters: Vec::new(),
                }
            }
        };
        if r.action != "pause" {
            return Health::Ok(vec![
                ("signalled".into(), r.signalled.len() as u64),
                ("skipped_protected".into(), r.skipped.len() as u64),
            ]);
        }
        self.health_pause(&r)
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        self.sweep_guards(known)
    }
}
