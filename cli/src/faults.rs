//! One-line descriptions of wire fault specs for tables and plans (`cpu load 80%, 1 worker`).

use faultline_proto::pb;

use crate::format;

/// What the fault does and where, on one line.
pub fn describe(spec: &pb::FaultSpec) -> String {
    use pb::fault_spec::Kind;
    let what = match &spec.kind {
        None => "no fault kind".to_string(),
        Some(Kind::Network(n)) => network(n),
        Some(Kind::Drop(d)) => {
            let mut s = format!("drop {}", percent(d.probability * 100.0));
            push_iface(&mut s, &d.interface);
            push_match(&mut s, d.r#match.as_ref());
            s
        }
        Some(Kind::Partition(p)) => {
            let mut s = format!("partition from {}", list(&p.peers));
            s.push_str(&format!(" ({})", direction(p.direction)));
            push_iface(&mut s, &p.interface);
            s
        }
        Some(Kind::Cpu(c)) => {
            let workers = match c.workers {
                0 => "one worker per CPU".to_string(),
                1 => "1 worker".to_string(),
                n => format!("{n} workers"),
            };
            format!("cpu load {}%, {workers}", c.load_percent)
        }
        Some(Kind::Memory(m)) => match m.amount {
            Some(pb::memory_fault::Amount::SizeBytes(b)) => format!("memory {}", format::bytes(b)),
            Some(pb::memory_fault::Amount::Percent(p)) => {
                format!("memory {} of the limit", percent(p))
            }
            None => "memory (no amount)".into(),
        },
        Some(Kind::Io(i)) => {
            let mut s = format!(
                "io in {}, {} worker(s), {} per file",
                i.path,
                i.workers.max(1),
                format::bytes(i.size_bytes)
            );
            if i.rate_bytes_per_second > 0 {
                s.push_str(&format!(", {}/s", format::bytes(i.rate_bytes_per_second)));
            }
            s
        }
        Some(Kind::Process(p)) => process(p),
        Some(Kind::DiskFill(d)) => disk_fill(d),
        Some(Kind::IoLimit(l)) => io_limit(l),
        // dns (issue 13)
        Some(Kind::Dns(d)) => dns(d),
        // Kill faults (issue 13).
        Some(Kind::PodKill(k)) => pod_kill(k),
        Some(Kind::ContainerKill(k)) => container_kill(k),
    };
    match spec.target.as_ref().and_then(|t| t.target.as_ref()) {
        None | Some(pb::target::Target::Host(_)) => what,
        Some(t) => format!("{what} on {}", target(t)),
    }
}

fn network(n: &pb::NetworkFault) -> String {
    let mut parts = Vec::new();
    if n.delay_us > 0 {
        let mut d = format!("delay {}", micros(n.delay_us));
        if n.jitter_us > 0 {
            d.push_str(&format!(" ± {}", micros(n.jitter_us)));
        }
        parts.push(d);
    }
    for (name, v) in [
        ("loss", n.loss_percent),
        ("duplicate", n.duplicate_percent),
        ("corrupt", n.corrupt_percent),
        ("reorder", n.reorder_percent),
    ] {
        if v > 0.0 {
            parts.push(format!("{name} {}", percent(v)));
        }
    }
    if n.rate_bps > 0 {
        parts.push(format!("rate {}", bits(n.rate_bps)));
    }
    if n.netem_rate_bps > 0 {
        parts.push(format!("netem rate {}", bits(n.netem_rate_bps)));
    }
    let mut s = if parts.is_empty() {
        "network (no impairment)".to_string()
    } else {
        format!("network {}", parts.join(", "))
    };
    push_iface(&mut s, &n.interface);
    push_match(&mut s, n.r#match.as_ref());
    s
}

fn process(p: &pb::ProcessFault) -> String {
    use pb::process_fault::{Action, Selector};
    let action = match &p.action {
        Some(Action::KillSignal(sig)) => format!("kill {sig}"),
        Some(Action::Pause(_)) => "pause".to_string(),
        None => "(no action)".to_string(),
    };
    let selector = match &p.selector {
        Some(Selector::Pid(pid)) => format!("pid {pid}"),
        Some(Selector::NamePattern(n)) => format!("name /{n}/"),
        Some(Selector::Container(c)) => format!("container {}", container(c)),
        None => "(no selector)".to_string(),
    };
    let count = match p.count {
        0 => String::new(),
        n => format!(", at most {n}"),
    };
    format!("process {action} {selector}{count}")
}

// Disk faults (issue 13).

fn disk_fill(d: &pb::DiskFillFault) -> String {
    let amount = match d.amount {
        Some(pb::disk_fill_fault::Amount::Percent(p)) => format!("to {p}% full"),
        Some(pb::disk_fill_fault::Amount::SizeBytes(b)) => format!("by {}", format::bytes(b)),
        None => "(no amount)".into(),
    };
    let keep = d.keep_free_bytes.unwrap_or(64 << 20);
    format!(
        "disk-fill {} {amount}, keeping {} free",
        d.path,
        format::bytes(keep)
    )
}

fn io_limit(l: &pb::IoLimitFault) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("read", l.read_bytes_per_second),
        ("write", l.write_bytes_per_second),
    ] {
        if v > 0 {
            parts.push(format!("{name} {}/s", format::bytes(v)));
        }
    }
    for (name, v) in [("read", l.read_iops), ("write", l.write_iops)] {
        if v > 0 {
            parts.push(format!("{name} {v} IOPS"));
        }
    }
    let limits = if parts.is_empty() {
        "(no limit)".to_string()
    } else {
        parts.join(", ")
    };
    format!("io-limit {limits} on {}", l.device)
}

