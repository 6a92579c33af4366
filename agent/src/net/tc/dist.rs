//! netem's delay distribution tables (`TCA_NETEM_DELAY_DIST`), generated at run time the same
//! way iproute2 generates the `normal.dist`, `pareto.dist` and `paretonormal.dist` files it
//! ships (its `normal.c`, `pareto.c`, `paretonormal.c`), so the agent needs no iproute2 on the
//! node; a test checks the tables against iproute2's files value for value. `uniform` has no
//! table: netem draws uniformly when it is given none.

use std::sync::OnceLock;

use faultline_core::fault::Distribution;

/// Entries of a table (iproute2's TABLESIZE 16384, every fourth inverse-CDF point).
pub const TABLE_LEN: usize = 4096;
/// `NETEM_DIST_SCALE`: a table value of 8192 is one standard deviation (the jitter).
const SCALE: f64 = 8192.0;
const CDF_POINTS: usize = 16384;
/// Shape of the Pareto distribution iproute2 uses.
const PARETO_A: f64 = 3.0;

/// The table for `d`, or `None` for `uniform` (netem's built-in uniform jitter).
pub fn table(d: Distribution) -> Option<&'static [i16]> {
    static NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO_NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    match d {
        Distribution::Uniform => None,
        Distribution::Normal => Some(NORMAL.get_or_init(normal)),
        Distribution::Pareto => Some(PARETO.get_or_init(pareto)),
        Distribution::ParetoNormal => Some(PARETO_NORMAL.get_or_init(pareto_normal)),
    }
}

fn clamp16(v: i64) -> i16 {
    v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// The standard normal inverse CDF sampled at `CDF_POINTS + 1` points: for each point, the
/// last `x` of a fine walk over [-10, 10.05) whose CDF rounds to it.
fn normal_inverse_cdf() -> Vec<f64> {
    let mut table = vec![0.0f64; CDF_POINTS + 1];
    let mut x = -10.0f64;
    while x < 10.05 {
        let cdf = 0.5 + 0.5 * libm::erf(x / 2.0f64.sqrt());
        let i = (CDF_POINTS as f64 * cdf).round_ties_even() as usize;
        if let Some(slot) = table.get_mut(i) {
            *slot = x;
        }
        x += 0.00005;
    }
    table
}

fn normal_value(inverse_cdf: &[f64], i: usize) -> i64 {
    (inverse_cdf[i] * SCALE).round_ties_even() as i64
}

/// The Pareto table value for `i` in 65536ths of the way down the CDF.
fn pareto_value(i: i64) -> i64 {
    let p = i as f64 / 65536.0;
    let v = (1.0 / p.powf(1.0 / PARETO_A) - 1.5) * (4.0 / 3.0) * SCALE;
    v.min(32767.0).round_ties_even() as i64
}

fn normal() -> Vec<i16> {
    let inv = normal_inverse_cdf();
    (0..CDF_POINTS)
        .step_by(4)
        .map(|i| clamp16(normal_value(&inv, i)))
        .collect()
}

fn pareto() -> Vec<i16> {
    (0..TABLE_LEN as i64)
        .map(|k| clamp16(pareto_value(65536 - 16 * k)))
        .collect()
}

/// A quarter normal, three quarters Pareto (integer division as in C).
fn pareto_normal() -> Vec<i16> {
    let inv = normal_inverse_cdf();
    (0..CDF_POINTS)
        .step_by(4)
        .map(|i| {
            let n = normal_value(&inv, i);
            let p = pareto_value(65536 - 4 * i as i64);
            clamp16((n + 3 * p) / 4)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_iproute2_shape() {
        for d in [
            Distribution::Normal,
            Distribution::Pareto,
            Distribution::ParetoNormal,
        ] {
            let t = table(d).expect("table");
            assert_eq!(t.len(), TABLE_LEN, "{d:?}");
        }
        assert!(table(Distribution::Uniform).is_none());
        let n = table(Distribution::Normal).expect("normal");
        // Symmetric around the median, monotonic, one sigma = 8192 near the 84th percentile.
        assert!(n.windows(2).all(|w| w[0] <= w[1]));
        assert!(n[2048].abs() <= 2, "median {}", n[2048]);
        assert!((n[3442] - 8192).abs() < 40, "84th percentile {}", n[3442]);
        let p = table(Distribution::Pareto).expect("pareto");
        assert_eq!(p[0], -5461, "pareto starts at (1 - 1.5) * 4/3 * 8192");
    }
}
