//! The coordinator's durable state (agents seen, the audit log, the fleet halt flag, experiment
//! records): the small blocking [`Store`] trait with its sled implementation, and the
//! [`StoreHandle`] through which the async coordinator reaches it.
//!
//! # Durability contract
//!
//! No store I/O happens on the async runtime's threads. One dedicated thread (the *store
//! thread*) owns the [`Store`] and takes requests from a bounded queue, in order. It applies
//! every write it finds queued, then flushes once for the whole batch (group commit), and only
//! then answers the writers.
//!
//! - A write through an `async` method of [`StoreHandle`] (`*_durable`, `set_halt`,
//!   `put_heartbeat`, `write`, `prune_*`) is **durable when the call returns `Ok`**: it survives
//!   a crash of the process or of the machine.
//! - A write through a plain method (`put_agent`, `put_experiment`, `append_audit`) is
//!   **queued** when the call returns `Ok`: it never waits, it is durable at the store thread's
//!   next commit (milliseconds later), and a failure is logged and counted
//!   (`faultline_coordinator_store_write_failures_total`). A crash in between loses it.
//! - A read sees every write queued before it, durable or not yet.
//! - The queue holds at most [`STORE_QUEUE`] requests. When it is full a queued write fails at
//!   once with [`StoreError::Busy`]; async calls wait for room.
//!
//! The callers that need durability wait for it: the audit entry of a mutation before the
//! mutation, an experiment's record when it starts and at every phase change, the halt.

mod handle;
mod items;
pub mod retention;
mod sled_store;

#[cfg(test)]
pub mod failing;
#[cfg(test)]
mod handle_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod sled_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::experiments::record::ExperimentRecord;

mod tokens;
pub use handle::{StoreHandle, STORE_QUEUE};
pub use items::ItemTree;
pub use sled_store::{audit_key, SledStore};
pub use tokens::{
    EnrollStore, EnrollmentRecord, IssuedRecord, RevocationRecord, Revoked, TokenRecord,
};

/// What the coordinator remembers about an agent between restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub version: String,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    #[serde(default)]
    pub remote_address: String,
}

/// One audit log entry: who did what, when, and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_unix_ms: i64,
    /// `<role>/<name>` of the caller.
    pub identity: String,
    /// e.g. `Fleet.HaltAll`, `AgentSession.Connect`.
    pub action: String,
    pub detail: String,
    pub allowed: bool,
}

/// The fleet-wide halt, set by `Fleet.HaltAll` and cleared by `Fleet.Resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    pub reason: String,
    pub by: String,
    pub at_unix_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source}{hint}")]
    Open {
        path: PathBuf,
        source: sled::Error,
        hint: &'static str,
    },
    #[error("creating the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {op}: {source}")]
    Sled {
        op: &'static str,
        source: sled::Error,
    },
    #[error("store: record {key:?} in {tree} does not decode: {source}")]
    Decode {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("store: encoding a {what} record: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The write was applied but the flush of its batch failed: it may be lost in a crash.
    #[error("store: the write was not made durable: {0}")]
    NotDurable(Arc<StoreError>),
    #[error("store: the request queue is full ({capacity} requests waiting): the disk is slower than the load")]
    Busy { capacity: usize },
    #[error("the store thread is gone: {0}")]
    Thread(String),
    #[error("the store is closed (the coordinator is shutting down)")]
    Closed,
    /// Only from the test doubles in [`failing`].
    #[cfg(test)]
    #[error("store: {0}")]
    Injected(String),
}

/// The storage engine under [`StoreHandle`]: plain blocking calls, made only on the store
/// thread.
///
/// # Guarantees
/// A write is applied when the call returns: reads after it see it. It is durable (survives a
/// crash of the process or the machine) once a later [`Store::flush`] returns `Ok`.
pub trait Store: Send {
    /// Inserts or replaces the record of `rec.node_name`.
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError>;
    fn agent(&self, node_name: &str) -> Result<Option<AgentRecord>, StoreError>;
    /// Every agent ever seen, sorted by node name.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// How many audit entries there are.
    fn audit_len(&self) -> Result<u64, StoreError>;
    /// Removes the oldest audit entries while they are older than `before_unix_ms` or there
    /// are more than `keep_at_most`, at most `max_remove` of them; returns how many went.
    fn prune_audit(
        &self,
        before_unix_ms: i64,
        keep_at_most: u64,
        max_remove: usize,
    ) -> Result<u64, StoreError>;
    fn halt(&self) -> Result<Option<HaltRecord>, StoreError>;
    /// Sets (`Some`) or clears (`None`) the fleet halt.
    fn set_halt(&self, halt: Option<&HaltRecord>) -> Result<(), StoreError>;
    /// Inserts or replaces the record of experiment `rec.name`.
    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError>;
    fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError>;
    /// Every experiment, sorted by name.
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError>;
    /// Removes the record of experiment `name`; true when there was one.
    fn remove_experiment(&self, name: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces record `key` of `tree` (schedules, workflow runs).
    fn put_item(&self, tree: ItemTree, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn item(&self, tree: ItemTree, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record of `tree`, sorted by key.
    fn items(&self, tree: ItemTree) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Removes record `key` of `tree`; true when there was one.
    fn remove_item(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError>;
    /// When the coordinator that used this store last said it was alive (unix ms).
    fn heartbeat(&self) -> Result<Option<i64>, StoreError>;
    /// Records that the coordinator is alive at `at_unix_ms` (written every second, so the
    /// next start knows when this one stopped).
    fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError>;
    /// Makes every write applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Flushes and releases the store (and its lock on the directory); later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}

/// A shared store is a store: the store thread owns one handle, the enrollment tables another.
impl<S: Store + Sync + ?Sized> Store for Arc<S> {
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        (**self).put_agent(rec)
    }
    fn agent(&self, node_name: &str) -> Result<Option<AgentRecord>, StoreError> {
        (**self).agent(node_name)
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        (**self).agents()
    }
    fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        (**self).append_audit(rec)
    }
    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        (**self).audit(limit)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        (**self).audit_len()
    }
    fn prune_audit(
        &self,
        before_unix_ms: i64,
        keep_at_most: u64,
        max_remove: usize,
    ) -> Result<u64, StoreError> {
        (**self).prune_audit(before_unix_ms, keep_at_most, max_remove)
    }
    fn halt(&self) -> Result<Option<HaltRecord>, StoreError> {
        (**self).halt()
    }
    fn set_halt(&self, halt: Option<&HaltRecord>) -> Result<(), StoreError> {
        (**self).set_halt(halt)
    }
    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        (**self).put_experiment(rec)
    }
    fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        (**self).experiment(name)
    }
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        (**self).experiments()
    }
    fn remove_experiment(&self, name: &str) -> Result<bool, StoreError> {
        (**self).remove_experiment(name)
    }
    fn put_item(&self, tree: ItemTree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).put_item(tree, key, value)
    }
    fn item(&self, tree: ItemTree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).item(tree, key)
    }
    fn items(&self, tree: ItemTree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        (**self).items(tree)
    }
    fn remove_item(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError> {
        (**self).remove_item(tree, key)
    }
    fn heartbeat(&self) -> Result<Option<i64>, StoreError> {
        (**self).heartbeat()
    }
    fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError> {
        (**self).put_heartbeat(at_unix_ms)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn close(&self) -> Result<(), StoreError> {
        (**self).close()
    }
}
