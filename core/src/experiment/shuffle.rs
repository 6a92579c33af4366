//! A stable shuffle seeded by the experiment name, so a dry run and the real run pick the same
//! agents out of the same fleet.

use super::phase::fnv1a;

/// SplitMix64: small, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0), without modulo bias worth caring about for fleet sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Fisher-Yates over `items` (already in a canonical order), seeded by `seed_text`.
pub fn stable_shuffle<T>(items: &mut [T], seed_text: &str) {
    let mut rng = SplitMix64::new(fnv1a(&[seed_text.as_bytes()]));
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_order_and_a_permutation() {
        let base: Vec<u32> = (0..50).collect();
        let mut a = base.clone();
        let mut b = base.clone();
        stable_shuffle(&mut a, "checkout-loss");
        stable_shuffle(&mut b, "checkout-loss");
        assert_eq!(a, b);
        assert_ne!(
            a, base,
            "50 items stay in order with negligible probability"
        );
        let mut c = base.clone();
        stable_shuffle(&mut c, "other-name");
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, base);
    }
}
