//! Kernel-side lease renewals on one thread of their own. Each Welcome, renewal and fault order
//! sets the bound for new faults at once ([`Renewer::renew`]) and here rewrites
//! the deadline in the map of every held eBPF program (a few bpf syscalls per fault); doing that
//! on the blocking pool once per renewal would let a stuck renewal (a driver lock held by a hung
//! netlink call) pile up a blocked thread every second until the pool is exhausted and nothing
//! else in the agent can run. One thread takes only the latest deadline, so a stuck renewal
//! costs one thread, and later renewals coalesce behind it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

#[derive(Default)]
struct Slot {
    next: Option<SystemTime>,
    stop: bool,
}

/// The handle the engine keeps; dropping it stops the thread.
pub(super) struct Renewer {
    slot: Arc<(Mutex<Slot>, Condvar)>,
    /// `None` when the thread could not start: then nothing follows the lease, and new faults
    /// must not be bounded by it either (held ones would never be rewritten).
    lease: Option<crate::lease::KernelLease>,
}

impl Renewer {
    /// Starts the thread that applies the latest lease end to `lease`.
    pub(super) fn start(lease: crate::lease::KernelLease) -> Renewer {
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let theirs = slot.clone();
        let ours = lease.clone();
        let spawned = std::thread::Builder::new()
            .name("faultline-lease".into())
            .spawn(move || {
                let (lock, wake) = &*theirs;
                loop {
                    let until = {
                        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while s.next.is_none() && !s.stop {
                            s = wake.wait(s).unwrap_or_else(|p| p.into_inner());
                        }
                        if s.stop {
                            return;
                        }
                        s.next.take()
                    };
                    if let Some(until) = until {
                        lease.rewrite(until);
                    }
                }
            });
        let lease = match spawned {
            Ok(_) => Some(ours),
            Err(e) => {
                tracing::error!("cannot start the lease renewal thread: {e}; kernel-side deadlines stay at each fault's own end");
                None
            }
        };
        Renewer { slot, lease }
    }

    /// The lease now runs until `until`; never blocks. The end is in force for new faults
    /// when this returns; held faults' map deadlines follow on the thread.
    pub(super) fn renew(&self, until: SystemTime) {
        let Some(lease) = &self.lease else {
            return;
        };
        lease.extend(until);
        let (lock, wake) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).next = Some(until);
        wake.notify_one();
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Weak};
    use std::time::Duration;

    use super::*;
    use crate::lease::{KernelLease, Renewable};

    /// A holder whose first rewrite blocks until released (a driver lock held by a hung call).
    struct Stuck {
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl Renewable for Stuck {
        fn renew(&self, _until: SystemTime) {
            if let Some(tx) = self.entered.lock().expect("lock").take() {
                let _ = tx.send(());
                if let Some(rx) = self.release.lock().expect("lock").take() {
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                }
            }
        }
    }

    /// A renewal's end bounds new faults as soon as `renew` returns, even while the thread
    /// is stuck rewriting held faults: an order that follows it is never bounded by the
    /// lease's previous end (which, after an idle spell, is long past).
    #[test]
    fn a_renewal_bounds_new_faults_at_once_even_with_the_thread_stuck() {
        let lease = KernelLease::new();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let stuck: Arc<dyn Renewable> = Arc::new(Stuck {
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(Some(release_rx)),
        });
        lease.subscribe(Arc::downgrade(&stuck) as Weak<dyn Renewable>);
        let r = Renewer::start(lease.clone());
        let t0 = SystemTime::now();
        r.renew(t0 + Duration::from_secs(5));
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the thread rewrites the holder");
        let later = t0 + Duration::from_secs(60);
        r.renew(later);
        assert_eq!(
            lease.until(),
            Some(later),
            "in force before the thread gets to it"
        );
        let deadline = later + Duration::from_secs(3600);
        assert_eq!(lease.bound(deadline), later);
        release.send(()).expect("release");
    }
}
