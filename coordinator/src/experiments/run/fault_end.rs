//! Per-fault timing (issue 13, composition): a fault with a `duration` shorter than the
//! experiment's ends on its own. Its ApplyFault carries its own deadline (the agent reverts
//! there even if the coordinator is gone); at that time the run also withdraws its vouch and
//! sends RevertFault (reason deadline) for it, while the experiment's other faults go on.

use faultline_proto::pb;
use tokio::time::Instant;

use super::Run;
use crate::state::now_ms;

impl Run {
    /// When fault `index` ends, in Unix ms: injection plus its own duration.
    pub(super) fn fault_end_ms(&self, index: usize) -> i64 {
        self.rec.started_unix_ms + self.spec.fault_duration(index).as_millis() as i64
    }

    /// Whether fault `index` ends before the experiment does.
    fn ends_early(&self, index: usize) -> bool {
        self.spec.fault_duration(index) < self.spec.duration
    }

    /// Targets whose fault's own end is due and that no RevertFault went to yet.
    fn due_ends(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        let now = now_ms();
        self.rec
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.settled() && t.revert_sent_unix_ms == 0)
            .filter(|(_, t)| self.ends_early(t.fault_index))
            .map(|(i, t)| (i, self.fault_end_ms(t.fault_index)))
            .filter(move |(_, end)| *end <= now)
    }

    /// The next time a fault ends on its own, if one still will.
    pub(super) fn next_fault_end(&self) -> Option<Instant> {
        // Per fault, not per target: the run asks this on every loop round, and a scan of
        // 10,000 targets per round made a 10,000-agent fan-out O(n^2). A fault whose targets
        // all went early anyway costs one needless wake-up at its end.
        let now = now_ms();
        (0..self.spec.faults.len())
            .filter(|&i| self.ends_early(i))
            .map(|i| self.fault_end_ms(i))
            .filter(|end| *end > now)
            .min()
            .map(|end| Instant::now() + std::time::Duration::from_millis((end - now) as u64))
    }

    /// RevertFault (reason deadline) for every target whose fault's own duration is over;
    /// a send that fails is tried again at the next tick.
    pub(super) async fn end_due_faults(&mut self) {
        if self.ending.is_some() {
            return;
        }
        let due: Vec<usize> = self.due_ends().map(|(i, _)| i).collect();
        if due.is_empty() {
            return;
        }
        let mut faults: Vec<usize> = due
            .iter()
            .map(|i| self.rec.targets[*i].fault_index)
            .collect();
        faults.dedup();
        let sent = self.revert_targets(&due, pb::RevertReason::Deadline).await;
        let what = faults
            .iter()
            .map(|f| {
                format!(
                    "spec.faults[{f}] ({})",
                    humantime::format_duration(self.spec.fault_duration(*f))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.rec.log(
            now_ms(),
            format!("{what}: its own duration is over; RevertFault sent for {sent} fault(s), the others go on"),
        );
        self.dirty = true;
        self.publish("a fault reached its own duration", false);
    }
}
