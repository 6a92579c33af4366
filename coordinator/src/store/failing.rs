//! Test double: the real sled store, with switches that make audit writes or flushes fail,
//! a gate that holds flushes back, and a count of flushes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{AgentRecord, AuditRecord, HaltRecord, ItemTree, SledStore, Store, StoreError};
use crate::experiments::record::ExperimentRecord;

/// What to break; shared with the test, which flips the switches while the store runs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub audit: Arc<AtomicBool>,
    pub flush: Arc<AtomicBool>,
    /// Flushes so far.
    pub flushes: Arc<AtomicU64>,
    /// While true, a flush waits (the store thread stalls, as on a hung disk).
    held: Arc<(Mutex<bool>, Condvar)>,
}

impl Faults {
    pub fn hold_flushes(&self, on: bool) {
        let (held, cv) = &*self.held;
        *held.lock().expect("gate") = on;
        cv.notify_all();
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    pub fn fail_audit(&self, on: bool) {
        self.audit.store(on, Ordering::SeqCst);
    }

    pub fn fail_flush(&self, on: bool) {
        self.flush.store(on, Ordering::SeqCst);
    }
}

/// [`SledStore`] whose audit appends (and flushes) fail while their switch is on.
#[derive(Debug)]
pub struct Failing {
    inner: SledStore,
    faults: Faults,
}

impl Failing {
    pub fn open(dir: &Path, faults: Faults) -> Failing {
        Failing {
            inner: SledStore::open(dir).expect("open the sled store under the test double"),
            faults,
        }
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Injected(format!("{what} failed: no space left on device (injected)"))
}

impl Store for Failing {
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        self.inner.put_agent(rec)
    }
    fn agent(&self, node_name: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.inner.agent(node_name)
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.inner.agents()
    }
    fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        if self.faults.audit.load(Ordering::SeqCst) {
            return Err(injected("writing an audit entry"));
        }
        self.inner.append_audit(rec)
    }
    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit(limit)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.inner.audit_len()
    }
    fn prune_audit(&self, before: i64, keep: u64, max: usize) -> Result<u64, StoreError> {
        self.inner.prune_audit(before, keep, max)
    }
    fn halt(&self) -> Result<Option<HaltRecord>, StoreError> {
        self.inner.halt()
    }
    fn set_halt(&self, halt: Option<&HaltRecord>) -> Result<(), StoreError> {
        self.inner.set_halt(halt)
    }
    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        self.inner.put_experiment(rec)
    }
    fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        self.inner.experiment(name)
    }
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        self.inner.experiments()
    }
    fn remove_experiment(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.remove_experiment(name)
    }
    fn put_item(&self, tree: ItemTree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.put_item(tree, key, value)
    }
    fn item(&self, tree: ItemTree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.item(tree, key)
    }
    fn items(&self, tree: ItemTree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.items(tree)
    }
    fn remove_item(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError> {
        self.inner.remove_item(tree, key)
    }
    fn heartbeat(&self) -> Result<Option<i64>, StoreError> {
        self.inner.heartbeat()
    }
    fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError> {
        self.inner.put_heartbeat(at_unix_ms)
    }
    fn flush(&self) -> Result<(), StoreError> {
        {
            let (held, cv) = &*self.faults.held;
            let mut held = held.lock().expect("gate");
            while *held {
                held = cv.wait(held).expect("gate");
            }
        }
        self.faults.flushes.fetch_add(1, Ordering::SeqCst);
        if self.faults.flush.load(Ordering::SeqCst) {
            return Err(injected("flush"));
        }
        self.inner.flush()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}
