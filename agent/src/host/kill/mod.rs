//! The container-kill driver: SIGKILL to the init process of each named container of a pod
//! (found as in [`select`]), once, or every `interval` until the fault's end; the container
//! runtime restarts the containers as the pod's `restartPolicy` says.
//!
//! A kill cannot be taken back, so there is nothing to revert and nothing to sweep. The
//! repeated killing is a thread of the agent process: it ends when the fault is reverted (its
//! deadline, a lease lapse, an abort, SIGTERM), at the fault's deadline by itself, and with the
//! agent when the agent dies. After a restart the journal's recipe reverts as `AlreadyGone`:
//! nothing outside the agent keeps killing.

mod links;
mod select;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use faultline_core::fault::{Fault, FaultKind, FaultSpec};
use serde::{Deserialize, Serialize};

pub use links::{parse_link, read_links, ContainerLink, DEFAULT_CONTAINER_LOGS_DIR};
pub use select::{PodIds, Selection, Victim};

use super::stress::unix_ms;
use super::{os, Host};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};

const KINDS: &[FaultKind] = &[FaultKind::ContainerKill];
const KIND: &str = "container-kill";
/// How long a kill watches for the init process to be gone (its latency is measured up to it).
const GONE_WAIT: Duration = Duration::from_secs(2);
/// Kills kept in the recipe's and health's history.
const MAX_KILLS_KEPT: usize = 64;

/// One SIGKILL sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    pub container: String,
    pub container_id: String,
    pub pid: u32,
    pub at_unix_ms: u64,
    /// From the signal until the process was gone (or a zombie); `None`: still there after 2 s.
    pub gone_after_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRecipe {
    pub fault_id: String,
    pub selection: Selection,
    /// 0: once.
    pub interval_ms: u64,
    pub deadline_unix_ms: u64,
    /// The first round's victims, chosen when planned.
    pub planned: Vec<Victim>,
    /// What the first round killed.
    #[serde(default)]
    pub killed: Vec<Killed>,
    #[serde(default)]
    pub applied: bool,
}

impl KillRecipe {
    fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: KIND.into(),
            data: serde_json::to_value(self).map_err(|e| DriverError::Other(e.to_string()))?,
        })
    }

    fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable container-kill recipe: {e}")))
    }
}

/// What the kills of one fault did so far.
#[derive(Debug, Clone, Default)]
struct Stats {
    rounds: u64,
    kills: u64,
    /// Rounds in which a named container was not running (the runtime was restarting it).
    not_running: u64,
    errors: u64,
    last: Vec<Killed>,
}

impl Stats {
    fn add(&mut self, killed: &[Killed]) {
        self.rounds += 1;
        self.kills += killed.len() as u64;
        self.last.extend(killed.iter().cloned());
        let over = self.last.len().saturating_sub(MAX_KILLS_KEPT);
        self.last.drain(..over);
    }
}

struct Live {
    /// Dropping it stops the killer thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<Stats>>,
}

fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ContainerKillDriver {
    host: Arc<Host>,
    links_dir: PathBuf,
    live: Mutex<HashMap<String, Live>>,
}

