//! The queue from the agents' sessions to one running experiment: bounded, never waits, and
//! loses no status.
//!
//! Up to [`STATUS_QUEUE`] messages wait in arrival order. Beyond that, a message replaces the
//! waiting one of the same key — the latest status per (agent, fault, state), the latest Hello
//! per agent — and keys keep their first arrival order. The table routes to a run only the
//! statuses of its own faults from the agents that hold them, so the overflow holds at most
//! four messages per target and one per agent: a flood costs a fixed amount of memory, and
//! every change of state (applied, failed, reverted) still reaches the run, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use faultline_proto::pb;
use tokio::sync::Notify;

use super::events;
use super::run::FromAgent;

/// Messages a run's queue holds before it starts keeping only the latest per key.
pub const STATUS_QUEUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Status {
        node: String,
        fault_id: String,
        /// A known `FaultState`, or 0 for anything else.
        state: i32,
    },
    Back {
        node: String,
    },
}

fn key(msg: &FromAgent) -> Key {
    match msg {
        FromAgent::Status(node, s) => Key::Status {
            node: node.clone(),
            fault_id: s.fault_id.clone(),
            state: pb::FaultState::try_from(s.state).map_or(0, |st| st as i32),
        },
        FromAgent::Back { node, .. } => Key::Back { node: node.clone() },
    }
}

#[derive(Debug, Default)]
struct Queue {
    fifo: VecDeque<FromAgent>,
    /// Overflow: keys in first-arrival order, and the latest message of each.
    order: VecDeque<Key>,
    latest: HashMap<Key, FromAgent>,
}

/// One run's inbound queue: any number of senders (sessions), one receiver (the run).
#[derive(Debug, Default)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg`; never waits. Once the queue is full (and until the overflow is drained),
    /// it replaces the waiting message with the same key.
    pub fn push(&self, msg: FromAgent) {
        let mut coalesced = false;
        {
            let mut q = self.lock();
            if q.order.is_empty() && q.fifo.len() < STATUS_QUEUE {
                q.fifo.push_back(msg);
            } else {
                let k = key(&msg);
                if q.latest.insert(k.clone(), msg).is_some() {
                    coalesced = true;
                } else {
                    q.order.push_back(k);
                }
            }
        }
        if coalesced {
            events::status_coalesced();
        }
        self.notify.notify_one();
    }

    /// The next message, if one waits.
    pub fn try_pop(&self) -> Option<FromAgent> {
        let mut q = self.lock();
        if let Some(m) = q.fifo.pop_front() {
            return Some(m);
        }
        while let Some(k) = q.order.pop_front() {
            if let Some(m) = q.latest.remove(&k) {
                return Some(m);
            }
        }
        None
    }

    /// Waits for the next message. Cancel-safe: a message is taken only when this returns.
    pub async fn recv(&self) -> FromAgent {
        loop {
            if let Some(m) = self.try_pop() {
                return m;
            }
            self.notify.notified().await;
        }
    }

    /// Messages waiting (in order and in the overflow).
    pub fn len(&self) -> usize {
        let q = self.lock();
        q.fifo.len() + q.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: &str, fault: &str, state: pb::FaultState, n: u64) -> FromAgent {
        FromAgent::Status(
            node.into(),
            pb::FaultStatus {
                fault_id: fault.into(),
                state: state as i32,
                counters: [("n".to_string(), n)].into(),
                ..Default::default()
            },
        )
    }

    fn describe(m: &FromAgent) -> (String, String, i32, u64) {
        match m {
            FromAgent::Status(node, s) => (
                node.clone(),
                s.fault_id.clone(),
                s.state,
                s.counters.get("n").copied().unwrap_or(0),
            ),
            FromAgent::Back { node, .. } => (node.clone(), "hello".into(), -1, 0),
        }
    }

    #[test]
    fn a_flood_is_bounded_and_every_change_of_state_comes_through_in_order() {
        let mb = Mailbox::default();
        // One agent reports its own fault a million times (as a buggy agent might)...
        for n in 0..1_000_000u64 {
            mb.push(status("node-a", "f1", pb::FaultState::Applied, n));
        }
        // ... then it fails, then reverts; and another agent says Hello.
        mb.push(status("node-a", "f1", pb::FaultState::Failed, 1));
        mb.push(status("node-a", "f1", pb::FaultState::Reverted, 2));
        mb.push(FromAgent::Back {
            node: "node-b".into(),
            held: vec![],
            at: 1,
        });
        mb.push(status("node-a", "f1", pb::FaultState::Applied, 7));
        assert_eq!(
            mb.len(),
            STATUS_QUEUE + 4,
            "the queue, plus one per (agent, fault, state) and one per Hello"
        );
        let mut got = Vec::new();
        while let Some(m) = mb.try_pop() {
            got.push(describe(&m));
        }
        assert_eq!(got.len(), STATUS_QUEUE + 4);
        // In order: the first STATUS_QUEUE as they came, then the overflow by first arrival,
        // each with its latest content.
        assert_eq!(got[0], ("node-a".into(), "f1".into(), 1, 0));
        assert_eq!(
            got[STATUS_QUEUE - 1],
            ("node-a".into(), "f1".into(), 1, STATUS_QUEUE as u64 - 1)
        );
        assert_eq!(
            &got[STATUS_QUEUE..],
            [
                ("node-a".into(), "f1".into(), 1, 7),
                ("node-a".into(), "f1".into(), 3, 1),
                ("node-a".into(), "f1".into(), 2, 2),
                ("node-b".into(), "hello".into(), -1, 0),
            ]
        );
        assert!(mb.is_empty());
        // Drained: new messages queue in order again.
        mb.push(status("node-a", "f2", pb::FaultState::Applied, 1));
        mb.push(status("node-a", "f2", pb::FaultState::Applied, 2));
        assert_eq!(mb.len(), 2);
    }

    #[test]
    fn unknown_states_share_one_key() {
        let mb = Mailbox::default();
        for _ in 0..STATUS_QUEUE {
            mb.push(status("node-a", "f1", pb::FaultState::Applied, 0));
        }
        for state in 4..10_000 {
            let mut m = status("node-a", "f1", pb::FaultState::Applied, 0);
            if let FromAgent::Status(_, s) = &mut m {
                s.state = state;
            }
            mb.push(m);
        }
        assert_eq!(mb.len(), STATUS_QUEUE + 1);
    }

    #[tokio::test]
    async fn recv_wakes_on_push_and_survives_cancellation() {
        let mb = std::sync::Arc::new(Mailbox::default());
        // A recv that is cancelled takes nothing.
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(20), mb.recv()).await;
        assert!(cancelled.is_err());
        let sender = mb.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            sender.push(status("node-a", "f1", pb::FaultState::Reverted, 5));
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), mb.recv())
            .await
            .expect("woken by the push");
        assert_eq!(describe(&got), ("node-a".into(), "f1".into(), 2, 5));
        task.await.expect("sender");
    }
}
