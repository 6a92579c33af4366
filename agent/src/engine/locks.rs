//! Serialization of the engine's mutations: one lock per fault id, so a deadline and an order
//! from the coordinator never act on the same fault at once, while different faults never wait
//! for each other (a slow or hung apply does not delay another fault's revert). Start-up
//! recovery takes the whole engine for itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, RwLock};

/// The locks of one engine.
#[derive(Debug, Default)]
pub(super) struct Locks {
    /// Read by every per-fault operation, written by recovery.
    gate: Arc<RwLock<()>>,
    faults: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while one operation acts on one fault.
#[derive(Debug)]
pub(super) struct FaultGuard<'a> {
    locks: &'a Locks,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
    _gate: OwnedRwLockReadGuard<()>,
}

impl Locks {
    /// Waits until nothing else acts on `fault_id` (and recovery is not running).
    pub(super) async fn fault(&self, fault_id: &str) -> FaultGuard<'_> {
        let gate = self.gate.clone().read_owned().await;
        let lock = self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(fault_id.to_string())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        FaultGuard {
            locks: self,
            id: fault_id.to_string(),
            guard: Some(guard),
            _gate: gate,
        }
    }

    /// Waits until no per-fault operation runs, and keeps them all out while held.
    pub(super) async fn all(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }
}

impl Drop for FaultGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the lock of a fault nobody else waits for, so the map does not grow.
        let mut faults = self.locks.faults.lock().unwrap_or_else(|p| p.into_inner());
        if faults
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            faults.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_fault_at_a_time_different_faults_at_once() {
        let locks = Arc::new(Locks::default());
        let a = locks.fault("a").await;
        // Another fault is not held up by `a`.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.fault("b")).await;
        assert!(b.is_ok(), "fault b waited for fault a");
        drop(b);
        // The same fault waits.
        let again = tokio::time::timeout(Duration::from_secs(1), locks.fault("a")).await;
        assert!(again.is_err(), "fault a was locked twice");
        // Recovery waits for every fault operation.
        let all = tokio::time::timeout(Duration::from_secs(1), locks.all()).await;
        assert!(all.is_err(), "recovery ran beside an operation on fault a");
        drop(a);
        let all = tokio::time::timeout(Duration::from_secs(1), locks.all()).await;
        assert!(all.is_ok());
        assert!(
            locks.faults.lock().expect("map").is_empty(),
            "released locks are forgotten"
        );
    }
}
