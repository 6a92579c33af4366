//! The lease: how long the coordinator vouches for this agent. One concept, two views:
//! - [`Lease`], the session's: when it ends on the monotonic clock, and whether it has lapsed
//!   (once per lapse); the session loop renews it on Welcome, LeaseRenewal and ApplyFault
//!   (counted from the telemetry they answer, see `session`);
//! - [`KernelLease`], the same end as the kernel-side deadlines see it: every held eBPF
//!   program ([`Renewable`]) cuts its map deadline to it, so a wedged agent's network faults end
//!   with the lease even when nothing in user space runs.
//!
//! The session lease:
//! Pure bookkeeping on `tokio::time::Instant`, so tests drive it with paused time. The session
//! loop renews it on Welcome, LeaseRenewal and ApplyFault, sleeps until [`Lease::deadline`],
//! and calls [`Lease::check_lapse`], which reports a lapse exactly once and then disarms the
//! lease until the next renewal (in a session with nothing held, that is all a lapse does).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Something holding kernel-side deadlines that follow the lease.
pub trait Renewable: Send + Sync {
    /// The lease now runs until `until`: rewrite every deadline as min(fault's, `until`).
    fn renew(&self, until: SystemTime);
}

#[derive(Default)]
struct KernelLeaseInner {
    until: Mutex<Option<SystemTime>>,
    holders: Mutex<Vec<Weak<dyn Renewable>>>,
}

/// The same lease as the kernel-side deadlines see it: the session renews it with the lease's
/// end on the wall clock (in force for new faults at once, [`KernelLease::extend`]; rewritten
/// into held ones on the engine's renewer thread, [`KernelLease::rewrite`]), and every eBPF
/// program's map deadline is cut to it. Cheap to clone (shared). Until the
/// first renewal (standalone runs have none) only the faults' own deadlines count.
#[derive(Clone, Default)]
pub struct KernelLease(Arc<KernelLeaseInner>);

impl std::fmt::Debug for KernelLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLease")
            .field("until", &self.until())
            .finish()
    }
}

impl KernelLease {
    pub fn new() -> Self {
        KernelLease::default()
    }

    /// The lease now runs until `until`; every holder rewrites its map deadlines. Blocking
    /// (a few bpf syscalls per fault): call it off the async executor.
    pub fn renew(&self, until: SystemTime) {
        self.extend(until);
        self.rewrite(until);
    }

    /// The lease now runs until `until` for faults applied from now on ([`KernelLease::bound`]);
    /// never blocks. The session calls it before an order can read the bound, so an apply
    /// that follows a renewal (or an ApplyFault that extended the lease) is never bounded by
    /// the lease's previous end.
    pub fn extend(&self, until: SystemTime) {
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Every holder rewrites its map deadlines to `until` (blocking).
    pub fn rewrite(&self, until: SystemTime) {
        let holders: Vec<Arc<dyn Renewable>> = {
            let mut hs = self.0.holders.lock().unwrap_or_else(|p| p.into_inner());
            hs.retain(|w| w.strong_count() > 0);
            hs.iter().filter_map(Weak::upgrade).collect()
        };
        for h in holders {
            h.renew(until);
        }
    }

    pub fn until(&self) -> Option<SystemTime> {
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel-side deadline for a fault ending at `deadline`.
    pub fn bound(&self, deadline: SystemTime) -> SystemTime {
        match self.until() {
            Some(u) => u.min(deadline),
            None => deadline,
        }
    }

    /// Registers a holder (kept weakly; dropped holders are forgotten).
    pub fn subscribe(&self, holder: Weak<dyn Renewable>) {
        self.0
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(holder);
    }
}

#[derive(Debug, Clone, Default)]
pub struct Lease {
    deadline: Option<Instant>,
    lapses: u64,
}

impl Lease {
    /// A lease that is not armed: nothing can lapse until the first renewal.
    pub fn new() -> Self {
        Lease::default()
    }

    /// Extends the lease to `now + lease`.
    pub fn renew(&mut self, now: Instant, lease: Duration) {
        self.deadline = Some(now + lease);
    }

    /// When the lease lapses, if it is armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True while the lease is armed and its deadline has not passed.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now < d)
    }

    /// Reports a lapse: true once when the deadline has passed (the lease is then disarmed, so the
    /// same lapse is never reported twice), false otherwise.
    pub fn check_lapse(&mut self, now: Instant) -> bool {
        match self.deadline {
            Some(d) if now >= d => {
                self.deadline = None;
                self.lapses += 1;
                true
            }
            _ => false,
        }
    }

    /// How many lapses were reported since this lease was created.
    pub fn lapses(&self) -> u64 {
        self.lapses
    }

    /// Completes when the lease lapses; never completes while the lease is not armed.
    pub async fn lapsed(&self) {
        match self.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unarmed_lease_never_lapses() {
        let mut lease = Lease::new();
        let now = Instant::now();
        assert!(!lease.is_valid(now));
        assert!(!lease.check_lapse(now + Duration::from_secs(3600)));
        assert_eq!(lease.deadline(), None);
        assert_eq!(lease.lapses(), 0);
    }

    #[test]
    fn lapses_once_at_the_deadline() {
        let mut lease = Lease::new();
        let t0 = Instant::now();
        lease.renew(t0, Duration::from_secs(5));
        assert_eq!(lease.deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(lease.is_valid(t0 + Duration::from_millis(4999)));
        assert!(!lease.check_lapse(t0 + Duration::from_millis(4999)));
        assert!(lease.check_lapse(t0 + Duration::from_secs(5)));
        assert!(!lease.is_valid(t0 + Duration::from_secs(5)));
        // The same lapse is reported once.
        assert!(!lease.check_lapse(t0 + Duration::from_secs(6)));
        assert_eq!(lease.lapses(), 1);
        // A renewal re-arms it, and the next lapse is counted again.
        lease.renew(t0 + Duration::from_secs(7), Duration::from_secs(1));
        assert!(lease.check_lapse(t0 + Duration::from_secs(8)));
        assert_eq!(lease.lapses(), 2);
    }

    #[test]
    fn renewals_push_the_deadline() {
        let mut lease = Lease::new();
        let t0 = Instant::now();
        for s in 0..10 {
            let now = t0 + Duration::from_secs(s);
            assert!(!lease.check_lapse(now), "renewed every second, at {s}s");
            lease.renew(now, Duration::from_secs(5));
        }
        assert!(lease.is_valid(t0 + Duration::from_secs(13)));
        assert!(lease.check_lapse(t0 + Duration::from_secs(14)));
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_future_wakes_at_the_deadline() {
        let mut lease = Lease::new();
        let t0 = Instant::now();
        lease.renew(t0, Duration::from_millis(1500));
        lease.lapsed().await;
        assert_eq!(Instant::now() - t0, Duration::from_millis(1500));
        assert!(lease.check_lapse(Instant::now()));
        let never = tokio::time::timeout(Duration::from_secs(60), lease.lapsed()).await;
        assert!(never.is_err(), "a disarmed lease does not lapse again");
    }
}
