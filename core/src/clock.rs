//! Wall-clock time as records and the wire carry it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now; 0 for a clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2020_and_moves_forward() {
        let a = super::now_ms();
        assert!(a > 1_577_836_800_000, "{a} is before 2020-01-01");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::now_ms() > a);
    }
}
