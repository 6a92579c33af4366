//! When a session renews its agent's lease. A renewal answers the agent's telemetry: the
//! renewal's write then carries the TCP acknowledgement of the telemetry, and the session
//! wakes once per exchange instead of once for the telemetry and once more for a timer of its
//! own. With 10,000 sessions that is 10,000 timer wake-ups and 10,000 bare ACK segments a second
//! fewer (docs/benchmarks.md). A timer still renews when no telemetry comes in time, so the gap
//! between two renewals stays well inside the lease whatever the agent sends. Such a renewal
//! names the same telemetry as the one before it, and the agent counts a lease from when it
//! sent that telemetry (docs/architecture.md, "Lease semantics"): the timer keeps vouches and
//! reverts current, but only telemetry keeps the lease itself alive.

use std::time::Duration;

/// Renewal pacing for one lease and renew interval (both validated: 0 < interval < lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewPace {
    /// Telemetry arriving at least this long (3/4 of the interval) after the last renewal is
    /// answered with one: telemetry every interval is answered each time despite jitter, and
    /// telemetry more often than that does not make renewals more frequent than the interval.
    pub answer_after: Duration,
    /// With no telemetry answered, the timer renews this long after the last renewal:
    /// the renew interval plus a slack that lets telemetry sent every renew interval arrive
    /// first (both sides tick at the same period, so without it a session could lock into
    /// renewing on its timer just before each telemetry message).
    pub at_most: Duration,
}

impl RenewPace {
    /// The slack is half the interval, cut so that the longest gap stays half-way between the
    /// interval and the lease: with the defaults (5 s lease, 1 s interval) renewals are at most
    /// 1.5 s apart, and three in a row can be lost before the lease lapses.
    pub fn new(lease: Duration, interval: Duration) -> RenewPace {
        let slack = (interval / 2).min(lease.saturating_sub(interval) / 2);
        RenewPace {
            answer_after: interval * 3 / 4,
            at_most: interval + slack,
        }
    }

    /// Whether telemetry received `since` after the last renewal is answered with one.
    pub fn answers(&self, since: Duration) -> bool {
        since >= self.answer_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn defaults_answer_each_telemetry_and_fall_back_after_one_and_a_half_intervals() {
        let p = RenewPace::new(5 * S, S);
        assert_eq!(p.answer_after, S * 3 / 4);
        assert_eq!(p.at_most, S * 3 / 2);
        // Telemetry every second, arriving a little early or late: each is answered.
        assert!(p.answers(Duration::from_millis(990)));
        assert!(p.answers(Duration::from_millis(1010)));
        // A second message right after a renewal (a fault status, say) is not, nor telemetry
        // from an agent reporting every 500 ms: every other one of those is answered.
        assert!(!p.answers(Duration::from_millis(20)));
        assert!(!p.answers(Duration::from_millis(510)));
    }

    #[test]
    fn the_longest_gap_stays_inside_the_lease() {
        for (lease_ms, interval_ms) in [(1000, 100), (1000, 900), (2000, 1999), (60_000, 59_000)] {
            let lease = Duration::from_millis(lease_ms);
            let interval = Duration::from_millis(interval_ms);
            let p = RenewPace::new(lease, interval);
            assert!(p.at_most >= interval, "{p:?}");
            assert!(
                p.at_most <= interval + (lease - interval) / 2,
                "lease {lease_ms} ms, interval {interval_ms} ms: {p:?}"
            );
            assert!(p.at_most < lease, "{p:?}");
        }
    }
}
