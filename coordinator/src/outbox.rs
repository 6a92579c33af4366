//! A session's outbound queue: the stream tonic sends to the agent. The session task queues
//! its own messages (Welcome, lease renewals, RevertAll, certificates, the status that ends
//! the stream); experiment runs push ApplyFault and RevertFault straight in, without a hop
//! through the session task (at 10,000 agents that hop was a large part of a fan-out's
//! second, docs/benchmarks.md). Three rules keep what one task forwarding everything gave by
//! construction:
//!
//! - an order waits until the session has queued its Welcome (and a halted fleet's
//!   RevertAll): nothing overtakes them;
//! - a renewal's vouched list is computed and queued under the lock an order is queued under,
//!   and a run vouches for a fault before it pushes its order, so a renewal that follows an
//!   ApplyFault on the stream always names that fault;
//! - once the session has ended, a push fails; one that raced the end is reported as perhaps
//!   not sent (what tonic queued behind the final status is never sent).
//!
//! A renewal is told whether an order was queued since the previous one (under the same lock),
//! so a session may leave out a renewal that would repeat "vouched for nothing" to an idle
//! agent (session.rs) without ever leaving out the one that follows an order.
//!
//! The session records the latest telemetry sequence it heard ([`Outbox::heard`]); every
//! ApplyFault is stamped with it as it is queued, and the session's renewals carry it, so the
//! agent counts the lease they grant from when it sent that telemetry (the anchor rule in the
//! agent's session).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// One message of the outbound stream: a message, or the status that ends the stream.
pub type OutMsg = Result<pb::CoordinatorMessage, Status>;

/// Why a push did not (certainly) reach the stream.
pub const ENDED: &str = "the agent's session ended";

#[derive(Debug)]
pub struct Outbox {
    /// Boxed: a tokio channel allocates its slots 32 at a time, and 32 unboxed messages are
    /// 14 KiB per session.
    queue: mpsc::Sender<Box<OutMsg>>,
    /// Held while an order, or a renewal with its vouched list, is queued.
    order: Mutex<()>,
    /// An order was queued since the last renewal (changed under `order`).
    ordered: AtomicBool,
    /// The latest telemetry sequence heard on this session (0: none yet).
    heard: AtomicU64,
    welcomed: AtomicBool,
    ended: AtomicBool,
    /// Wakes pushes waiting for the Welcome (or the end).
    changed: Notify,
}

