//! Pure parsers for the procfs files telemetry reads; each takes the file's text.

use faultline_proto::pb;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {what}")]
pub struct ParseError {
    pub file: &'static str,
    pub what: String,
}

fn err(file: &'static str, what: impl Into<String>) -> ParseError {
    ParseError {
        file,
        what: what.into(),
    }
}

/// Cumulative CPU time of all CPUs from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Time not spent idle or waiting for IO.
    pub busy: u64,
    /// All accounted time (guest time is already part of user time and not added twice).
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu_times(stat: &str) -> Result<CpuTimes, ParseError> {
    const FILE: &str = "/proc/stat";
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or_else(|| err(FILE, "no aggregate \"cpu\" line"))?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .map(|f| {
            f.parse::<u64>()
                .map_err(|_| err(FILE, format!("cpu field {f:?} is not a number")))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if fields.len() < 4 {
        return Err(err(
            FILE,
            format!("cpu line has {} fields, expected at least 4", fields.len()),
        ));
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Share of all CPUs busy between two samples, 0..=1 (0 when no time passed).
pub fn busy_ratio(prev: CpuTimes, cur: CpuTimes) -> f64 {
    let total = cur.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = cur.busy.saturating_sub(prev.busy);
    (busy as f64 / total as f64).clamp(0.0, 1.0)
}

/// Memory figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub used: u64,
}

/// Parses `/proc/meminfo`. Kernels without `MemAvailable` (before 3.14) get free + buffers +
/// cached as an estimate.
pub fn parse_meminfo(text: &str) -> Result<Memory, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let field = |name: &str| -> Result<Option<u64>, ParseError> {
        let Some(line) = text
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
        else {
            return Ok(None);
        };
        let rest = line.split_once(':').map(|(_, r)| r).unwrap_or("");
        let mut parts = rest.split_whitespace();
        let value: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(FILE, format!("{name} has no numeric value: {line:?}")))?;
        let scale = match parts.next() {
            None => 1,
            Some("kB") => 1024,
            Some(unit) => return Err(err(FILE, format!("{name} has unknown unit {unit:?}"))),
        };
        Ok(Some(value.saturating_mul(scale)))
    };
    let total = field("MemTotal")?.ok_or_else(|| err(FILE, "no MemTotal line"))?;
    let available = match field("MemAvailable")? {
        Some(a) => a,
        None => {
            field("MemFree")?.ok_or_else(|| err(FILE, "neither MemAvailable nor MemFree"))?
                + field("Buffers")?.unwrap_or(0)
                + field("Cached")?.unwrap_or(0)
        }
    }
    .min(total);
    Ok(Memory {
        total,
        available,
        used: total - available,
    })
}

/// Parses `/proc/loadavg` into the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], ParseError> {
    const FILE: &str = "/proc/loadavg";
    let mut out = [0.0; 3];
    let mut parts = text.split_whitespace();
    for (slot, name) in out.iter_mut().zip(["load1", "load5", "load15"]) {
        let raw = parts
            .next()
            .ok_or_else(|| err(FILE, format!("missing {name}")))?;
        *slot = raw
            .parse()
            .map_err(|_| err(FILE, format!("{name} {raw:?} is not a number")))?;
    }
    Ok(out)
}

/// Parses `/proc/net/dev` into per-interface counters, in file order.
pub fn parse_net_dev(text: &str) -> Result<Vec<pb::InterfaceCounters>, ParseError> {
    const FILE: &str = "/proc/net/dev";
    let mut out = Vec::new();
    // Two header lines, then "name: rx_bytes rx_packets ... (8 rx fields) tx_bytes tx_packets ...".
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| err(FILE, format!("line without \"name:\": {line:?}")))?;
        let nums = counters
            .split_whitespace()
            .map(|n| {
                n.parse::<u64>()
                    .map_err(|_| err(FILE, format!("counter {n:?} is not a number")))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        if nums.len() < 10 {
            return Err(err(
                FILE,
                format!(
                    "interface {} has {} counters, expected 16",
                    name.trim(),
                    nums.len()
                ),
            ));
        }
        out.push(pb::InterfaceCounters {
            name: name.trim().to_string(),
            rx_bytes: nums[0],
            rx_packets: nums[1],
            tx_bytes: nums[8],
            tx_packets: nums[9],
        });
    }
    Ok(out)
}

