//! What the coordinator vouches for: per agent, the faults it wants that agent to hold now.
//!
//! This table is the coordinator's half of the lease contract (docs/architecture.md, "The lease
//! contract"). Every Welcome and LeaseRenewal carries the agent's entry in full, and the agent
//! reverts at once anything it holds that the entry does not name. So a fault exists on a node
//! only while an entry here names it:
//! - an experiment vouches for each (agent, fault) *before* it sends the ApplyFault, so no
//!   renewal that follows the order can omit the fault;
//! - it withdraws the vouch *before* it sends the RevertFault (end, abort, failed target), so
//!   even a RevertFault that is never delivered is carried out by the next renewal;
//! - the table lives in memory only: a coordinator that restarts vouches for exactly what it
//!   resumed, and one with a lost store for nothing, and the agents reconcile on their Hello.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// Vouched faults: agent -> fault id -> experiment name.
#[derive(Debug, Default)]
pub struct Vouches {
    inner: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl Vouches {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, String>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `experiment` wants `agent` to hold `fault_id`.
    pub fn vouch(&self, agent: &str, fault_id: &str, experiment: &str) {
        self.lock()
            .entry(agent.to_string())
            .or_default()
            .insert(fault_id.to_string(), experiment.to_string());
    }

    /// Nobody wants `agent` to hold `fault_id` any more.
    pub fn withdraw(&self, agent: &str, fault_id: &str) {
        let mut all = self.lock();
        if let Some(faults) = all.get_mut(agent) {
            faults.remove(fault_id);
            if faults.is_empty() {
                all.remove(agent);
            }
        }
    }

    /// Withdraws every vouch of `experiment`; returns how many there were.
    pub fn withdraw_experiment(&self, experiment: &str) -> usize {
        let mut all = self.lock();
        let mut n = 0;
        all.retain(|_, faults| {
            let before = faults.len();
            faults.retain(|_, e| e != experiment);
            n += before - faults.len();
            !faults.is_empty()
        });
        n
    }

    /// Withdraws everything (the fleet is halted).
    pub fn withdraw_all(&self) -> usize {
        let mut all = self.lock();
        let n = all.values().map(BTreeMap::len).sum();
        all.clear();
        n
    }

    /// The faults `agent` should hold, in id order: what Welcome and LeaseRenewal carry.
    pub fn wanted(&self, agent: &str) -> Vec<String> {
        self.lock()
            .get(agent)
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The experiment that vouches for `fault_id` on `agent`, if any.
    pub fn owner(&self, agent: &str, fault_id: &str) -> Option<String> {
        self.lock().get(agent)?.get(fault_id).cloned()
    }

    /// Vouched faults across the fleet.
    pub fn len(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vouch_withdraw_and_wanted() {
        let v = Vouches::default();
        v.vouch("node-a", "f2", "exp-1");
        v.vouch("node-a", "f1", "exp-1");
        v.vouch("node-b", "f3", "exp-2");
        assert_eq!(v.wanted("node-a"), ["f1", "f2"]);
        assert_eq!(v.owner("node-b", "f3").as_deref(), Some("exp-2"));
        assert_eq!(
            v.owner("node-a", "f3"),
            None,
            "a fault is vouched per agent"
        );
        v.withdraw("node-a", "f1");
        assert_eq!(v.wanted("node-a"), ["f2"]);
        assert_eq!(v.withdraw_experiment("exp-1"), 1);
        assert!(v.wanted("node-a").is_empty());
        assert_eq!(v.len(), 1);
        assert_eq!(v.withdraw_all(), 1);
        assert!(v.is_empty());
        assert!(
            v.wanted("node-c").is_empty(),
            "an unknown agent holds nothing"
        );
    }
}
