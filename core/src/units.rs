//! Quantities in specs: byte sizes (`512Mi`, `1GB`), bandwidths in tc's notation (`10mbit`,
//! `1MBps`), percentages (`30`, `30%`) and Linux signals (`SIGKILL`, `term`, `9`).

/// Parses a byte size: a number with an optional unit. Binary units `Ki Mi Gi Ti` (also `KiB`
/// ...), decimal `K M G T` (also `KB` ...), `B` or none for bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 512Mi, 1Gi, 100M or 4096"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" | "b" => 1.0,
        "K" | "KB" | "k" | "kB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?} has an unknown unit {other:?}; use B, K, M, G, T, Ki, Mi, Gi or Ti"
            ))
        }
    };
    let v = num * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v.round() as u64)
}

/// Parses a bandwidth in tc's notation and returns bits per second. `bit kbit mbit gbit tbit`
/// are decimal bits/s (`kibit mibit gibit tibit` binary); `bps kbps mbps gbps` are bytes/s, as
/// in tc(8). A bare number is bits/s.
pub fn parse_rate_bps(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate; use e.g. 10mbit, 512kbit, 1gbit"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "tibit" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "tbps" => 8e12,
        other => {
            return Err(format!(
                "{s:?} has an unknown unit {other:?}; use bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s)"
            ))
        }
    };
    let v = num * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v.round() as u64)
}

/// Formats bits per second the way tc prints them (`10Mbit`).
pub fn format_rate_bps(bps: u64) -> String {
    for (div, unit) in [(1e12, "Tbit"), (1e9, "Gbit"), (1e6, "Mbit"), (1e3, "Kbit")] {
        let v = bps as f64 / div;
        if v >= 1.0 {
            return format!("{}{unit}", trim_float(v));
        }
    }
    format!("{bps}bit")
}

/// Formats a byte size with binary units (`512MiB`).
pub fn format_size(bytes: u64) -> String {
    for (div, unit) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if bytes >= div {
            return format!("{}{unit}", trim_float(bytes as f64 / div as f64));
        }
    }
    format!("{bytes}B")
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Parses a percentage: `30`, `30%`, `0.5%`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a percentage; use e.g. 30 or 30%"))
}

/// Linux signal names and numbers (x86-64 and arm64 share them).
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses `SIGKILL`, `kill`, `9` (1..=31, or a real-time signal 34..=64) into a signal number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=31).contains(&n) || (34..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("signal {n} is outside 1..=31 and 34..=64"));
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{s:?} is not a signal; use a name such as SIGKILL, SIGTERM, SIGINT or a number 1..=64"))
}

/// The name of a signal number, `SIGKILL` style (or the number as text).
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("4096", 4096),
            ("512Mi", 512 << 20),
            ("512MiB", 512 << 20),
            ("1Gi", 1 << 30),
            ("100M", 100_000_000),
            ("1.5Ki", 1536),
            ("10 KB", 10_000),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12 parsecs")
            .expect_err("unit")
            .contains("unknown unit"));
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(1536), "1.5KiB");
    }

    #[test]
    fn rates_follow_tc() {
        for (text, want) in [
            ("10mbit", 10_000_000),
            ("10Mbit", 10_000_000),
            ("512kbit", 512_000),
            ("1gbit", 1_000_000_000),
            ("1mibit", 1_048_576),
            ("1mbps", 8_000_000),
            ("1000", 1000),
        ] {
            assert_eq!(parse_rate_bps(text), Ok(want), "{text}");
        }
        assert!(parse_rate_bps("fast").is_err());
        assert!(parse_rate_bps("10 furlongs").is_err());
        assert_eq!(format_rate_bps(10_000_000), "10Mbit");
        assert_eq!(format_rate_bps(1_500), "1.5Kbit");
    }

    #[test]
    fn percents_and_signals() {
        assert_eq!(parse_percent("30"), Ok(30.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert!(parse_percent("lots").is_err());
        assert_eq!(parse_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("40"), Ok(40));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("32").is_err());
        assert!(parse_signal("SIGFOO")
            .expect_err("unknown")
            .contains("not a signal"));
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
