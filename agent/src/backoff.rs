//! Reconnect delays: exponential backoff with full jitter, capped, reset after a good session.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The first retry window.
pub const INITIAL: Duration = Duration::from_millis(100);

/// Delay before attempt `n` is uniform in `[0, min(cap, INITIAL * 2^n)]` ("full jitter"), so a
/// fleet that lost its coordinator at the same moment does not reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff seeded from the operating system.
    pub fn new(cap: Duration) -> Self {
        Self::with_rng(cap, StdRng::from_rng(&mut rand::rng()))
    }

    /// A deterministic backoff for tests.
    pub fn seeded(cap: Duration, seed: u64) -> Self {
        Self::with_rng(cap, StdRng::seed_from_u64(seed))
    }

    fn with_rng(cap: Duration, rng: StdRng) -> Self {
        Backoff {
            initial: INITIAL.min(cap),
            cap,
            attempt: 0,
            rng,
        }
    }

    /// The upper bound of the next delay.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; widens the window for the one after.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_within(None)
    }

    /// Like [`Backoff::next_delay`], with the window narrowed to `limit` when given: while a
    /// lease still holds faults, the agent paces its attempts to what is left of it (the jitter
    /// stays full inside the narrower window, so a fleet still spreads out).
    pub fn next_delay_within(&mut self, limit: Option<Duration>) -> Duration {
        let window = limit.map_or(self.window(), |l| self.window().min(l));
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.random_range(0..=millis))
    }

    /// Back to the initial window (after a session that got its Welcome).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(3);

    #[test]
    fn a_limit_narrows_the_window_but_keeps_the_backoff_growing() {
        let mut b = Backoff::seeded(CAP, 3);
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.window(), CAP);
        let limit = Duration::from_millis(250);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay_within(Some(limit))).collect();
        assert!(delays.iter().all(|d| *d <= limit), "{delays:?}");
        // Still jittered over the whole narrower window, not clipped to one value.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(80)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(170)));
        assert_eq!(b.window(), CAP, "the unlimited window is unchanged");
    }

    #[test]
    fn windows_double_up_to_the_cap() {
        let mut b = Backoff::seeded(CAP, 1);
        let windows: Vec<u64> = (0..8)
            .map(|_| {
                let w = b.window();
                b.next_delay();
                w.as_millis() as u64
            })
            .collect();
        assert_eq!(windows, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.window(), CAP, "no overflow after many attempts");
    }

    #[test]
    fn delays_stay_within_zero_and_the_window() {
        let mut b = Backoff::seeded(CAP, 42);
        for _ in 0..1000 {
            let window = b.window();
            let d = b.next_delay();
            assert!(d <= window && d <= CAP, "{d:?} > {window:?}");
        }
    }

    #[test]
    fn delays_grow_on_average() {
        // Mean delay of the n-th attempt over many seeded runs: about half the window.
        let mean_of_attempt = |n: usize| {
            let total: Duration = (0..500u64)
                .map(|seed| {
                    let mut b = Backoff::seeded(CAP, seed);
                    (0..n).for_each(|_| {
                        b.next_delay();
                    });
                    b.next_delay()
                })
                .sum();
            total / 500
        };
        let means: Vec<Duration> = (0..6).map(mean_of_attempt).collect();
        for pair in means.windows(2) {
            assert!(pair[1] > pair[0], "means should grow: {means:?}");
        }
        assert!(means[0] < Duration::from_millis(70), "{means:?}");
        assert!(means[5] > Duration::from_millis(1200), "{means:?}");
    }

    #[test]
    fn reset_returns_to_the_initial_window() {
        let mut b = Backoff::seeded(CAP, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.window(), CAP);
        b.reset();
        assert_eq!(b.window(), INITIAL);
        assert!(b.next_delay() <= INITIAL);
        assert_eq!(b.window(), INITIAL * 2);
    }

    #[test]
    fn same_seed_same_sequence() {
        let seq = |seed| {
            let mut b = Backoff::seeded(CAP, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(seq(9), seq(9));
        assert_ne!(seq(9), seq(10));
    }

    #[test]
    fn a_cap_below_the_initial_window_wins() {
        let mut b = Backoff::seeded(Duration::from_millis(30), 3);
        assert_eq!(b.window(), Duration::from_millis(30));
        assert!(b.next_delay() <= Duration::from_millis(30));
    }
}
