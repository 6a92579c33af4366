//! Apply and revert latency: each fault kind through the agent's real engine (journal, plan,
//! apply, the drivers' kernel calls), timed the way the coordinator sees it (order in, status
//! out), and beside it the same change made the way Chaos Mesh and Litmus make it: `tc qdisc
//! add ... tbf` and an `iptables -m statistic` DROP rule, each exec'd through `nsenter`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use faultline_agent::engine::Engine;
use faultline_agent::standalone::docs::parse_faults;
use faultline_agent::{FaultManager, RevertReason};
use faultline_proto::convert::spec_to_pb;
use faultline_proto::pb;

use crate::world::{timed, World, ADDR_B, IFACE_A};

/// Latencies of one operation, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    /// Nearest-rank percentile (`q` in 0..=100).
    pub fn pct(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((q / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }
}

/// One row of the latency table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `drop`, `network tbf`, ... or `tc exec tbf` / `iptables statistic`.
    pub what: String,
    /// Applies as they usually run: for the eBPF kinds with the hook's TCX link kept from the
    /// previous fault (warm, a map write).
    pub apply: Samples,
    /// eBPF kinds only: applies with no kept link on the hook (cold: the first fault on a hook,
    /// or the first after the idle expiry, attaches the link).
    pub cold: Samples,
    pub revert: Samples,
}

/// Kinds whose apply puts a program into a kept TCX link.
fn keeps_links(what: &str) -> bool {
    ["drop", "partition", "network tbf", "dns"].contains(&what)
}

