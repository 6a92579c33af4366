//! Human-readable cell values: ages, byte sizes, percentages, timestamps, durations, latencies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long ago `then_ms` was, seen at `now_ms`: `"2s ago"`, `"5m ago"`, `"3h ago"`, `"4d ago"`;
/// `"never"` for 0 (unset). A time slightly in the future (clock skew) reads `"0s ago"`.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".into();
    }
    let secs = (now_ms.saturating_sub(then_ms)).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// Bytes in binary units with one decimal: `"512 B"`, `"1.5 KiB"`, `"3.2 GiB"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A 0..1 ratio as a percentage with one decimal: `0.123` -> `"12.3%"`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// A Unix-ms instant as RFC 3339 in UTC with seconds (`"2025-11-22T05:20:01Z"`); `"-"` if unset.
pub fn timestamp(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A Unix-ms instant as RFC 3339 in UTC with milliseconds (`"2025-11-22T05:20:01.123Z"`);
/// `"-"` if unset.
pub fn timestamp_ms(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

/// The time of day of a Unix-ms instant in UTC with milliseconds (`"05:20:01.123"`).
pub fn clock_ms(unix_ms: i64) -> String {
    let full = timestamp_ms(unix_ms);
    match full.split_once('T') {
        Some((_, time)) => time.trim_end_matches('Z').to_string(),
        None => full,
    }
}

/// Whole seconds of `ms` for live displays: `"12s"`, `"1m 5s"`; `"0s"` for 0.
pub fn seconds(ms: u64) -> String {
    if ms < 1000 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// A latency in milliseconds: `"83 ms"`, `"1.25 s"`.
pub fn latency_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// Milliseconds as a human duration (`"1h"`, `"1m 30s"`); `"-"` for 0.
pub fn duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now = 1_700_000_000_000;
        assert_eq!(ago(now, 0), "never");
        assert_eq!(ago(now, now - 2_400), "2s ago");
        assert_eq!(ago(now, now + 500), "0s ago");
        assert_eq!(ago(now, now - 61_000), "1m ago");
        assert_eq!(ago(now, now - 3 * 3_600_000), "3h ago");
        assert_eq!(ago(now, now - 49 * 3_600_000), "2d ago");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 + 200 * 1024 * 1024), "3.2 GiB");
    }

    #[test]
    fn percentages_and_times() {
        assert_eq!(percent(0.123), "12.3%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(duration_ms(90_000), "1m 30s");
        assert_eq!(duration_ms(0), "-");
        assert_eq!(timestamp_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(clock_ms(1_700_000_000_123), "22:13:20.123");
        assert_eq!(seconds(65_900), "1m 5s");
        assert_eq!(seconds(999), "0s");
        assert_eq!(latency_ms(83), "83 ms");
        assert_eq!(latency_ms(1250), "1.25 s");
    }
}
