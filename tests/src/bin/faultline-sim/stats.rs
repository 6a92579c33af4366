//! Percentiles over a handful of runs and the printed figures of the benchmark.

use std::fmt::Write;
use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=1) of `samples`; `None` when empty. With 20 samples p99
/// is the largest one.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `p50 12.3 ms, p99 20.1 ms (n=20, max 20.1 ms)`.
pub fn summary(samples: &[Duration]) -> String {
    match (
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        samples.iter().max(),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!(
            "p50 {}, p99 {} (n={}, min {}, max {})",
            ms(p50),
            ms(p99),
            samples.len(),
            ms(*samples.iter().min().unwrap_or(max)),
            ms(*max)
        ),
        _ => "no samples".into(),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The figures measured for one fleet size.
#[derive(Debug, Clone, Default)]
pub struct SizeFigures {
    pub agents: usize,
    pub connect_all: Duration,
    /// Create(start) -> the last simulated agent answered APPLIED.
    pub fanout: Vec<Duration>,
    /// Create(start) -> Experiments.Get shows every target applied.
    pub fanout_recorded: Vec<Duration>,
    /// Experiments.Abort sent -> the last simulated agent answered REVERTED.
    pub abort_api: Vec<Duration>,
    /// First breached guard sample (coordinator clock) -> the last REVERTED answer.
    pub breach_to_revert: Vec<Duration>,
    /// The coordinator's own record of the same (its AbortInfo.latency_ms: breach detected ->
    /// last revert acknowledged, as the `faultline_coordinator_abort_seconds` histogram sees it).
    pub breach_recorded: Vec<Duration>,
    /// The simulator's telemetry crossed the threshold -> the last REVERTED answer.
    pub trip_to_revert: Vec<Duration>,
    pub idle: Option<Footprint>,
    /// The same while one experiment holds a fault on every agent, its guard evaluated every
    /// second (`--hold`).
    pub hold: Option<Footprint>,
    /// Runs that did not complete (an order lost, a record that never reached its state).
    pub failed_runs: usize,
    /// Reverts the coordinator never saw acknowledged, over every run.
    pub unacknowledged: u64,
}

/// Coordinator footprint over a window (telemetry every second).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub seconds: f64,
    pub cores: f64,
    pub rss_avg: u64,
    pub rss_max: u64,
    /// What the coordinator wrote to storage, per second.
    pub written_per_s: f64,
    pub telemetry_per_s: f64,
    /// The simulator's own CPU over the same window (it shares the machine).
    pub sim_cores: f64,
}

pub fn render(figures: &[SizeFigures], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    for f in figures {
        let _ = writeln!(out, "\n== {} simulated agents ==", f.agents);
        let _ = writeln!(out, "all sessions up after           {}", ms(f.connect_all));
        let _ = writeln!(
            out,
            "fan-out, agents acked applied   {}",
            summary(&f.fanout)
        );
        let _ = writeln!(
            out,
            "fan-out, coordinator recorded   {}",
            summary(&f.fanout_recorded)
        );
        let _ = writeln!(
            out,
            "abort (API) -> all reverts      {}",
            summary(&f.abort_api)
        );
        let _ = writeln!(
            out,
            "guard breach -> all reverts     {}",
            summary(&f.breach_to_revert)
        );
        let _ = writeln!(
            out,
            "  same, coordinator's record     {}",
            summary(&f.breach_recorded)
        );
        let _ = writeln!(
            out,
            "telemetry trip -> all reverts   {}",
            summary(&f.trip_to_revert)
        );
        let _ = writeln!(
            out,
            "failed runs {}, reverts never acknowledged {}",
            f.failed_runs, f.unacknowledged
        );
        if let Some(idle) = f.idle {
            let _ = writeln!(
                out,
                "idle for {:.0} s: coordinator CPU {:.3} cores ({:.1}% of one core), RSS avg {} \
                 max {}; {:.0} telemetry msgs/s; simulator CPU {:.3} cores",
                idle.seconds,
                idle.cores,
                idle.cores * 100.0,
                mib(idle.rss_avg),
                mib(idle.rss_max),
                idle.telemetry_per_s,
                idle.sim_cores
            );
        }
        if let Some(hold) = f.hold {
            let _ = writeln!(
                out,
                "holding a fault on every agent for {:.0} s: coordinator CPU {:.3} cores, RSS \
                 max {}, store writes {:.2} MiB/s",
                hold.seconds,
                hold.cores,
                mib(hold.rss_max),
                hold.written_per_s / (1024.0 * 1024.0)
            );
        }
    }
    out
}

/// Milliseconds with microsecond precision, `null` when there are no samples.
fn ms_json(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| {
        serde_json::json!((d.as_secs_f64() * 1e6).round() / 1e3)
    })
}

