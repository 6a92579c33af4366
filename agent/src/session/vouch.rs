//! The agent's half of the lease contract (docs/architecture.md, "The lease contract"): which
//! faults the coordinator vouches for, and until when.
//!
//! - Every Welcome and LeaseRenewal names the complete set of faults the coordinator wants this
//!   agent to hold. A fault it does not name is withdrawn, and the session reverts it at once
//!   (reason UNVOUCHED), even when its apply is still running (it is reverted as soon as the
//!   apply ends).
//! - An ApplyFault vouches for its fault, and each renewal that names it vouches again, for
//!   one lease on this agent's monotonic clock. A fault whose vouch runs out is reverted
//!   (reason LEASE) even while the session stays up.
//!
//! Pure bookkeeping on `tokio::time::Instant`, so tests drive it with paused time.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

/// Vouches by fault id, and the reverts the session has ordered and not seen finish.
#[derive(Debug, Default)]
pub(crate) struct Vouches {
    until: BTreeMap<String, Instant>,
    reverting: BTreeSet<String>,
}

impl Vouches {
    /// An ApplyFault for `id` arrived: it is vouched for until `until`.
    pub(crate) fn ordered(&mut self, id: &str, until: Instant) {
        self.until.insert(id.to_string(), until);
        self.reverting.remove(id);
    }

    /// A Welcome or renewal named exactly `named`, each vouched for until `until` (`None`: a
    /// renewal too old to extend anything, which leaves the named vouches as they were).
    /// Returns the faults of `present` (held or being applied) that it did not name and that
    /// are not being reverted already: the caller reverts them (reason UNVOUCHED).
    pub(crate) fn renewed(
        &mut self,
        named: &[String],
        until: Option<Instant>,
        present: &BTreeSet<String>,
    ) -> Vec<String> {
        let named: BTreeSet<&str> = named.iter().map(String::as_str).collect();
        self.until.retain(|id, _| named.contains(id.as_str()));
        if let Some(until) = until {
            for id in &named {
                self.until.insert((*id).to_string(), until);
            }
        }
        present
            .iter()
            .filter(|id| !named.contains(id.as_str()) && !self.reverting.contains(*id))
            .cloned()
            .collect()
    }

    /// The session lease lapsed: nothing is vouched for any more (an apply that ends after the
    /// lapse is reverted at once; reverts in progress stay marked).
    pub(crate) fn lapsed(&mut self) {
        self.until.clear();
    }

    /// The coordinator ordered `id` reverted (RevertFault, RevertAll): no longer vouched.
    pub(crate) fn withdraw(&mut self, id: &str) {
        self.until.remove(id);
    }

    /// Whether `id` is vouched for at `now`.
    pub(crate) fn holds(&self, id: &str, now: Instant) -> bool {
        self.until.get(id).is_some_and(|u| now < *u)
    }

    /// Faults of `held` whose vouch ran out (or that nothing vouches for) and that are not being
    /// reverted already: the caller reverts them (reason LEASE).
    pub(crate) fn expired(&self, held: &BTreeSet<String>, now: Instant) -> Vec<String> {
        held.iter()
            .filter(|id| !self.holds(id, now) && !self.reverting.contains(*id))
            .cloned()
            .collect()
    }

    /// A revert of `id` was ordered.
    pub(crate) fn reverting(&mut self, id: &str) {
        self.until.remove(id);
        self.reverting.insert(id.to_string());
    }

    /// The ordered revert of `id` ended (`done`: the fault is gone). A failed revert stays
    /// marked: the engine retries it on its own, and the session does not order it again.
    pub(crate) fn revert_ended(&mut self, id: &str, done: bool) {
        if done {
            self.reverting.remove(id);
        }
    }

    /// Forgets reverts of faults no longer held (the engine's retry finished them).
    pub(crate) fn forget_gone(&mut self, held: &BTreeSet<String>) {
        self.reverting.retain(|id| held.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_renewal_that_omits_a_fault_withdraws_it() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(5);
        let mut v = Vouches::default();
        v.ordered("f1", t0 + lease);
        v.ordered("f2", t0 + lease);
        let revert = v.renewed(&names(&["f2"]), Some(t0 + lease), &set(&["f1", "f2"]));
        assert_eq!(revert, ["f1"]);
        assert!(!v.holds("f1", t0));
        assert!(v.holds("f2", t0));
        // Ordered reverts are not ordered twice.
        v.reverting("f1");
        let revert = v.renewed(&names(&["f2"]), Some(t0 + lease), &set(&["f1", "f2"]));
        assert!(revert.is_empty(), "{revert:?}");
        v.revert_ended("f1", true);
        // A fault held that no renewal ever named (held from before a restart of the
        // coordinator) is withdrawn too.
        let revert = v.renewed(&[], Some(t0 + lease), &set(&["f2", "old"]));
        assert_eq!(revert, ["f2", "old"]);
    }

    #[test]
    fn a_vouch_runs_out_after_one_lease() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(5);
        let mut v = Vouches::default();
        v.ordered("f1", t0 + lease);
        let held = set(&["f1"]);
        assert!(v
            .expired(&held, t0 + Duration::from_millis(4999))
            .is_empty());
        assert_eq!(v.expired(&held, t0 + lease), ["f1"]);
        // Renewals that name it keep it.
        v.renewed(&names(&["f1"]), Some(t0 + lease * 2), &held);
        assert!(v.expired(&held, t0 + lease).is_empty());
        // A failed revert is not ordered again by the session (the engine retries it).
        v.reverting("f1");
        v.revert_ended("f1", false);
        assert!(v.expired(&held, t0 + lease * 3).is_empty());
        v.forget_gone(&BTreeSet::new());
        assert_eq!(v.expired(&held, t0 + lease * 3), ["f1"]);
    }
}