impl Outbox {
    /// A queue of `capacity` messages, and the receiver tonic's response stream reads.
    pub fn new(capacity: usize) -> (Arc<Outbox>, mpsc::Receiver<Box<OutMsg>>) {
        let (queue, rx) = mpsc::channel(capacity);
        let outbox = Outbox {
            queue,
            order: Mutex::new(()),
            ordered: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            welcomed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            changed: Notify::new(),
        };
        (Arc::new(outbox), rx)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's own messages, which need neither the Welcome gate nor the order lock.
    pub fn sender(&self) -> &mpsc::Sender<Box<OutMsg>> {
        &self.queue
    }

    /// The session has queued its Welcome: orders may follow.
    pub fn welcomed(&self) {
        self.welcomed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// The session is over: pushes fail from now on.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Ends the session and queues the status that ends the stream (dropped when the queue is
    /// full: the agent stopped reading, and the connection's end tells it as much).
    pub fn close(&self, status: Status) {
        self.end();
        let _ = self.queue.try_send(Box::new(Err(status)));
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The session heard telemetry numbered `sequence` (0, from an agent that does not number
    /// it, changes nothing).
    pub fn heard(&self, sequence: u64) {
        if sequence > 0 {
            self.heard.fetch_max(sequence, Ordering::SeqCst);
        }
    }

    /// The latest telemetry sequence heard on this session.
    pub fn last_heard(&self) -> u64 {
        self.heard.load(Ordering::SeqCst)
    }

    /// Completes once the session was welcomed or has ended.
    async fn settled(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the checks, so a change between them is not missed.
            changed.as_mut().enable();
            if self.welcomed.load(Ordering::SeqCst) || self.is_ended() {
                return;
            }
            changed.await;
        }
    }

    /// Queues an order for the agent, waiting up to `limit` for the Welcome and for room.
    pub async fn push(&self, mut msg: CoordMsg, limit: Duration) -> Result<(), String> {
        if self.is_ended() {
            return Err(ENDED.into());
        }
        // Stamped with what was heard before the order was made: never newer than that.
        if let CoordMsg::Apply(a) = &mut msg {
            a.telemetry_sequence = self.last_heard();
        }
        let msg = Box::new(Ok(pb::CoordinatorMessage { msg: Some(msg) }));
        // Nearly always the session is welcomed and has room: then no timer (10,000 of them
        // per fan-out were a measurable share of it).
        if self.welcomed.load(Ordering::SeqCst) {
            match self.queue.try_reserve() {
                Ok(permit) => {
                    let _order = self.lock();
                    permit.send(msg);
                    self.ordered.store(true, Ordering::SeqCst);
                    return self.queued();
                }
                Err(TrySendError::Closed(())) => return Err(ENDED.into()),
                Err(TrySendError::Full(())) => {}
            }
        }
        let reserved = tokio::time::timeout(limit, async {
            self.settled().await;
            if self.is_ended() {
                return None;
            }
            self.queue.reserve().await.ok()
        })
        .await;
        match reserved {
            Ok(Some(permit)) => {
                let _order = self.lock();
                permit.send(msg);
                self.ordered.store(true, Ordering::SeqCst);
                self.queued()
            }
            Ok(None) => Err(ENDED.into()),
            Err(_) => Err(format!(
                "the agent's session did not take the message within {limit:?}"
            )),
        }
    }

    /// After an order was queued: a session that ended meanwhile may have closed its stream
    /// before the order (the session marks the end before it queues the final status).
    fn queued(&self) -> Result<(), String> {
        if self.is_ended() {
            return Err(format!(
                "{ENDED} as the message was queued; it may not have gone out"
            ));
        }
        Ok(())
    }

    /// Room for one message: at once when there is some, else waiting up to `limit`, less if
    /// `stop` is cancelled first. `None` when there is none (or the stream is gone). The wait
    /// is boxed: rarely taken, and unboxed its timer and reservation would make every
    /// session's task larger (docs/benchmarks.md).
    async fn reserve(
        &self,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Option<mpsc::Permit<'_, Box<OutMsg>>> {
        match self.queue.try_reserve() {
            Ok(p) => Some(p),
            Err(TrySendError::Closed(())) => None,
            Err(TrySendError::Full(())) => {
                Box::pin(async {
                    tokio::select! {
                        r = tokio::time::timeout(limit, self.queue.reserve()) => r.ok()?.ok(),
                        () = stop.cancelled() => None,
                    }
                })
                .await
            }
        }
    }

    /// Queues one of the session's own messages (its Welcome, a RevertAll, a refusal's
    /// status), which need neither the Welcome gate nor the order lock; waits as
    /// [`Outbox::reserve`] does. False when it was not queued.
    pub async fn send(&self, msg: OutMsg, limit: Duration, stop: &CancellationToken) -> bool {
        let Some(permit) = self.reserve(limit, stop).await else {
            return false;
        };
        permit.send(Box::new(msg));
        true
    }

    /// Queues a lease renewal made by `make` under the order lock; waits as
    /// [`Outbox::reserve`] does. `make` reads the vouched faults, is told whether an order was
    /// queued since the previous renewal, and may decide there is nothing to send.
    pub async fn renewal(
        &self,
        make: impl FnOnce(bool) -> Option<CoordMsg>,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Renewal {
        let Some(permit) = self.reserve(limit, stop).await else {
            return Renewal::Failed;
        };
        let _order = self.lock();
        let ordered = self.ordered.swap(false, Ordering::SeqCst);
        match make(ordered) {
            Some(msg) => {
                permit.send(Box::new(Ok(pb::CoordinatorMessage { msg: Some(msg) })));
                Renewal::Sent
            }
            None => {
                // Not sent, so the next renewal still has to follow the order.
                self.ordered.store(ordered, Ordering::SeqCst);
                Renewal::Skipped
            }
        }
    }
}

/// What [`Outbox::renewal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Sent,
    /// `make` decided there was nothing to send.
    Skipped,
    /// There was no room (or no stream) for it.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> CoordMsg {
        CoordMsg::Revert(pb::RevertFault {
            fault_id: id.into(),
            reason: 0,
        })
    }

    fn fault_of(m: &OutMsg) -> Option<String> {
        match m.as_ref().ok()?.msg.as_ref()? {
            CoordMsg::Revert(r) => Some(r.fault_id.clone()),
            CoordMsg::Welcome(w) => Some(format!("welcome {}", w.session_id)),
            _ => None,
        }
    }

    /// A push of an order for `id` on a task of its own, waiting up to `secs`.
    fn spawn_push(
        outbox: &Arc<Outbox>,
        id: &'static str,
        secs: u64,
    ) -> tokio::task::JoinHandle<Result<(), String>> {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.push(order(id), Duration::from_secs(secs)).await })
    }

    /// An order pushed before the Welcome waits for it, then follows it.
    #[tokio::test]
    async fn an_order_never_overtakes_the_welcome() {
        let (outbox, mut rx) = Outbox::new(8);
        let pushing = spawn_push(&outbox, "f1", 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "nothing queued before the Welcome");
        let welcome = CoordMsg::Welcome(pb::Welcome {
            session_id: "s1".into(),
            ..Default::default()
        });
        outbox
            .sender()
            .try_send(Box::new(Ok(pb::CoordinatorMessage { msg: Some(welcome) })))
            .expect("room");
        outbox.welcomed();
        assert_eq!(pushing.await.expect("task"), Ok(()));
        let first = rx.recv().await.expect("first");
        let second = rx.recv().await.expect("second");
        assert_eq!(fault_of(&first).as_deref(), Some("welcome s1"));
        assert_eq!(fault_of(&second).as_deref(), Some("f1"));
    }

