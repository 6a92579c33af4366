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
}

/// Coordinator footprint while the agents are idle (telemetry every second).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub seconds: f64,
    pub cores: f64,
    pub rss_avg: u64,
    pub rss_max: u64,
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
