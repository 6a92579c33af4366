//! Fault orders carried out beside the session loop, so a slow or hung apply never delays a
//! lease renewal, telemetry, or the revert of another fault: operations on one fault run one
//! after another in the order they were given, operations on different faults run at once.
//! Each operation's status comes back on a channel the session forwards (or queues).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use faultline_proto::pb;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::faults::{FaultManager, RevertReason};

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Apply,
    Revert,
}

/// A finished operation.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) op: Op,
    pub(crate) status: pb::FaultStatus,
}

/// The running operations, chained per fault id.
pub(crate) struct Orders {
    manager: Arc<dyn FaultManager>,
    tails: HashMap<String, Shared<BoxFuture<'static, ()>>>,
    done: mpsc::UnboundedSender<Done>,
}

impl Orders {
    pub(crate) fn new(manager: Arc<dyn FaultManager>) -> (Self, mpsc::UnboundedReceiver<Done>) {
        let (done, rx) = mpsc::unbounded_channel();
        let orders = Orders {
            manager,
            tails: HashMap::new(),
            done,
        };
        (orders, rx)
    }

    /// Applies `req`; its remaining time counts from `received`.
    pub(crate) fn apply(&mut self, mut req: pb::ApplyFault, received: Instant) {
        let manager = self.manager.clone();
        let done = self.done.clone();
        let id = req.fault_id.clone();
        self.chain(id, async move {
            // Waiting behind an earlier operation on the same fault uses up its time.
            let waited = received.elapsed().as_millis() as u64;
            if req.remaining_ms > 0 {
                req.remaining_ms = req.remaining_ms.saturating_sub(waited).max(1);
            }
            let status = manager.apply(req).await;
            let _ = done.send(Done {
                op: Op::Apply,
                status,
            });
        });
    }

    /// Answers `req` FAILED with `why` without applying anything.
    pub(crate) fn refuse(&mut self, req: pb::ApplyFault, why: String) {
        let status = crate::faults::status(
            req.fault_id,
            req.experiment_id,
            pb::FaultState::Failed,
            RevertReason::Unspecified,
            why,
        );
        let _ = self.done.send(Done {
            op: Op::Apply,
            status,
        });
    }

    /// Reverts `fault_id` once everything ordered before for it has finished.
    pub(crate) fn revert(&mut self, fault_id: String, reason: RevertReason) {
        let manager = self.manager.clone();
        let done = self.done.clone();
        let id = fault_id.clone();
        self.chain(id, async move {
            let status = manager.revert(fault_id, reason).await;
            let _ = done.send(Done {
                op: Op::Revert,
                status,
            });
        });
    }

    /// Fault ids with an operation that has not finished.
    pub(crate) fn in_flight(&mut self) -> BTreeSet<String> {
        self.tails.retain(|_, f| f.peek().is_none());
        self.tails.keys().cloned().collect()
    }

    fn chain(&mut self, id: String, op: impl std::future::Future<Output = ()> + Send + 'static) {
        let before = self.tails.remove(&id).filter(|f| f.peek().is_none());
        let next = async move {
            if let Some(before) = before {
                before.await;
            }
            op.await;
        }
        .boxed()
        .shared();
        tokio::spawn(next.clone());
        self.tails.insert(id, next);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::faults::{Call, RecordingManager};

    #[tokio::test(start_paused = true)]
    async fn one_fault_in_order_other_faults_beside() {
        let m = Arc::new(RecordingManager::new(&["cpu"]));
        m.delay_apply(Duration::from_secs(30));
        let (mut orders, mut done) = Orders::new(m.clone());
        let t0 = Instant::now();
        let req = |id: &str| pb::ApplyFault {
            fault_id: id.into(),
            remaining_ms: 60_000,
            ..Default::default()
        };
        orders.apply(req("slow"), t0);
        orders.revert("slow".into(), RevertReason::Abort);
        orders.revert("other".into(), RevertReason::Abort);
        let first = done.recv().await.expect("done");
        assert_eq!(
            (first.op, first.status.fault_id.as_str()),
            (Op::Revert, "other"),
            "another fault's revert waited for a slow apply"
        );
        assert_eq!(Instant::now(), t0, "the other revert took no time");
        assert_eq!(orders.in_flight(), BTreeSet::from(["slow".to_string()]));
        let second = done.recv().await.expect("done");
        let third = done.recv().await.expect("done");
        assert_eq!(
            [
                (second.op, second.status.fault_id),
                (third.op, third.status.fault_id)
            ],
            [(Op::Apply, "slow".into()), (Op::Revert, "slow".into())],
            "the revert of a fault waits for its apply"
        );
        assert_eq!(Instant::now(), t0 + Duration::from_secs(30));
        let calls = m.calls();
        assert!(
            matches!(calls.last(), Some((_, Call::Revert { fault_id, .. })) if fault_id == "slow")
        );
        assert!(orders.in_flight().is_empty());
    }
}