    /// A session that ends before its Welcome fails the orders waiting for it at once, and
    /// every later push fails without queueing.
    #[tokio::test]
    async fn an_ended_session_fails_pushes() {
        let (outbox, mut rx) = Outbox::new(8);
        let waiting = spawn_push(&outbox, "f1", 30);
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.close(Status::aborted("replaced"));
        let r = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the waiting push ends with the session")
            .expect("task");
        assert_eq!(r, Err(ENDED.to_string()));
        outbox.welcomed();
        assert_eq!(
            outbox.push(order("f2"), Duration::from_secs(1)).await,
            Err(ENDED.to_string())
        );
        let only = rx.recv().await.expect("the final status");
        assert_eq!(only.expect_err("a status").code(), tonic::Code::Aborted);
        assert!(rx.try_recv().is_err(), "no order behind the final status");
    }

    /// A full queue makes a push wait up to its limit and say so.
    #[tokio::test]
    async fn a_full_queue_times_a_push_out() {
        let (outbox, _rx) = Outbox::new(1);
        outbox.welcomed();
        assert_eq!(
            outbox.push(order("f1"), Duration::from_secs(1)).await,
            Ok(())
        );
        let e = outbox
            .push(order("f2"), Duration::from_millis(50))
            .await
            .expect_err("no room");
        assert!(e.contains("did not take the message within"), "{e}");
    }

    /// A run vouches for a fault and pushes its order while a renewal is reading its list:
    /// the order waits for the renewal to be queued, so the renewal that omits the fault is
    /// ahead of the order on the stream, never behind it (the agent would revert the fault).
    /// Without the order lock the order would be queued first here.
    #[tokio::test]
    async fn an_order_pushed_while_a_renewal_is_made_goes_after_it() {
        let (outbox, mut rx) = Outbox::new(8);
        outbox.welcomed();
        let pusher = outbox.clone();
        let mut run = None;
        let make = |_ordered| {
            // The list is read (without f2), then the run pushes f2's order meanwhile.
            let omitted = Vec::new();
            run = Some(std::thread::spawn(move || {
                futures::executor::block_on(pusher.push(order("f2"), Duration::from_secs(5)))
            }));
            std::thread::sleep(Duration::from_millis(100));
            Some(CoordMsg::Lease(pb::LeaseRenewal {
                vouched_fault_ids: omitted,
                ..Default::default()
            }))
        };
        let queued = outbox
            .renewal(make, Duration::from_secs(1), &CancellationToken::new())
            .await;
        assert_eq!(queued, Renewal::Sent);
        let pushed = run.expect("started").join().expect("thread");
        assert_eq!(pushed, Ok(()));
        let first = rx.recv().await.expect("first").expect("ok");
        assert!(
            matches!(first.msg, Some(CoordMsg::Lease(_))),
            "the renewal first: {first:?}"
        );
        let second = rx.recv().await.expect("second");
        assert_eq!(fault_of(&second).as_deref(), Some("f2"));
    }

    /// Each renewal is told whether an order was queued since the one before; a renewal left
    /// out does not count, so the next one is told again.
    #[tokio::test]
    async fn a_renewal_knows_whether_an_order_came_since_the_last_one_sent() {
        let (outbox, mut rx) = Outbox::new(8);
        outbox.welcomed();
        let stop = CancellationToken::new();
        let limit = Duration::from_secs(1);
        let seen = std::sync::Mutex::new(Vec::new());
        let renew = |send: bool| {
            let seen = &seen;
            move |ordered: bool| {
                seen.lock().expect("lock").push(ordered);
                send.then(|| CoordMsg::Lease(pb::LeaseRenewal::default()))
            }
        };
        assert_eq!(
            outbox.renewal(renew(true), limit, &stop).await,
            Renewal::Sent
        );
        outbox.push(order("f1"), limit).await.expect("push");
        assert_eq!(
            outbox.renewal(renew(false), limit, &stop).await,
            Renewal::Skipped
        );
        assert_eq!(
            outbox.renewal(renew(true), limit, &stop).await,
            Renewal::Sent
        );
        assert_eq!(
            outbox.renewal(renew(false), limit, &stop).await,
            Renewal::Skipped
        );
        assert_eq!(*seen.lock().expect("lock"), [false, true, true, false]);
        // On the stream: the first renewal, the order, the renewal that followed it.
        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| match m.expect("ok").msg {
                Some(CoordMsg::Lease(_)) => "lease",
                Some(CoordMsg::Revert(_)) => "order",
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["lease", "order", "lease"]);
    }
}