/// The `some` and `full` lines of one `/proc/pressure/*` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PressureFile {
    pub some: Option<pb::PressureLine>,
    pub full: Option<pb::PressureLine>,
}

/// Parses a PSI file such as `/proc/pressure/memory`:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the same for `full`.
pub fn parse_pressure(file: &'static str, text: &str) -> Result<PressureFile, ParseError> {
    let mut out = PressureFile::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let mut p = pb::PressureLine::default();
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(file, format!("{kv:?} is not key=value")))?;
            let bad = || err(file, format!("{k} value {v:?} is not a number"));
            match k {
                "avg10" => p.avg10 = v.parse().map_err(|_| bad())?,
                "avg60" => p.avg60 = v.parse().map_err(|_| bad())?,
                "avg300" => p.avg300 = v.parse().map_err(|_| bad())?,
                "total" => p.total_us = v.parse().map_err(|_| bad())?,
                _ => {} // newer kernels may add fields
            }
        }
        match kind {
            "some" => out.some = Some(p),
            "full" => out.full = Some(p),
            other => return Err(err(file, format!("unknown line kind {other:?}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 20 30 800 50 0 0 0 0 0\n\
        cpu0 50 10 15 400 25 0 0 0 0 0\n\
        cpu1 50 10 15 400 25 0 0 0 0 0\n\
        intr 12345\nctxt 999\nbtime 1700000000\n";

    #[test]
    fn cpu_times_table() {
        let cases: &[(&str, Result<CpuTimes, &str>)] = &[
            (
                STAT,
                Ok(CpuTimes {
                    busy: 150,
                    total: 1000,
                }),
            ),
            // Older kernels: only four fields.
            (
                "cpu 10 0 10 80\n",
                Ok(CpuTimes {
                    busy: 20,
                    total: 100,
                }),
            ),
            // steal counts as busy, guest fields are ignored (already in user).
            (
                "cpu 10 0 10 70 0 0 0 10 99 99\n",
                Ok(CpuTimes {
                    busy: 30,
                    total: 100,
                }),
            ),
            ("cpu0 1 2 3 4\n", Err("no aggregate \"cpu\" line")),
            ("cpu 1 x 3 4\n", Err("cpu field \"x\" is not a number")),
            (
                "cpu 1 2\n",
                Err("cpu line has 2 fields, expected at least 4"),
            ),
        ];
        for (text, want) in cases {
            let got = parse_cpu_times(text);
            match want {
                Ok(w) => assert_eq!(got.as_ref(), Ok(w), "{text:?}"),
                Err(what) => assert_eq!(got.expect_err("should fail").what, *what, "{text:?}"),
            }
        }
    }

    #[test]
    fn busy_ratio_from_two_stat_samples() {
        let a = parse_cpu_times(STAT).expect("first sample");
        // 200 ticks later: 50 user + 10 system busy, 120 idle, 20 iowait.
        let b = parse_cpu_times("cpu  150 20 40 920 70 0 0 0 0 0\n").expect("second sample");
        assert_eq!(busy_ratio(a, b), 60.0 / 200.0);
        assert_eq!(busy_ratio(a, a), 0.0, "no time passed");
        let all_busy = CpuTimes {
            busy: a.busy + 100,
            total: a.total + 100,
        };
        assert_eq!(busy_ratio(a, all_busy), 1.0);
        // A counter that went backwards (CPU hot-unplug) never gives a ratio outside 0..=1.
        assert_eq!(busy_ratio(b, a), 0.0);
    }

    #[test]
    fn meminfo_table() {
        let modern = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\n\
                      MemAvailable:    8192000 kB\nBuffers:          100 kB\n";
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        let kib = |n: u64| n * 1024;
        let cases: &[(&str, Result<Memory, &str>)] = &[
            (
                modern,
                Ok(Memory {
                    total: kib(16_384_000),
                    available: kib(8_192_000),
                    used: kib(8_192_000),
                }),
            ),
            (
                old,
                Ok(Memory {
                    total: kib(1000),
                    available: kib(400),
                    used: kib(600),
                }),
            ),
            ("MemFree: 1 kB\n", Err("no MemTotal line")),
            (
                "MemTotal: x kB\n",
                Err("MemTotal has no numeric value: \"MemTotal: x kB\""),
            ),
            ("MemTotal: 1 MB\n", Err("MemTotal has unknown unit \"MB\"")),
        ];
        for (text, want) in cases {
            let got = parse_meminfo(text);
            match want {
                Ok(w) => assert_eq!(got.as_ref(), Ok(w), "{text:?}"),
                Err(what) => assert_eq!(got.expect_err("should fail").what, *what, "{text:?}"),
            }
        }
    }

    #[test]
    fn loadavg_table() {
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 3/456 7890\n"),
            Ok([0.52, 1.25, 2.0])
        );
        assert_eq!(
            parse_loadavg("0.52 1.25").expect_err("short").what,
            "missing load15"
        );
        assert_eq!(
            parse_loadavg("abc 1 2").expect_err("bad").what,
            "load1 \"abc\" is not a number"
        );
    }

    #[test]
    fn net_dev_table() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0\n  \
            eth0:9876543210 12345 0 0 0 0 0 0 55555 666 0 0 0 0 0 0\n";
        let got = parse_net_dev(text).expect("valid");
        assert_eq!(
            got,
            vec![
                pb::InterfaceCounters {
                    name: "lo".into(),
                    rx_bytes: 123_456,
                    rx_packets: 789,
                    tx_bytes: 123_456,
                    tx_packets: 789,
                },
                pb::InterfaceCounters {
                    name: "eth0".into(),
                    rx_bytes: 9_876_543_210,
                    rx_packets: 12_345,
                    tx_bytes: 55_555,
                    tx_packets: 666,
                },
            ]
        );
        let short = "h1\nh2\n  eth0: 1 2 3\n";
        assert_eq!(
            parse_net_dev(short).expect_err("short").what,
            "interface eth0 has 3 counters, expected 16"
        );
        assert_eq!(parse_net_dev("h1\nh2\n").expect("no interfaces"), vec![]);
    }

    #[test]
    fn pressure_table() {
        let line = |avg10, avg60, avg300, total_us| pb::PressureLine {
            avg10,
            avg60,
            avg300,
            total_us,
        };
        let cpu_old = "some avg10=1.50 avg60=0.55 avg300=0.10 total=12019242\n";
        let mem = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                   full avg10=2.25 avg60=1.00 avg300=0.50 total=42\n";
        assert_eq!(
            parse_pressure("/proc/pressure/cpu", cpu_old),
            Ok(PressureFile {
                some: Some(line(1.5, 0.55, 0.1, 12_019_242)),
                full: None,
            })
        );
        assert_eq!(
            parse_pressure("/proc/pressure/memory", mem),
            Ok(PressureFile {
                some: Some(line(0.0, 0.0, 0.0, 0)),
                full: Some(line(2.25, 1.0, 0.5, 42)),
            })
        );
        let e = parse_pressure("/proc/pressure/io", "some avg10=x\n").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "/proc/pressure/io: avg10 value \"x\" is not a number"
        );
        let e = parse_pressure("/proc/pressure/io", "half avg10=1\n").expect_err("bad");
        assert_eq!(e.what, "unknown line kind \"half\"");
    }
}
