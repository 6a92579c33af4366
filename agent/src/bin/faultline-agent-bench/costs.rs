//! The data-path configurations, in order: nothing, the agent's armed drop program at 0%, the
//! anchors' iptables statistic rule at 0%, the agent's network fault whose steering matches
//! nothing, and an iptables CLASSIFY rule that matches nothing. Each is set up, measured and
//! taken down before the next (a failure takes it down too: faults through the engine's revert
//! at the end, rules with the namespace).

use anyhow::{bail, Result};
use faultline_agent::engine::Engine;
use faultline_agent::{FaultManager, RevertReason};
use faultline_proto::pb;

use crate::datapath::{measure, Cost};
use crate::latency::{iptables_rule, order};
use crate::world::{sh, World, IFACE_A};

async fn with_fault(
    engine: &Engine,
    w: &World,
    what: &str,
    doc: String,
    secs: u32,
) -> Result<Cost> {
    let id = format!(
        "bench-datapath-{}",
        what.split_whitespace().next().unwrap_or("x")
    );
    let s = engine.apply(order(what, &doc, &id)?).await;
    if s.state != pb::FaultState::Applied as i32 {
        bail!("{what}: apply failed: {}", s.error);
    }
    let cost = measure(w, what, secs);
    let s = engine.revert(id, RevertReason::Abort).await;
    if s.state != pb::FaultState::Reverted as i32 {
        bail!("{what}: revert failed: {}", s.error);
    }
    cost
}

fn with_rule(w: &World, what: &str, rule: &[&str], secs: u32) -> Result<Cost> {
    let net = format!("--net={}", w.path_a().display());
    let mut add = vec![net.as_str()];
    add.extend(rule);
    sh("nsenter", &add)?;
    let cost = measure(w, what, secs);
    let mut del = add.clone();
    if let Some(op) = del.iter_mut().find(|a| **a == "-A") {
        *op = "-D";
    }
    sh("nsenter", &del)?;
    cost
}

pub async fn all(engine: &Engine, w: &World, secs: u32) -> Result<Vec<Cost>> {
    let ns = w.path_a().display().to_string();
    let t = format!("interface: {IFACE_A}\ntarget: {{netns: {ns}}}\n");
    let classify = [
        "iptables",
        "-w",
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-o",
        IFACE_A,
        "-p",
        "tcp",
        "--dport",
        "9",
        "-j",
        "CLASSIFY",
        "--set-class",
        "fa17:2",
    ];
    Ok(vec![
        measure(w, "no program, no rule", secs)?,
        with_fault(
            engine,
            w,
            "drop program armed, probability 0, matches all",
            format!("kind: drop\nprobability: 0\n{t}"),
            secs,
        )
        .await?,
        with_rule(
            w,
            "iptables statistic DROP, probability 0",
            &iptables_rule("-A", "0"),
            secs,
        )?,
        with_fault(
            engine,
            w,
            "network fault, steering matches nothing (HTB root)",
            format!("kind: network\nrate: 1mbit\nmatch: {{ports: [9], protocol: tcp}}\n{t}"),
            secs,
        )
        .await?,
        with_rule(w, "iptables CLASSIFY, matches nothing", &classify, secs)?,
    ])
}
