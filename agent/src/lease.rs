//! The session lease: when it ends, and whether it has lapsed (once per lapse).
//!
//! Pure bookkeeping on `tokio::time::Instant`, so tests drive it with paused time. The session
//! loop renews it on Welcome and every LeaseRenewal, sleeps until [`Lease::deadline`], and calls
//! [`Lease::check_lapse`], which reports a lapse exactly once and then disarms the lease until
//! the next renewal.

use std::time::Duration;

use tokio::time::Instant;

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
