//! The bench's table (stdout) and JSON (`--json FILE`): the machine, the load average before
//! and after, and per row p50/p99 of apply and revert with the ratio against the anchors.

use serde_json::json;

use crate::datapath::Cost;
use crate::latency::Row;

/// The agent as a process (`faultline-agent run`).
#[derive(Debug, Default)]
pub struct Process {
    /// SIGKILL -> the first packet through a 100% drop (ms).
    pub kill_ms: crate::latency::Samples,
    /// (faults held, RSS MiB, CPU cores).
    pub holding: Vec<(usize, f64, f64)>,
    /// The daemon in a session with telemetry every second, idle and holding faults.
    pub session: Option<crate::session::SessionFootprint>,
}

pub struct Report {
    gap_ms: u64,
    process: Process,
    runs: usize,
    rows: Vec<Row>,
    costs: Vec<Cost>,
    machine: String,
    load_before: String,
    load_after: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{cores} cores ({cpu}), kernel {kernel}")
}

/// The 1, 5 and 15 minute load averages now.
pub fn load_now() -> String {
    loadavg()
}

impl Report {
    pub fn new(
        runs: usize,
        gap_ms: u64,
        rows: Vec<Row>,
        costs: Vec<Cost>,
        process: Process,
        load_before: String,
    ) -> Report {
        Report {
            gap_ms,
            process,
            runs,
            rows,
            costs,
            machine: machine(),
            load_before,
            load_after: loadavg(),
        }
    }

    fn row(&self, prefix: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.what.starts_with(prefix))
    }

    /// (name, agent row, anchor row) pairs compared by p50 (the agent's warm apply).
    fn ratios(&self) -> Vec<(&'static str, f64, f64)> {
        let mut out = Vec::new();
        for (name, ours, theirs) in [
            ("tbf: agent / tc exec", "network tbf", "tc exec"),
            ("drop: agent / iptables", "drop", "iptables"),
        ] {
            if let (Some(a), Some(b)) = (self.row(ours), self.row(theirs)) {
                out.push((
                    name,
                    a.apply.pct(50.0) / b.apply.pct(50.0),
                    a.revert.pct(50.0) / b.revert.pct(50.0),
                ));
            }
        }
        out
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "faultline-agent-bench: {} runs each, {} ms between a revert and the next apply; {}; load average before {}, after {}\n\n",
            self.runs, self.gap_ms, self.machine, self.load_before, self.load_after
        );
        s.push_str(&format!(
            "{:<46} {:>10} {:>10} {:>9} {:>9} {:>11} {:>11}\n",
            "apply/revert (ms; apply = warm: TCX link kept)",
            "apply p50",
            "apply p99",
            "cold p50",
            "cold p99",
            "revert p50",
            "revert p99"
        ));
        let cell = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        for r in &self.rows {
            s.push_str(&format!(
                "{:<46} {:>10.2} {:>10.2} {:>9} {:>9} {:>11.2} {:>11.2}\n",
                r.what,
                r.apply.pct(50.0),
                r.apply.pct(99.0),
                cell(r.cold.pct(50.0)),
                cell(r.cold.pct(99.0)),
                r.revert.pct(50.0),
                r.revert.pct(99.0)
            ));
        }
        s.push_str("(cold = no kept TCX link on the hook, the apply attaches one: the first fault on a hook, or the first after the idle expiry)\n");
        s.push('\n');
        for (name, apply, revert) in self.ratios() {
            s.push_str(&format!(
                "{name}: apply p50 ratio {apply:.2}, revert p50 ratio {revert:.2}\n"
            ));
        }
        if !self.costs.is_empty() {
            s.push_str(&format!(
                "\n{:<52} {:>9} {:>11} {:>11}\n",
                "data path (veth, A -> B)", "TCP Gbit/s", "UDP RTT p50", "UDP RTT p99"
            ));
            for c in &self.costs {
                s.push_str(&format!(
                    "{:<52} {:>9.2} {:>9.1}us {:>9.1}us\n",
                    c.what,
                    c.tcp_gbit,
                    c.rtt_us.pct(50.0),
                    c.rtt_us.pct(99.0)
                ));
            }
        }
        let p = &self.process;
        if !p.kill_ms.0.is_empty() {
            s.push_str(&format!(
                "\nSIGKILL of `faultline-agent run` -> 100% drop inert (first datagram through), {} kills: p50 {:.1} ms, max {:.1} ms\n",
                p.kill_ms.0.len(),
                p.kill_ms.pct(50.0),
                p.kill_ms.pct(100.0)
            ));
        }
        if let Some(f) = &p.session {
            let ((rss, cores), (n, hrss, hcores)) = (f.idle, f.holding);
            s.push_str(&format!(
                "agent daemon in a session, telemetry every 1 s: idle RSS {rss:.1} MiB, CPU {:.2}% of a core; \
                 holding {n} drop faults RSS {hrss:.1} MiB, CPU {:.2}% of a core (20 s each)\n",
                cores * 100.0,
                hcores * 100.0
            ));
        }
        for (n, rss, cores) in &p.holding {
            s.push_str(&format!(
                "`faultline-agent run` holding {n} drop fault(s): RSS {rss:.1} MiB, CPU {:.2}% of a core (10 s)\n",
                cores * 100.0
            ));
        }
        s
    }

    pub fn json(&self) -> anyhow::Result<String> {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "what": r.what,
                    "runs": r.apply.0.len(),
                    "apply_ms_p50": r.apply.pct(50.0),
                    "apply_ms_p99": r.apply.pct(99.0),
                    "cold_runs": r.cold.0.len(),
                    "cold_apply_ms_p50": (!r.cold.0.is_empty()).then(|| r.cold.pct(50.0)),
                    "cold_apply_ms_p99": (!r.cold.0.is_empty()).then(|| r.cold.pct(99.0)),
                    "revert_ms_p50": r.revert.pct(50.0),
                    "revert_ms_p99": r.revert.pct(99.0),
                })
            })
            .collect();
        let ratios: Vec<_> = self
            .ratios()
            .into_iter()
            .map(|(n, a, r)| json!({"what": n, "apply_p50_ratio": a, "revert_p50_ratio": r}))
            .collect();
        Ok(serde_json::to_string_pretty(&json!({
            "machine": self.machine,
            "runs": self.runs,
            "gap_ms": self.gap_ms,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "latency": rows,
            "ratios": ratios,
            "sigkill_to_inert_ms_p50": self.process.kill_ms.pct(50.0),
            "sigkill_to_inert_ms_max": self.process.kill_ms.pct(100.0),
            "session_idle": self.process.session.as_ref().map(|f| json!({
                "rss_mib": f.idle.0, "cpu_cores": f.idle.1,
            })),
            "session_holding": self.process.session.as_ref().map(|f| json!({
                "faults": f.holding.0, "rss_mib": f.holding.1, "cpu_cores": f.holding.2,
            })),
            "holding": self.process.holding.iter().map(|(n, rss, cores)| json!({
                "faults": n, "rss_mib": rss, "cpu_cores": cores,
            })).collect::<Vec<_>>(),
            "datapath": self.costs.iter().map(|c| json!({
                "what": c.what,
                "tcp_gbit_per_s": c.tcp_gbit,
                "udp_rtt_us_p50": c.rtt_us.pct(50.0),
                "udp_rtt_us_p99": c.rtt_us.pct(99.0),
            })).collect::<Vec<_>>(),
        }))?)
    }
}
