//! A fake [`Driver`] for tests of the engine: its "system" is a shared set of artifact names
//! (`<fault-id>/<n>`), and it can be scripted to refuse, fail, panic, or "crash" (the process
//! stops dead) at a chosen step of apply or revert. Touches nothing on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use faultline_core::fault::{FaultKind, FaultSpec};
use serde_json::json;
use tokio::sync::Notify;

use super::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};

/// A call the fake driver received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Plan(String),
    Apply(String),
    Revert(String),
    Sweep,
}

/// Where a scripted crash or failure happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeOp {
    Apply,
    Revert,
}

#[derive(Default)]
struct WorldState {
    /// Artifact name -> the driver that owns it ("" = any driver may sweep it).
    artifacts: BTreeMap<String, String>,
    calls: Vec<FakeCall>,
    released: bool,
}

/// The fake system: the artifacts that exist, shared by every fake driver (and every engine
/// "incarnation") of a test.
#[derive(Default)]
pub struct FakeWorld {
    state: Mutex<WorldState>,
    wake: Condvar,
    crashed: Notify,
}

impl std::fmt::Debug for FakeWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWorld")
            .field("artifacts", &self.lock().artifacts)
            .finish()
    }
}

impl FakeWorld {
    pub fn new() -> Arc<FakeWorld> {
        Arc::new(FakeWorld::default())
    }