/// The figures as JSON, one object per fleet size (`faultline-sim bench --json FILE`).
pub fn json(figures: &[SizeFigures], runs: usize, cpus: usize) -> serde_json::Value {
    let sizes: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            let idle = f.idle.unwrap_or_default();
            let hold = f.hold.map(|h| {
                serde_json::json!({
                    "seconds": h.seconds,
                    "cores": h.cores,
                    "rss_mib_max": h.rss_max as f64 / (1024.0 * 1024.0),
                    "store_write_mib_per_s": h.written_per_s / (1024.0 * 1024.0),
                })
            });
            serde_json::json!({
                "agents": f.agents,
                "runs": runs,
                "sessions_up_ms": ms_json(Some(f.connect_all)),
                "fanout_ms_p50": ms_json(percentile(&f.fanout, 0.5)),
                "fanout_ms_p99": ms_json(percentile(&f.fanout, 0.99)),
                "fanout_recorded_ms_p99": ms_json(percentile(&f.fanout_recorded, 0.99)),
                "api_abort_ms_p50": ms_json(percentile(&f.abort_api, 0.5)),
                "api_abort_ms_p99": ms_json(percentile(&f.abort_api, 0.99)),
                "guard_abort_ms_p50": ms_json(percentile(&f.breach_to_revert, 0.5)),
                "guard_abort_ms_p99": ms_json(percentile(&f.breach_to_revert, 0.99)),
                "idle_seconds": idle.seconds,
                "idle_cores": idle.cores,
                "idle_rss_mib_max": idle.rss_max as f64 / (1024.0 * 1024.0),
                "idle_telemetry_per_s": idle.telemetry_per_s,
                "simulator_cores": idle.sim_cores,
                "hold": hold,
                "unacknowledged_total": f.unacknowledged,
                "failed_runs": f.failed_runs,
            })
        })
        .collect();
    serde_json::json!({ "cpus": cpus, "sizes": sizes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_published_field() {
        let f = SizeFigures {
            agents: 10,
            connect_all: Duration::from_millis(1500),
            fanout: vec![Duration::from_micros(12_345)],
            failed_runs: 1,
            unacknowledged: 3,
            ..Default::default()
        };
        let v = json(&[f], 1, 2);
        let size = &v["sizes"][0];
        for key in [
            "agents",
            "sessions_up_ms",
            "fanout_ms_p50",
            "fanout_ms_p99",
            "api_abort_ms_p50",
            "api_abort_ms_p99",
            "guard_abort_ms_p50",
            "guard_abort_ms_p99",
            "idle_cores",
            "idle_rss_mib_max",
            "hold",
            "unacknowledged_total",
            "failed_runs",
        ] {
            assert!(size.get(key).is_some(), "{key} missing from {size}");
        }
        assert_eq!(size["fanout_ms_p99"], serde_json::json!(12.345));
        assert_eq!(size["api_abort_ms_p50"], serde_json::Value::Null);
        assert_eq!(size["failed_runs"], 1);
        assert_eq!(size["unacknowledged_total"], 3);
    }

    #[test]
    fn nearest_rank() {
        let d: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&d, 0.99), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 0.99),
            Some(Duration::from_millis(7))
        );
    }
}