// dns (issue 13)
fn dns(d: &pb::DnsFault) -> String {
    let action = match pb::DnsAction::try_from(d.action) {
        Ok(pb::DnsAction::Nxdomain) => "NXDOMAIN (rcode 3)",
        Ok(pb::DnsAction::Servfail) => "SERVFAIL (rcode 2)",
        Ok(pb::DnsAction::Timeout) => "no answer (timeout)",
        _ => "(no action)",
    };
    let mut s = format!("dns {action} for {}", list(&d.names));
    let p = d.probability.unwrap_or(1.0);
    if p < 1.0 {
        s.push_str(&format!(", {} of queries", percent(p * 100.0)));
    }
    push_iface(&mut s, &d.interface);
    s
}

fn target(t: &pb::target::Target) -> String {
    use pb::target::Target;
    match t {
        Target::Host(_) => "the host".into(),
        Target::NetnsPath(p) => format!("netns {p}"),
        Target::Pid(p) => format!("pid {p}"),
        Target::CgroupPath(p) => format!("cgroup {p}"),
        Target::Container(c) => format!("container {}", container(c)),
    }
}

fn container(c: &pb::ContainerTarget) -> String {
    if !c.container_id.is_empty() {
        c.container_id.clone()
    } else if !c.pod_name.is_empty() {
        format!("pod {}/{}", c.pod_namespace, c.pod_name)
    } else {
        format!("pod uid {}", c.pod_uid)
    }
}

fn push_iface(s: &mut String, iface: &str) {
    if !iface.is_empty() {
        s.push_str(&format!(" on {iface}"));
    }
}

fn push_match(s: &mut String, m: Option<&pb::TrafficMatch>) {
    let Some(m) = m else { return };
    let mut parts = Vec::new();
    if !m.protocol.is_empty() {
        parts.push(m.protocol.clone());
    }
    if !m.ports.is_empty() {
        let ports: Vec<String> = m.ports.iter().map(u32::to_string).collect();
        parts.push(format!("ports {}", ports.join(",")));
    }
    if !m.destination_cidrs.is_empty() {
        parts.push(format!("to {}", list(&m.destination_cidrs)));
    }
    if !m.source_cidrs.is_empty() {
        parts.push(format!("from {}", list(&m.source_cidrs)));
    }
    if m.direction != 0 {
        parts.push(direction(m.direction).to_string());
    }
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join(" ")));
    }
}

fn direction(d: i32) -> &'static str {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Egress) => "egress",
        Ok(pb::Direction::Ingress) => "ingress",
        Ok(pb::Direction::Both) => "both directions",
        _ => "egress",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

// Kill faults (issue 13).
fn every(interval_ms: u64) -> String {
    match interval_ms {
        0 => "once".to_string(),
        ms if ms % 1000 == 0 => format!("every {}s", ms / 1000),
        ms => format!("every {ms}ms"),
    }
}

fn pod_kill(k: &pb::PodKillFault) -> String {
    let grace = match k.grace_period_seconds {
        None => "the pod's own grace period".to_string(),
        Some(0) => "grace period 0s (forced)".to_string(),
        Some(s) => format!("grace period {s}s"),
    };
    format!(
        "pod-kill: delete the selected pods through the Kubernetes API, {grace}, {}",
        every(k.interval_ms)
    )
}

fn container_kill(k: &pb::ContainerKillFault) -> String {
    let which = if k.containers.is_empty() {
        "the target container".to_string()
    } else {
        format!("container(s) {}", k.containers.join(", "))
    };
    format!(
        "container-kill: SIGKILL the init process of {which}, {}",
        every(k.interval_ms)
    )
}

