//! The port between the fault engine (lifecycle, journal, deadlines, limits) and the code that
//! touches the system for one fault family (stress workers, signals, later qdiscs and eBPF).
//!
//! Contract, tested for every driver:
//! - `plan` resolves the target and decides every name the fault will use; it changes nothing.
//!   The engine journals the returned recipe (flushed) before calling `apply`.
//! - `apply` is idempotent: applying the same recipe twice is one fault. It returns the recipe
//!   completed with what only exists after applying (worker PIDs and start times); the engine
//!   journals it again.
//! - `revert` is idempotent and succeeds whether `apply` ran fully, half, or never: it undoes what
//!   it finds and reports `AlreadyGone` when there was nothing to undo. When it returns the
//!   fault no longer acts; an eBPF link whose detach waits in the kernel (an RCU grace period)
//!   may be closed just after, on a thread of its own, its program disarmed before (the
//!   eBPF drivers' `release`).
//! - `sweep` removes artifacts the driver owns (found by their deterministic names) that no
//!   journal entry names; it is how a lost journal still leaves nothing behind.
//! - Methods block (syscalls, /proc and /sys reads); the engine calls them off the async
//!   executor (`spawn_blocking`).

use std::time::SystemTime;

use faultline_core::fault::{FaultKind, FaultSpec};
use serde::{Deserialize, Serialize};

/// What a driver needs to undo a fault, as journaled. `data` is the driver's own JSON; the
/// engine never looks inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub kind: String,
    pub data: serde_json::Value,
}

/// Facts about one fault the driver may use.
#[derive(Debug, Clone)]
pub struct FaultCtx {
    /// Unique, deterministic seed for artifact names (`[a-z0-9-]`, at most 64 chars).
    pub fault_id: String,
    /// When the fault must be gone; workers also enforce it themselves.
    pub deadline: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertOutcome {
    /// Something was undone.
    Reverted,
    /// Nothing was there to undo (never applied, or already reverted).
    AlreadyGone,
}

/// Health of an applied fault, polled by the engine a few times a second.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Working as asked; counters such as `rss_bytes`, `bytes_written`, `fsyncs`.
    Ok(Vec<(String, u64)>),
    /// The fault stopped working before its end (for example a worker was OOM-killed: error
    /// text `oom_killed` and counter `oom_killed` = 1). The engine reports it FAILED, then
    /// reverts what is left.
    Failed {
        error: String,
        counters: Vec<(String, u64)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The spec cannot be applied here (target not found, protected, limit exceeded ...).
    /// Reported to the coordinator as is; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl DriverError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DriverError::Io {
            what: what.into(),
            source,
        }
    }
}

/// One fault family's system side.
pub trait Driver: Send + Sync + 'static {
    /// The kinds this driver handles.
    fn kinds(&self) -> &'static [FaultKind];
    /// Whether the driver can work on this host (e.g. cgroups mounted); an `Err` says why not,
    /// and the kinds are left out of the agent's capabilities.
    fn available(&self) -> Result<(), String>;
    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError>;
    fn apply(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError>;
    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError>;
    fn health(&self, recipe: &Recipe) -> Health;
    /// Removes owned artifacts not named by `known` (the journal's recipes of this driver's
    /// kinds); returns a line per artifact removed.
    fn sweep(&self, known: &[Recipe]) -> Vec<String>;
}
