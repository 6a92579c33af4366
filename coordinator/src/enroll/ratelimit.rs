//! Enrollment attempts per source address: a token bucket per IP, so guessing tokens (or
//! hammering the issuer) from one address is slow and cheap to refuse. Refused attempts cost
//! nothing more than a map lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default attempts per minute and per source address (also the burst).
pub const DEFAULT_ATTEMPTS_PER_MINUTE: u32 = 30;
/// Addresses remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` attempts a minute, with a burst of as many (at least 1).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one attempt for `ip` at `now`; `Err(wait)` when none is left.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let cap = f64::from(self.per_minute);
        let per_sec = cap / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            // Forget addresses whose bucket has refilled: they owe nothing.
            buckets.retain(|_, (level, at)| {
                *level + now.saturating_duration_since(*at).as_secs_f64() * per_sec < cap
            });
        }
        let (level, at) = buckets.entry(ip).or_insert((cap, now));
        let refilled =
            (*level + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if refilled >= 1.0 {
            *level = refilled - 1.0;
            Ok(())
        } else {
            *level = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_per_address() {
        let r = RateLimiter::new(6); // one every 10 s
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..6 {
            assert!(r.attempt(a, t0).is_ok(), "attempt {i}");
        }
        let wait = r.attempt(a, t0).expect_err("7th");
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // Another address has its own bucket.
        assert!(r.attempt(b, t0).is_ok());
        // After 10 s one more attempt.
        assert!(r.attempt(a, t0 + Duration::from_secs(10)).is_ok());
        assert!(r.attempt(a, t0 + Duration::from_secs(10)).is_err());
    }
}