impl ContainerKillDriver {
    /// `links_dir`: the kubelet's container log links (`/var/log/containers`).
    pub fn new(host: Arc<Host>, links_dir: PathBuf) -> Self {
        ContainerKillDriver {
            host,
            links_dir,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// SIGKILLs every victim at once, then watches each go; returns what was killed.
fn kill(host: &Host, victims: &[Victim]) -> Result<Vec<Killed>, DriverError> {
    let proc = host.proc();
    let mut sent: Vec<(&Victim, Instant, u64)> = Vec::new();
    let mut errors = Vec::new();
    for v in victims {
        let at = unix_ms(SystemTime::now());
        match os::signal(proc, v.init, libc::SIGKILL) {
            Ok(true) => sent.push((v, Instant::now(), at)),
            Ok(false) => {}
            Err(e) => errors.push(format!(
                "SIGKILL to pid {} (container {}): {e}",
                v.init.pid, v.container
            )),
        }
    }
    if sent.is_empty() && !errors.is_empty() {
        return Err(DriverError::Other(errors.join("; ")));
    }
    let mut gone: Vec<Option<Duration>> = vec![None; sent.len()];
    let end = Instant::now() + GONE_WAIT;
    while gone.iter().any(Option::is_none) && Instant::now() < end {
        for (i, (v, t0, _)) in sent.iter().enumerate() {
            if gone[i].is_none() && !proc.is_alive(v.init) {
                gone[i] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let killed: Vec<Killed> = sent
        .iter()
        .zip(gone)
        .map(|((v, _, at), gone)| Killed {
            container: v.container.clone(),
            container_id: v.container_id.clone(),
            pid: v.init.pid,
            at_unix_ms: *at,
            gone_after_us: gone.map(|d| d.as_micros() as u64),
        })
        .collect();
    for k in &killed {
        crate::metrics::container_killed(&k.container, &k.container_id, k.pid, k.gone_after_us);
    }
    Ok(killed)
}

/// The killer thread: a round every `interval` until stopped or past `deadline`.
fn killer(
    host: Arc<Host>,
    links_dir: PathBuf,
    recipe: KillRecipe,
    stats: Arc<Mutex<Stats>>,
    stop: mpsc::Receiver<()>,
) {
    let interval = Duration::from_millis(recipe.interval_ms);
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(recipe.deadline_unix_ms);
    loop {
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left.is_zero() {
            return;
        }
        match stop.recv_timeout(interval.min(left)) {
            Err(RecvTimeoutError::Timeout) if interval <= left => {}
            // Stopped, the driver is gone, or the deadline comes before the next round.
            _ => return,
        }
        let mut not_running = false;
        let result = select::round(&host, &links_dir, &recipe.selection).and_then(|r| {
            if !r.not_running.is_empty() {
                not_running = true;
                tracing::info!(fault = %recipe.fault_id, "container-kill: {}", r.not_running.join("; "));
            }
            kill(&host, &r.victims)
        });
        let mut s = lock(&stats);
        if not_running {
            s.not_running += 1;
        }
        match result {
            Ok(killed) => s.add(&killed),
            Err(e) => {
                s.errors += 1;
                tracing::warn!(fault = %recipe.fault_id, "container-kill round failed: {e}");
            }
        }
    }
}

impl Driver for ContainerKillDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        KINDS
    }

    fn available(&self) -> Result<(), String> {
        self.host.available()
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let Fault::ContainerKill(k) = &spec.fault else {
            return Err(DriverError::Other(format!(
                "the container-kill driver does not handle {} faults",
                spec.kind()
            )));
        };
        let selection = select::selection(&self.host, &self.links_dir, &spec.target, k)?;
        let round = select::round(&self.host, &self.links_dir, &selection)?;
        if !round.not_running.is_empty() {
            return Err(DriverError::Refused(round.not_running.join("; ")));
        }
        KillRecipe {
            fault_id: ctx.fault_id.clone(),
            selection,
            interval_ms: k.interval.map_or(0, |i| i.as_millis() as u64),
            deadline_unix_ms: unix_ms(ctx.deadline),
            planned: round.victims,
            killed: Vec::new(),
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
        let mut r = KillRecipe::from_recipe(recipe)?;
        let mut live = self.live();
        if live.contains_key(&r.fault_id) || r.applied {
            // Applying twice is one fault: no second round of kills.
            return Ok(recipe.clone());
        }
        r.killed = kill(&self.host, &r.planned)?;
        r.applied = true;
        let stats = Arc::new(Mutex::new(Stats::default()));
        lock(&stats).add(&r.killed);
        let (stop, thread) = if r.interval_ms > 0 {
            let (tx, rx) = mpsc::channel();
            let (host, dir, rec, st) = (
                self.host.clone(),
                self.links_dir.clone(),
                r.clone(),
                stats.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!(
                    "kill-{}",
                    r.fault_id.chars().take(10).collect::<String>()
                ))
                .spawn(move || killer(host, dir, rec, st, rx))
                .map_err(|e| DriverError::io("starting the container-kill thread", e))?;
            (Some(tx), Some(thread))
        } else {
            (None, None)
        };
        live.insert(
            r.fault_id.clone(),
            Live {
                stop,
                thread,
                stats,
            },
        );
        r.to_recipe()
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let r = KillRecipe::from_recipe(recipe)?;
        let Some(mut l) = self.live().remove(&r.fault_id) else {
            return Ok(RevertOutcome::AlreadyGone);
        };
        drop(l.stop.take());
        match l.thread.take() {
            Some(t) => {
                let _ = t.join();
                Ok(RevertOutcome::Reverted)
            }
            // A one-shot kill cannot be taken back.
            None => Ok(RevertOutcome::AlreadyGone),
        }
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let r = match KillRecipe::from_recipe(recipe) {
            Ok(r) => r,
            Err(e) => {
                return Health::Failed {
                    error: e.to_string(),
                    counters: Vec::new(),
                }
            }
        };
        let s = self
            .live()
            .get(&r.fault_id)
            .map(|l| lock(&l.stats).clone())
            .unwrap_or_else(|| {
                let mut s = Stats::default();
                s.add(&r.killed);
                s
            });
        let mut counters = vec![
            ("kills".to_string(), s.kills),
            ("rounds".to_string(), s.rounds),
            ("rounds_not_running".to_string(), s.not_running),
            ("round_errors".to_string(), s.errors),
        ];
        if let Some(us) = s.last.last().and_then(|k| k.gone_after_us) {
            counters.push(("last_kill_latency_us".to_string(), us));
        }
        Health::Ok(counters)
    }

    fn sweep(&self, _known: &[Recipe]) -> Vec<String> {
        // Nothing of a container-kill outlives the agent process.
        Vec::new()
    }
}

/// The container-kill driver over `host`, reading the kubelet's links in `links_dir`.
pub fn driver(host: Arc<Host>, links_dir: PathBuf) -> Arc<dyn Driver> {
    Arc::new(ContainerKillDriver::new(host, links_dir))
}
