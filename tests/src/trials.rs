//! Randomised trials: a seeded random number generator, and the number of trials and the seed
//! read from the environment, so that every run prints what repeats it.

use std::time::Duration;

/// splitmix64: tiny, and the same sequence for the same seed on every machine and every
/// version of this crate (a seed printed by a failed run keeps reproducing it).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`, in whole milliseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        assert!(lo <= hi, "Rng::between({lo} ms, {hi} ms)");
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// How many trials to run and from which seed.
#[derive(Debug, Clone, Copy)]
pub struct TrialPlan {
    pub trials: u64,
    pub seed: u64,
}

impl TrialPlan {
    /// Reads the trial count from `count_var` and the seed from `seed_var` (decimal, or hex
    /// with `0x`). Unset: `default_trials`, and `default_seed` or, when that is `None`, a seed
    /// from the clock. Prints both, as the variables that repeat this run. Panics naming the
    /// variable when a value does not parse.
    pub fn from_env(
        count_var: &str,
        seed_var: &str,
        default_trials: u64,
        default_seed: Option<u64>,
    ) -> TrialPlan {
        let trials = match std::env::var(count_var) {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                panic!("{count_var}={v:?} is not a number of trials (1 or more)")
            }),
            Err(_) => default_trials,
        };
        assert!(trials >= 1, "{count_var} must be 1 or more");
        let seed = match std::env::var(seed_var) {
            Ok(v) => parse_seed(&v).unwrap_or_else(|| {
                panic!("{seed_var}={v:?} is not a seed (a decimal number, or hex with 0x)")
            }),
            Err(_) => default_seed.unwrap_or_else(clock_seed),
        };
        eprintln!(
            "trials: {count_var}={trials} {seed_var}={seed:#x} (set both to repeat this run)"
        );
        TrialPlan { trials, seed }
    }

    pub fn rng(&self) -> Rng {
        Rng::new(self.seed)
    }
}

fn parse_seed(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Mixed once, so that runs started close together do not get near-equal seeds.
    Rng::new(nanos ^ u64::from(std::process::id())).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let lo = Duration::from_millis(10);
        let hi = Duration::from_millis(20);
        for _ in 0..1000 {
            let d = a.between(lo, hi);
            assert_eq!(d, b.between(lo, hi));
            assert!(d >= lo && d <= hi, "{d:?}");
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("17"), Some(17));
        assert_eq!(parse_seed(" 0x1f "), Some(31));
        assert_eq!(parse_seed("0XFF"), Some(255));
        assert_eq!(parse_seed("x"), None);
    }
}