/// Detaches every kept link without a fault, so the next apply attaches (untimed: the
/// detach waits for grace periods). A revert frees its link before it returns; the loop
/// only guards against a free still in flight.
fn no_kept_links() {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        faultline_agent::net::keep::detach_free();
        if faultline_agent::net::keep::count().0 == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The faults the bench applies, as fault documents (the standalone file format).
pub fn fault_docs(w: &World) -> Vec<(&'static str, String)> {
    let ns = w.path_a().display().to_string();
    let t = format!("interface: {IFACE_A}\ntarget: {{netns: {ns}}}\n");
    vec![
        ("drop", format!("kind: drop\nprobability: 0.1\n{t}")),
        (
            "partition",
            format!("kind: partition\npeers: [{ADDR_B}/32]\n{t}"),
        ),
        ("network tbf", format!("kind: network\nrate: 1mbit\n{t}")),
        (
            "dns",
            format!("kind: dns\nnames: [bench.example]\naction: nxdomain\n{t}"),
        ),
        ("cpu", "kind: cpu\nload: 5\nworkers: 1\n".to_string()),
        ("memory", "kind: memory\nsize: 16Mi\n".to_string()),
    ]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses one fault document and makes the order for it (deadline in 60 s).
pub fn order(what: &str, doc: &str, id: &str) -> Result<pb::ApplyFault> {
    let spec = parse_faults(what, doc)
        .map_err(anyhow::Error::msg)?
        .pop()
        .context("no fault")?;
    Ok(pb::ApplyFault {
        fault_id: id.to_string(),
        experiment_id: "bench".into(),
        spec: Some(spec_to_pb(&spec)),
        deadline_unix_ms: now_ms() + 60_000,
        remaining_ms: 60_000,
        telemetry_sequence: 0,
    })
}

/// One apply and revert of `doc` through `engine`: (apply, revert) times; fails on a refused
/// or failed order (with the agent's error).
async fn cycle(engine: &Engine, what: &str, doc: &str, id: String) -> Result<(Duration, Duration)> {
    let order = order(what, doc, &id)?;
    let t = Instant::now();
    let s = engine.apply(order).await;
    let apply = t.elapsed();
    if s.state != pb::FaultState::Applied as i32 {
        bail!("{what}: apply {id} failed: {}", s.error);
    }
    let t = Instant::now();
    let s = engine.revert(id.clone(), RevertReason::Abort).await;
    let revert = t.elapsed();
    if s.state != pb::FaultState::Reverted as i32 {
        bail!("{what}: revert {id} failed: {}", s.error);
    }
    Ok((apply, revert))
}

/// Applies and reverts `doc` `runs` times through `engine`, `gap` after each revert. For the
/// eBPF kinds each run is two cycles: one cold (no kept link on the hook: it attaches) and one
/// warm (the link the cold one left), timed apart; both reverts count.
pub async fn agent_row(
    engine: &Engine,
    what: &str,
    doc: &str,
    runs: usize,
    gap: Duration,
) -> Result<Row> {
    let mut row = Row {
        what: what.to_string(),
        apply: Samples::default(),
        cold: Samples::default(),
        revert: Samples::default(),
    };
    let slug = what.replace(' ', "-");
    for i in 0..runs {
        if keeps_links(what) {
            no_kept_links();
            let (apply, revert) =
                cycle(engine, what, doc, format!("bench-{slug}-cold-{i}")).await?;
            row.cold.push(apply);
            row.revert.push(revert);
            tokio::time::sleep(gap).await;
        }
        let (apply, revert) = cycle(engine, what, doc, format!("bench-{slug}-{i}")).await?;
        row.apply.push(apply);
        row.revert.push(revert);
        tokio::time::sleep(gap).await;
    }
    Ok(row)
}

/// `nsenter --net=A tc qdisc add dev fla0 root tbf ...`, then `... del`, `runs` times.
pub fn tc_row(w: &World, runs: usize, gap: Duration) -> Result<Row> {
    let net = format!("--net={}", w.path_a().display());
    let mut row = Row {
        what: "tc exec tbf (Chaos Mesh, Litmus)".into(),
        apply: Samples::default(),
        cold: Samples::default(),
        revert: Samples::default(),
    };
    for _ in 0..runs {
        row.apply.push(timed(
            "nsenter",
            &[
                &net, "tc", "qdisc", "add", "dev", IFACE_A, "root", "tbf", "rate", "1mbit",
                "burst", "32kbit", "latency", "400ms",
            ],
        )?);
        row.revert.push(timed(
            "nsenter",
            &[&net, "tc", "qdisc", "del", "dev", IFACE_A, "root"],
        )?);
        std::thread::sleep(gap);
    }
    Ok(row)
}

/// The iptables arguments of the anchors' random-drop rule on `fla0`'s output.
pub fn iptables_rule(op: &'static str, probability: &'static str) -> Vec<&'static str> {
    vec![
        "iptables",
        "-w",
        op,
        "OUTPUT",
        "-o",
        IFACE_A,
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        probability,
        "-j",
        "DROP",
    ]
}

/// `nsenter --net=A iptables -A OUTPUT ... -m statistic ... -j DROP`, then `-D`, `runs` times.
pub fn iptables_row(w: &World, runs: usize, gap: Duration) -> Result<Row> {
    let net = format!("--net={}", w.path_a().display());
    let mut row = Row {
        what: "iptables statistic DROP (Chaos Mesh, Litmus)".into(),
        apply: Samples::default(),
        cold: Samples::default(),
        revert: Samples::default(),
    };
    for _ in 0..runs {
        let mut add = vec![net.as_str()];
        add.extend(iptables_rule("-A", "0.1"));
        row.apply.push(timed("nsenter", &add)?);
        let mut del = vec![net.as_str()];
        del.extend(iptables_rule("-D", "0.1"));
        row.revert.push(timed("nsenter", &del)?);
        std::thread::sleep(gap);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.pct(50.0), 50.0);
        assert_eq!(s.pct(99.0), 99.0);
        assert_eq!(s.pct(100.0), 100.0);
        assert_eq!(s.pct(0.0), 1.0);
        assert_eq!(Samples(vec![7.0, 3.0]).pct(99.0), 7.0);
        assert!(Samples::default().pct(50.0).is_nan());
    }
}
