//! Kernel-side lease renewals on one thread of their own. Each Welcome and renewal rewrites
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
}

impl Renewer {
    /// Starts the thread that applies the latest lease end to `lease`.
    pub(super) fn start(lease: crate::lease::KernelLease) -> Renewer {
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let theirs = slot.clone();
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
                        lease.renew(until);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the lease renewal thread: {e}; kernel-side deadlines stay at each fault's own end");
        }
        Renewer { slot }
    }

    /// The lease now runs until `until`; never blocks.
    pub(super) fn renew(&self, until: SystemTime) {
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