    fn lock(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every artifact that exists now.
    pub fn artifacts(&self) -> BTreeSet<String> {
        self.lock().artifacts.keys().cloned().collect()
    }

    /// Fault ids that have at least one artifact.
    pub fn fault_ids(&self) -> BTreeSet<String> {
        self.lock()
            .artifacts
            .keys()
            .filter_map(|a| a.split('/').next())
            .map(str::to_string)
            .collect()
    }

    /// Creates an artifact no journal knows of (for sweep tests).
    pub fn add_orphan(&self, name: &str) {
        self.lock()
            .artifacts
            .insert(name.to_string(), String::new());
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Completes when a scripted crash happened (the crashing call is then blocked until
    /// [`FakeWorld::release`]).
    pub async fn crashed(&self) {
        self.crashed.notified().await
    }

    /// Lets a crashed call return (an error, changing nothing): the process it simulated is dead.
    pub fn release(&self) {
        self.lock().released = true;
        self.wake.notify_all();
    }

    fn block_until_released(&self) {
        let mut s = self.lock();
        while !s.released {
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[derive(Default)]
struct Script {
    unavailable: Option<String>,
    refuse_plan: Option<String>,
    /// Apply fails after creating this many artifacts.
    fail_apply_at: Option<usize>,
    /// Apply panics after creating this many artifacts.
    panic_apply_at: Option<usize>,
    /// The next this-many reverts fail after removing `fail_revert_at` artifacts.
    fail_reverts: usize,
    fail_revert_at: usize,
    /// The process dies at this step (a step = before creating/removing artifact n, or n = all
    /// done, before returning).
    crash: Option<(FakeOp, usize)>,
    /// The call hangs at this step until released, then carries on (a stuck syscall).
    hang: Option<(FakeOp, usize)>,
    health: BTreeMap<String, Health>,
    dead: bool,
}

/// The fake driver. Its recipe names every artifact at plan time (deterministic names), so a
/// revert after a half apply finds everything.
pub struct FakeDriver {
    world: Arc<FakeWorld>,
    kinds: &'static [FaultKind],
    per_fault: usize,
    script: Mutex<Script>,
}

impl std::fmt::Debug for FakeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDriver")
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl FakeDriver {
    /// A driver for `kinds` making `per_fault` artifacts per fault in `world`.
    pub fn new(world: Arc<FakeWorld>, kinds: &'static [FaultKind], per_fault: usize) -> Self {
        FakeDriver {
            world,
            kinds,
            per_fault,
            script: Mutex::new(Script::default()),
        }
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_unavailable(&self, why: &str) {
        self.script().unavailable = Some(why.into());
    }
    pub fn refuse_plan(&self, why: &str) {
        self.script().refuse_plan = Some(why.into());
    }
    pub fn fail_apply_at(&self, step: usize) {
        self.script().fail_apply_at = Some(step);
    }
    pub fn panic_apply_at(&self, step: usize) {
        self.script().panic_apply_at = Some(step);
    }
    /// The next `times` reverts fail after removing `step` artifacts.
    pub fn fail_reverts(&self, times: usize, step: usize) {
        let mut s = self.script();
        s.fail_reverts = times;
        s.fail_revert_at = step;
    }
    /// The next `op` hangs at `step` until [`FakeWorld::release`], then carries on normally
    /// (a syscall stuck on a FIFO, say); [`FakeWorld::crashed`] completes when it starts to hang.
    pub fn hang_at(&self, op: FakeOp, step: usize) {
        self.script().hang = Some((op, step));
    }

    pub fn crash_at(&self, op: FakeOp, step: usize) {
        self.script().crash = Some((op, step));
    }
    /// Forgets every scripted failure and crash not reached yet.
    pub fn disarm(&self) {
        let mut s = self.script();
        s.fail_apply_at = None;
        s.panic_apply_at = None;
        s.fail_reverts = 0;
        s.crash = None;
    }
    pub fn set_health(&self, fault_id: &str, health: Health) {
        self.script().health.insert(fault_id.into(), health);
    }

    fn dead(&self) -> Result<(), DriverError> {
        if self.script().dead {
            return Err(DriverError::Other("the process is dead".into()));
        }
        Ok(())
    }

    /// At a scripted crash point: die (block until released, then report an error). At a
    /// scripted hang: block until released, then go on.
    fn maybe_crash(&self, op: FakeOp, step: usize) -> Result<(), DriverError> {
        let hang = {
            let mut s = self.script();
            let hang = s.hang == Some((op, step));
            if hang {
                s.hang = None;
            }
            hang
        };
        if hang {
            self.world.lock().released = false;
            self.world.crashed.notify_one();
            self.world.block_until_released();
            return Ok(());
        }
        {
            let mut s = self.script();
            if s.crash != Some((op, step)) {
                return Ok(());
            }
            s.dead = true;
        }
        self.world.lock().released = false;
        self.world.crashed.notify_one();
        self.world.block_until_released();
        Err(DriverError::Other("the process died here".into()))
    }

    fn names(recipe: &Recipe) -> Vec<String> {
        recipe.data["artifacts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Which driver made an artifact: its kinds.
    fn owner(&self) -> String {
        self.kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn record(&self, call: FakeCall) {
        self.world.lock().calls.push(call);
    }
}

impl Driver for FakeDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        self.kinds
    }

    fn available(&self) -> Result<(), String> {
        match &self.script().unavailable {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn plan(&self, ctx: &FaultCtx, _spec: &FaultSpec) -> Result<Recipe, DriverError> {
        self.dead()?;
        self.record(FakeCall::Plan(ctx.fault_id.clone()));
        if let Some(why) = &self.script().refuse_plan {
            return Err(DriverError::Refused(why.clone()));
        }
        let names: Vec<String> = (0..self.per_fault)
            .map(|n| format!("{}/{n}", ctx.fault_id))
            .collect();
        Ok(Recipe {
            kind: "fake".into(),
            data: json!({"fault_id": ctx.fault_id, "artifacts": names, "applied": false}),
        })
    }

    fn apply(
        &self,
        ctx: &FaultCtx,
        _spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        self.dead()?;
        self.record(FakeCall::Apply(ctx.fault_id.clone()));
        let names = Self::names(recipe);
        for (step, name) in names.iter().enumerate() {
            self.maybe_crash(FakeOp::Apply, step)?;
            if self.script().fail_apply_at == Some(step) {
                return Err(DriverError::Other(format!("apply failed at step {step}")));
            }
            if self.script().panic_apply_at == Some(step) {
                panic!("fake apply panicked at step {step}");
            }
            self.world
                .lock()
                .artifacts
                .insert(name.clone(), self.owner());
        }
        self.maybe_crash(FakeOp::Apply, names.len())?;
        let mut done = recipe.clone();
        done.data["applied"] = json!(true);
        Ok(done)
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        self.dead()?;
        let id = recipe.data["fault_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.record(FakeCall::Revert(id));
        let names = Self::names(recipe);
        let mut removed = false;
        for (step, name) in names.iter().enumerate() {
            self.maybe_crash(FakeOp::Revert, step)?;
            {
                let mut s = self.script();
                if s.fail_reverts > 0 && s.fail_revert_at == step {
                    s.fail_reverts -= 1;
                    return Err(DriverError::Other(format!("revert failed at step {step}")));
                }
            }
            removed |= self.world.lock().artifacts.remove(name).is_some();
        }
        self.maybe_crash(FakeOp::Revert, names.len())?;
        Ok(if removed {
            RevertOutcome::Reverted
        } else {
            RevertOutcome::AlreadyGone
        })
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let id = recipe.data["fault_id"].as_str().unwrap_or_default();
        if let Some(h) = self.script().health.get(id) {
            return h.clone();
        }
        let prefix = format!("{id}/");
        let n = self
            .world
            .lock()
            .artifacts
            .keys()
            .filter(|a| a.starts_with(&prefix))
            .count();
        Health::Ok(vec![("artifacts".into(), n as u64)])
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        if self.script().dead {
            return Vec::new();
        }
        self.record(FakeCall::Sweep);
        let keep: BTreeSet<String> = known.iter().flat_map(Self::names).collect();
        let mut w = self.world.lock();
        let owner = self.owner();
        let orphans: Vec<String> = w
            .artifacts
            .iter()
            .filter(|(a, o)| !keep.contains(*a) && (o.is_empty() || **o == owner))
            .map(|(a, _)| a.clone())
            .collect();
        for o in &orphans {
            w.artifacts.remove(o);
        }
        orphans
            .into_iter()
            .map(|o| format!("removed orphan artifact {o}"))
            .collect()
    }
}
