//! What a run asks after every status, answered without scanning every target: which target a
//! fault id names, whether every target has settled, whether every ApplyFault was answered.
//! With 10,000 targets, scanning on each of the 10,000 acknowledgements of a fan-out or an
//! abort cost O(n²), about a second of one core at that size.

use std::collections::HashMap;

use crate::experiments::record::{TargetRecord, TargetState};

/// Built once when the run starts: a run's targets never change after planning.
pub(super) struct Progress {
    by_fault: HashMap<String, usize>,
    /// Every target before this index has settled. A target never becomes unsettled again
    /// (its revert time is set once, and a failed one stays failed), so it only moves forward.
    settled_up_to: usize,
    /// Every target before this index has left Pending (nothing sets Pending again).
    answered_up_to: usize,
}

impl Progress {
    pub fn new(targets: &[TargetRecord]) -> Self {
        Progress {
            by_fault: targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.fault_id.clone(), i))
                .collect(),
            settled_up_to: 0,
            answered_up_to: 0,
        }
    }

    /// The target of `fault_id`, when it is `agent`'s.
    pub fn target(&self, targets: &[TargetRecord], fault_id: &str, agent: &str) -> Option<usize> {
        self.by_fault
            .get(fault_id)
            .copied()
            .filter(|&i| targets.get(i).is_some_and(|t| t.agent == agent))
    }

    /// Every fault reverted or failed (amortised O(1) per call over a run).
    pub fn all_settled(&mut self, targets: &[TargetRecord]) -> bool {
        while self.settled_up_to < targets.len() && targets[self.settled_up_to].settled() {
            self.settled_up_to += 1;
        }
        self.settled_up_to == targets.len()
    }

    /// No target still waits for its first answer to ApplyFault.
    pub fn all_answered(&mut self, targets: &[TargetRecord]) -> bool {
        let pending = |t: &TargetRecord| t.state == TargetState::Pending && t.reverted_unix_ms == 0;
        while self.answered_up_to < targets.len() && !pending(&targets[self.answered_up_to]) {
            self.answered_up_to += 1;
        }
        self.answered_up_to == targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(agent: &str, fault_id: &str) -> TargetRecord {
        serde_json::from_value(serde_json::json!({
            "agent": agent, "fault_index": 0, "fault_id": fault_id, "fault": "cpu 5% x 1",
            "state": "pending",
        }))
        .expect("a target record")
    }

    #[test]
    fn settled_and_answered_only_once_every_target_is_in_any_order() {
        let mut targets: Vec<TargetRecord> = (0..4)
            .map(|i| target(&format!("node-{i}"), &format!("f{i}")))
            .collect();
        let mut p = Progress::new(&targets);
        // Answered and settled from the back: the cursors must not pass target 0.
        for i in [3, 2, 1] {
            targets[i].state = TargetState::Applied;
            assert!(!p.all_answered(&targets), "target 0 still pending");
        }
        targets[0].state = TargetState::Applied;
        assert!(p.all_answered(&targets));
        for i in [1, 3, 2] {
            targets[i].reverted_unix_ms = 10;
            assert!(!p.all_settled(&targets), "target 0 not settled");
        }
        targets[0].state = TargetState::Failed;
        assert!(p.all_settled(&targets));
    }

    #[test]
    fn a_fault_id_names_its_target_only_for_its_own_agent() {
        let targets = vec![target("a", "f1"), target("b", "f2")];
        let p = Progress::new(&targets);
        assert_eq!(p.target(&targets, "f2", "b"), Some(1));
        assert_eq!(p.target(&targets, "f2", "a"), None);
        assert_eq!(p.target(&targets, "f3", "a"), None);
    }
}