fn percent(p: f64) -> String {
    let text = format!("{p:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn micros(us: u64) -> String {
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn bits(bps: u64) -> String {
    match bps {
        b if b >= 1_000_000_000 && b % 1_000_000 == 0 => format!("{}gbit", b / 1_000_000_000),
        b if b >= 1_000_000 && b % 1000 == 0 => format!("{}mbit", b / 1_000_000),
        b if b >= 1000 => format!("{}kbit", b / 1000),
        b => format!("{b}bit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::fault_spec::Kind;

    fn spec(kind: Kind) -> pb::FaultSpec {
        pb::FaultSpec {
            target: None,
            kind: Some(kind),
        }
    }

    #[test]
    fn each_kind_reads_as_one_line() {
        assert_eq!(
            describe(&spec(Kind::Cpu(pb::CpuFault {
                load_percent: 80,
                workers: 1
            }))),
            "cpu load 80%, 1 worker"
        );
        assert_eq!(
            describe(&spec(Kind::Cpu(pb::CpuFault {
                load_percent: 50,
                workers: 0
            }))),
            "cpu load 50%, one worker per CPU"
        );
        let pause = pb::ProcessFault {
            action: Some(pb::process_fault::Action::Pause(true)),
            selector: Some(pb::process_fault::Selector::NamePattern(
                "fl-demo-service".into(),
            )),
            count: 0,
        };
        assert_eq!(
            describe(&spec(Kind::Process(pause))),
            "process pause name /fl-demo-service/"
        );
        // Kill faults (issue 13).
        assert_eq!(
            describe(&spec(Kind::PodKill(pb::PodKillFault {
                grace_period_seconds: Some(0),
                interval_ms: 30_000,
            }))),
            "pod-kill: delete the selected pods through the Kubernetes API, grace period 0s (forced), every 30s"
        );
        assert_eq!(
            describe(&spec(Kind::PodKill(pb::PodKillFault::default()))),
            "pod-kill: delete the selected pods through the Kubernetes API, the pod's own grace period, once"
        );
        assert_eq!(
            describe(&pb::FaultSpec {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::Container(pb::ContainerTarget {
                        pod_uid: "1f0e".into(),
                        ..Default::default()
                    })),
                }),
                kind: Some(Kind::ContainerKill(pb::ContainerKillFault {
                    containers: vec!["app".into(), "sidecar".into()],
                    interval_ms: 1500,
                })),
            }),
            "container-kill: SIGKILL the init process of container(s) app, sidecar, every 1500ms on container pod uid 1f0e"
        );
        let drop = pb::DropFault {
            interface: String::new(),
            probability: 0.3,
            r#match: Some(pb::TrafficMatch {
                ports: vec![8080],
                direction: pb::Direction::Ingress as i32,
                ..Default::default()
            }),
        };
        assert_eq!(
            describe(&spec(Kind::Drop(drop))),
            "drop 30% (ports 8080 ingress)"
        );
        let net = pb::NetworkFault {
            delay_us: 100_000,
            jitter_us: 10_000,
            loss_percent: 1.5,
            rate_bps: 10_000_000,
            interface: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(
            describe(&spec(Kind::Network(net))),
            "network delay 100ms ± 10ms, loss 1.5%, rate 10mbit on eth0"
        );
        let mem = pb::MemoryFault {
            amount: Some(pb::memory_fault::Amount::SizeBytes(512 * 1024 * 1024)),
        };
        let mut s = spec(Kind::Memory(mem));
        s.target = Some(pb::Target {
            target: Some(pb::target::Target::CgroupPath("/app".into())),
        });
        assert_eq!(describe(&s), "memory 512.0 MiB on cgroup /app");
    }

    #[test]
    fn disk_faults_read_as_one_line() {
        let fill = pb::DiskFillFault {
            path: "/var/tmp".into(),
            amount: Some(pb::disk_fill_fault::Amount::Percent(80)),
            keep_free_bytes: None,
        };
        assert_eq!(
            describe(&spec(Kind::DiskFill(fill))),
            "disk-fill /var/tmp to 80% full, keeping 64.0 MiB free"
        );
        let limit = pb::IoLimitFault {
            device: "/dev/sda".into(),
            write_bytes_per_second: 1 << 20,
            read_iops: 100,
            ..Default::default()
        };
        let mut s = spec(Kind::IoLimit(limit));
        s.target = Some(pb::Target {
            target: Some(pb::target::Target::CgroupPath("/app".into())),
        });
        assert_eq!(
            describe(&s),
            "io-limit write 1.0 MiB/s, read 100 IOPS on /dev/sda on cgroup /app"
        );
    }

    // dns (issue 13)
    #[test]
    fn dns_reads_as_one_line() {
        let d = pb::DnsFault {
            names: vec!["api.example.com".into(), "*.svc.local".into()],
            action: pb::DnsAction::Nxdomain as i32,
            probability: Some(0.3),
            interface: String::new(),
        };
        let mut s = spec(Kind::Dns(d));
        s.target = Some(pb::Target {
            target: Some(pb::target::Target::Container(pb::ContainerTarget {
                pod_uid: "1f2e".into(),
                ..Default::default()
            })),
        });
        assert_eq!(
            describe(&s),
            "dns NXDOMAIN (rcode 3) for api.example.com,*.svc.local, 30% of queries on container pod uid 1f2e"
        );
        let t = pb::DnsFault {
            names: vec!["db.internal".into()],
            action: pb::DnsAction::Timeout as i32,
            probability: None,
            interface: "eth0".into(),
        };
        assert_eq!(
            describe(&spec(Kind::Dns(t))),
            "dns no answer (timeout) for db.internal on eth0"
        );
    }
}
