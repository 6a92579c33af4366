//! Conversions between wire messages and `faultline-core` types, done at the edge so domain code
//! never sees prost types. Wire-to-domain conversions validate with the same rules as documents
//! and fail with the field path (`spec.load: 150 is outside 1..=100`).

use std::time::Duration;

use faultline_core::fault::{
    Cidr, ContainerKillFault, ContainerRef, CpuFault, Direction, DiskAmount, DiskFillFault,
    DropFault, Fault, FaultSpec, IoFault, IoLimitFault, MemoryAmount, MemoryFault, Netem,
    NetworkFault, PartitionFault, ProcessAction, ProcessFault, ProcessSelector, Protocol,
    SpecError, Target, Tbf, TrafficMatch,
};
// dns (issue 13)
use faultline_core::fault::{DnsAction, DnsFault};

use crate::pb;

fn cidrs(list: &[String], path: &str) -> Result<Vec<Cidr>, SpecError> {
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            c.parse()
                .map_err(|e: String| SpecError::new(format!("{path}[{i}]"), e))
        })
        .collect()
}

fn direction(d: i32, default: Direction) -> Direction {
    match pb::Direction::try_from(d).unwrap_or(pb::Direction::Unspecified) {
        pb::Direction::Unspecified => default,
        pb::Direction::Egress => Direction::Egress,
        pb::Direction::Ingress => Direction::Ingress,
        pb::Direction::Both => Direction::Both,
    }
}

fn direction_to_pb(d: Direction) -> i32 {
    (match d {
        Direction::Egress => pb::Direction::Egress,
        Direction::Ingress => pb::Direction::Ingress,
        Direction::Both => pb::Direction::Both,
    }) as i32
}

fn matcher(m: Option<&pb::TrafficMatch>, path: &str) -> Result<TrafficMatch, SpecError> {
    let Some(m) = m else {
        return Ok(TrafficMatch::default());
    };
    let ports = m
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| {
                SpecError::new(
                    format!("{path}.ports[{i}]"),
                    format!("{p} is outside 1..=65535"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TrafficMatch {
        destinations: cidrs(&m.destination_cidrs, &format!("{path}.destinations"))?,
        sources: cidrs(&m.source_cidrs, &format!("{path}.sources"))?,
        ports,
        protocol: m
            .protocol
            .parse::<Protocol>()
            .map_err(|e| SpecError::new(format!("{path}.protocol"), e))?,
        direction: direction(m.direction, Direction::Egress),
        include_protected: m.include_protected,
    })
}

fn matcher_to_pb(m: &TrafficMatch) -> pb::TrafficMatch {
    pb::TrafficMatch {
        destination_cidrs: m.destinations.iter().map(ToString::to_string).collect(),
        source_cidrs: m.sources.iter().map(ToString::to_string).collect(),
        ports: m.ports.iter().map(|p| u32::from(*p)).collect(),
        protocol: m.protocol.as_str().to_string(),
        direction: direction_to_pb(m.direction),
        include_protected: m.include_protected,
    }
}

fn container(c: &pb::ContainerTarget) -> ContainerRef {
    ContainerRef {
        container_id: c.container_id.clone(),
        pod_uid: c.pod_uid.clone(),
        pod_namespace: c.pod_namespace.clone(),
        pod_name: c.pod_name.clone(),
        container_name: c.container_name.clone(),
    }
}

fn container_to_pb(c: &ContainerRef) -> pb::ContainerTarget {
    pb::ContainerTarget {
        container_id: c.container_id.clone(),
        pod_uid: c.pod_uid.clone(),
        pod_namespace: c.pod_namespace.clone(),
        pod_name: c.pod_name.clone(),
        container_name: c.container_name.clone(),
    }
}

fn opt_iface(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Wire target to domain target (absent = host).
pub fn target_from_pb(t: Option<&pb::Target>) -> Target {
    use pb::target::Target as T;
    match t.and_then(|t| t.target.as_ref()) {
        None | Some(T::Host(_)) => Target::Host,
        Some(T::NetnsPath(p)) => Target::Netns(p.clone()),
        Some(T::Pid(p)) => Target::Pid(*p),
        Some(T::CgroupPath(c)) => Target::Cgroup(c.clone()),
        Some(T::Container(c)) => Target::Container(container(c)),
    }
}

pub fn target_to_pb(t: &Target) -> pb::Target {
    use pb::target::Target as T;
    pb::Target {
        target: Some(match t {
            Target::Host => T::Host(pb::HostTarget {}),
            Target::Netns(p) => T::NetnsPath(p.clone()),
            Target::Pid(p) => T::Pid(*p),
            Target::Cgroup(c) => T::CgroupPath(c.clone()),
            Target::Container(c) => T::Container(container_to_pb(c)),
        }),
    }
}

/// Converts and validates a wire spec; `path` prefixes error fields (e.g. `apply.spec`).
pub fn spec_from_pb(s: &pb::FaultSpec, path: &str) -> Result<FaultSpec, SpecError> {
    use pb::fault_spec::Kind as K;
    let at = |f: &str| faultline_core::fault::join(path, f);
    let fault = match s.kind.as_ref() {
        None => {
            return Err(SpecError::new(
                at("kind"),
                format!(
                    "is required: one of {}",
                    faultline_core::fault::FaultKind::ALL
                        .map(faultline_core::fault::FaultKind::as_str)
                        .join(", ")
                ),
            ))
        }
        Some(K::Network(n)) => {
            let netem = Netem {
                delay_us: n.delay_us,
                jitter_us: n.jitter_us,
                correlation_pct: n.correlation_percent,
                distribution: if n.distribution.is_empty() {
                    None
                } else {
                    Some(
                        n.distribution
                            .parse()
                            .map_err(|e: String| SpecError::new(at("distribution"), e))?,
                    )
                },
                loss_pct: n.loss_percent,
                loss_correlation_pct: n.loss_correlation_percent,
                duplicate_pct: n.duplicate_percent,
                corrupt_pct: n.corrupt_percent,
                reorder_pct: n.reorder_percent,
                reorder_gap: n.reorder_gap,
                rate_bps: n.netem_rate_bps,
            };
            let has_netem = netem != Netem::default();
            Fault::Network(NetworkFault {
                interface: opt_iface(&n.interface),
                matcher: matcher(n.r#match.as_ref(), &at("match"))?,
                netem: has_netem.then_some(netem),
                tbf: (n.rate_bps > 0).then_some(Tbf {
                    rate_bps: n.rate_bps,
                    burst_bytes: n.burst_bytes,
                    limit_bytes: n.limit_bytes,
                }),
            })
        }
        Some(K::Drop(d)) => Fault::Drop(DropFault {
            interface: opt_iface(&d.interface),
            probability: d.probability,
            matcher: matcher(d.r#match.as_ref(), &at("match"))?,
        }),
        Some(K::Partition(p)) => Fault::Partition(PartitionFault {
            interface: opt_iface(&p.interface),
            peers: cidrs(&p.peers, &at("peers"))?,
            direction: direction(p.direction, Direction::Both),
        }),
        Some(K::Cpu(c)) => Fault::Cpu(CpuFault {
            load_percent: c.load_percent,
            workers: c.workers,
        }),
        Some(K::Memory(m)) => Fault::Memory(MemoryFault {
            amount: match m.amount {
                Some(pb::memory_fault::Amount::SizeBytes(b)) => MemoryAmount::Bytes(b),
                Some(pb::memory_fault::Amount::Percent(p)) => MemoryAmount::Percent(p),
                None => {
                    return Err(SpecError::new(
                        path,
                        "memory needs exactly one of size or percent",
                    ))
                }
            },
        }),
        Some(K::Io(io)) => Fault::Io(IoFault {
            path: io.path.clone(),
            workers: io.workers,
            size_bytes: io.size_bytes,
            rate_bytes_per_second: io.rate_bytes_per_second,
        }),
        Some(K::Process(p)) => {
            use pb::process_fault::{Action, Selector};
            let action = match &p.action {
                Some(Action::KillSignal(s)) => ProcessAction::Kill {
                    signal: faultline_core::units::parse_signal(s)
                        .map_err(|e| SpecError::new(at("signal"), e))?,
                },
                Some(Action::Pause(true)) => ProcessAction::Pause,
                _ => return Err(SpecError::new(at("action"), "is required: kill or pause")),
            };
            let selector = match &p.selector {
                Some(Selector::Pid(pid)) => ProcessSelector::Pid(*pid),
                Some(Selector::NamePattern(n)) => ProcessSelector::Name(n.clone()),
                Some(Selector::Container(c)) => ProcessSelector::Container(container(c)),
                None => {
                    return Err(SpecError::new(
                        at("selector"),
                        "is required: one of pid, name, container",
                    ))
                }
            };
            Fault::Process(ProcessFault {
                action,
                selector,
                count: p.count,
            })
        }
        Some(K::DiskFill(d)) => Fault::DiskFill(disk_fill_from_pb(d, path)?),
        Some(K::IoLimit(l)) => Fault::IoLimit(io_limit_from_pb(l)),
        // dns (issue 13)
        Some(K::Dns(d)) => Fault::Dns(dns_from_pb(d, &at)?),
        // Kill faults (issue 13). A pod-kill is never a fault for an agent.
        Some(K::PodKill(_)) => {
            return Err(SpecError::new(
                at("kind"),
                faultline_core::fault::kill::POD_KILL_NEEDS_PODS,
            ))
        }
        Some(K::ContainerKill(k)) => Fault::ContainerKill(ContainerKillFault {
            containers: k.containers.clone(),
            interval: interval(k.interval_ms),
        }),
    };
    let spec = FaultSpec {
        target: target_from_pb(s.target.as_ref()),
        fault,
    };
    spec.validate(path)?;
    Ok(spec)
}

pub fn spec_to_pb(s: &FaultSpec) -> pb::FaultSpec {
    use pb::fault_spec::Kind as K;
    let kind = match &s.fault {
        Fault::Network(n) => {
            let netem = n.netem.clone().unwrap_or_default();
            let tbf = n.tbf.clone().unwrap_or_default();
            K::Network(pb::NetworkFault {
                interface: n.interface.clone().unwrap_or_default(),
                r#match: Some(matcher_to_pb(&n.matcher)),
                delay_us: netem.delay_us,
                jitter_us: netem.jitter_us,
                correlation_percent: netem.correlation_pct,
                distribution: netem
                    .distribution
                    .map(|d| d.as_str().to_string())
                    .unwrap_or_default(),
                loss_percent: netem.loss_pct,
                loss_correlation_percent: netem.loss_correlation_pct,
                duplicate_percent: netem.duplicate_pct,
                corrupt_percent: netem.corrupt_pct,
                reorder_percent: netem.reorder_pct,
                reorder_gap: netem.reorder_gap,
                netem_rate_bps: netem.rate_bps,
                rate_bps: tbf.rate_bps,
                burst_bytes: tbf.burst_bytes,
                limit_bytes: tbf.limit_bytes,
            })
        }
        Fault::Drop(d) => K::Drop(pb::DropFault {
            interface: d.interface.clone().unwrap_or_default(),
            probability: d.probability,
            r#match: Some(matcher_to_pb(&d.matcher)),
        }),
        Fault::Partition(p) => K::Partition(pb::PartitionFault {
            interface: p.interface.clone().unwrap_or_default(),
            peers: p.peers.iter().map(ToString::to_string).collect(),
            direction: direction_to_pb(p.direction),
        }),
        Fault::Cpu(c) => K::Cpu(pb::CpuFault {
            load_percent: c.load_percent,
            workers: c.workers,
        }),
        Fault::Memory(m) => K::Memory(pb::MemoryFault {
            amount: Some(match m.amount {
                MemoryAmount::Bytes(b) => pb::memory_fault::Amount::SizeBytes(b),
                MemoryAmount::Percent(p) => pb::memory_fault::Amount::Percent(p),
            }),
        }),
        Fault::Io(io) => K::Io(pb::IoFault {
            path: io.path.clone(),
            workers: io.workers,
            size_bytes: io.size_bytes,
            rate_bytes_per_second: io.rate_bytes_per_second,
        }),
        Fault::Process(p) => {
            use pb::process_fault::{Action, Selector};
            K::Process(pb::ProcessFault {
                action: Some(match p.action {
                    ProcessAction::Kill { signal } => Action::KillSignal(signal.to_string()),
                    ProcessAction::Pause => Action::Pause(true),
                }),
                selector: Some(match &p.selector {
                    ProcessSelector::Pid(pid) => Selector::Pid(*pid),
                    ProcessSelector::Name(n) => Selector::NamePattern(n.clone()),
                    ProcessSelector::Container(c) => Selector::Container(container_to_pb(c)),
                }),
                count: p.count,
            })
        }
        Fault::DiskFill(d) => K::DiskFill(disk_fill_to_pb(d)),
        Fault::IoLimit(l) => K::IoLimit(io_limit_to_pb(l)),
        // dns (issue 13)
        Fault::Dns(d) => K::Dns(dns_to_pb(d)),
        // Kill faults (issue 13).
        Fault::PodKill(k) => K::PodKill(pb::PodKillFault {
            grace_period_seconds: k.grace_period.map(|g| g.as_secs()),
            interval_ms: interval_ms(k.interval),
        }),
        Fault::ContainerKill(k) => K::ContainerKill(pb::ContainerKillFault {
            containers: k.containers.clone(),
            interval_ms: interval_ms(k.interval),
        }),
    };
    pb::FaultSpec {
        target: Some(target_to_pb(&s.target)),
        kind: Some(kind),
    }
}

// ---------------------------------------------------------------------------
// Disk faults (issue 13).
// ---------------------------------------------------------------------------

fn disk_fill_from_pb(d: &pb::DiskFillFault, path: &str) -> Result<DiskFillFault, SpecError> {
    use pb::disk_fill_fault::Amount;
    Ok(DiskFillFault {
        path: d.path.clone(),
        amount: match d.amount {
            Some(Amount::Percent(p)) => DiskAmount::Percent(p),
            Some(Amount::SizeBytes(b)) => DiskAmount::Bytes(b),
            None => {
                return Err(SpecError::new(
                    path,
                    "disk-fill needs percent (1..=99) or size_bytes",
                ))
            }
        },
        keep_free_bytes: d
            .keep_free_bytes
            .unwrap_or(faultline_core::fault::disk::DEFAULT_KEEP_FREE),
    })
}

fn disk_fill_to_pb(d: &DiskFillFault) -> pb::DiskFillFault {
    use pb::disk_fill_fault::Amount;
    pb::DiskFillFault {
        path: d.path.clone(),
        amount: Some(match d.amount {
            DiskAmount::Percent(p) => Amount::Percent(p),
            DiskAmount::Bytes(b) => Amount::SizeBytes(b),
        }),
        keep_free_bytes: Some(d.keep_free_bytes),
    }
}

fn io_limit_from_pb(l: &pb::IoLimitFault) -> IoLimitFault {
    IoLimitFault {
        device: l.device.clone(),
        read_bytes_per_second: l.read_bytes_per_second,
        write_bytes_per_second: l.write_bytes_per_second,
        read_iops: l.read_iops,
        write_iops: l.write_iops,
    }
}

fn io_limit_to_pb(l: &IoLimitFault) -> pb::IoLimitFault {
    pb::IoLimitFault {
        device: l.device.clone(),
        read_bytes_per_second: l.read_bytes_per_second,
        write_bytes_per_second: l.write_bytes_per_second,
        read_iops: l.read_iops,
        write_iops: l.write_iops,
    }
}

// dns (issue 13)
fn dns_from_pb(d: &pb::DnsFault, at: &dyn Fn(&str) -> String) -> Result<DnsFault, SpecError> {
    let action = match pb::DnsAction::try_from(d.action).unwrap_or(pb::DnsAction::Unspecified) {
        pb::DnsAction::Nxdomain => DnsAction::Nxdomain,
        pb::DnsAction::Servfail => DnsAction::Servfail,
        pb::DnsAction::Timeout => DnsAction::Timeout,
        pb::DnsAction::Unspecified => {
            return Err(SpecError::new(
                at("action"),
                "is required: nxdomain, servfail or timeout",
            ))
        }
    };
    Ok(DnsFault {
        interface: opt_iface(&d.interface),
        names: DnsFault::parse_names(&d.names, &at("names"))?,
        action,
        probability: d.probability.unwrap_or(1.0),
    })
}

fn dns_to_pb(d: &DnsFault) -> pb::DnsFault {
    pb::DnsFault {
        names: d.names.iter().map(|n| n.text()).collect(),
        action: (match d.action {
            DnsAction::Nxdomain => pb::DnsAction::Nxdomain,
            DnsAction::Servfail => pb::DnsAction::Servfail,
            DnsAction::Timeout => pb::DnsAction::Timeout,
        }) as i32,
        probability: Some(d.probability),
        interface: d.interface.clone().unwrap_or_default(),
    }
}

// Kill faults (issue 13): `interval_ms` 0 is "once".
fn interval(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn interval_ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every revert reason with a name, in wire order.
pub const REVERT_REASONS: [pb::RevertReason; 6] = [
    pb::RevertReason::Deadline,
    pb::RevertReason::Lease,
    pb::RevertReason::Abort,
    pb::RevertReason::Shutdown,
    pb::RevertReason::Recovery,
    pb::RevertReason::Unvouched,
];

/// The short name of a revert reason (`deadline`, `lease`, `unvouched`, ...) used in records,
/// metrics labels, logs and the CLI; empty for an unset or unknown value.
pub fn revert_reason_name(r: i32) -> &'static str {
    match pb::RevertReason::try_from(r).unwrap_or(pb::RevertReason::Unspecified) {
        pb::RevertReason::Unspecified => "",
        pb::RevertReason::Deadline => "deadline",
        pb::RevertReason::Lease => "lease",
        pb::RevertReason::Abort => "abort",
        pb::RevertReason::Shutdown => "shutdown",
        pb::RevertReason::Recovery => "recovery",
        pb::RevertReason::Unvouched => "unvouched",
    }
}

/// The revert reason named `name` ([`revert_reason_name`]); `Unspecified` for anything else.
pub fn revert_reason_from_name(name: &str) -> pb::RevertReason {
    REVERT_REASONS
        .into_iter()
        .find(|r| revert_reason_name(*r as i32) == name)
        .unwrap_or(pb::RevertReason::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_core::fault::doc::parse_fault;

    #[test]
    fn every_kind_round_trips_through_the_wire() {
        for doc in [
            "{kind: cpu, load: 50, workers: 2, target: {cgroup: /faultline/t}}",
            "{kind: memory, size: 256Mi, target: {pid: 42}}",
            "{kind: memory, percent: 25}",
            "{kind: io, path: /var/tmp, workers: 3, size: 8Mi, rate: 1Mi}",
            "{kind: process, action: kill, signal: TERM, selector: {name: sleep}, count: 2}",
            "{kind: process, action: pause, selector: {pid: 4242}}",
            "{kind: drop, probability: 0.25, match: {ports: [53], protocol: udp, direction: ingress, destinations: [10.0.0.0/8]}}",
            "{kind: partition, peers: [192.0.2.0/24], direction: egress, target: {netns: /run/netns/x}}",
            "{kind: network, delay: 20ms, jitter: 5ms, correlation: 25, distribution: pareto, loss: 1, duplicate: 0.5, reorder: 10, gap: 3, rate: 1gbit, burst: 64Ki}",
            "{kind: network, loss: 5, target: {container: abc123, pod: 1f2e-33}}",
            "{kind: disk-fill, path: /var/tmp, percent: 80, target: {pid: 42}}",
            "{kind: disk-fill, path: /data, size: 1Gi, keepFree: 0}",
            "{kind: io-limit, device: /dev/sda, writeBytesPerSecond: 1Mi, readIops: 50, target: {cgroup: /x}}",
            // dns (issue 13)
            "{kind: dns, names: [api.example.com, '*.svc.local'], action: nxdomain, target: {pod: 1f2e-33}}",
            "{kind: dns, names: [x.example], action: timeout, probability: 0.3, interface: eth0, target: {netns: /run/netns/x}}",
            "{kind: container-kill, containers: [app, sidecar], interval: 1500ms, target: {pod: 1f2e-33}}",
            "{kind: container-kill, target: {container: abc123, pod: 1f2e-33}}",
        ] {
            let spec = parse_fault(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            let back = spec_from_pb(&spec_to_pb(&spec), "spec").unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(back, spec, "{doc}");
        }
    }

    #[test]
    fn wire_specs_are_validated_with_paths() {
        let mut s = spec_to_pb(&parse_fault("{kind: cpu, load: 50}").expect("cpu"));
        if let Some(pb::fault_spec::Kind::Cpu(c)) = s.kind.as_mut() {
            c.load_percent = 150;
        }
        let err = spec_from_pb(&s, "apply.spec").expect_err("out of range");
        assert_eq!(err.to_string(), "apply.spec.load: 150 is outside 1..=100");
        // Kill faults (issue 13): an agent never takes a pod-kill, and checks container-kill.
        let pod_kill = pb::FaultSpec {
            target: None,
            kind: Some(pb::fault_spec::Kind::PodKill(pb::PodKillFault {
                grace_period_seconds: Some(0),
                interval_ms: 0,
            })),
        };
        assert_eq!(
            spec_from_pb(&pod_kill, "apply.spec")
                .expect_err("pod-kill")
                .to_string(),
            format!(
                "apply.spec.kind: {}",
                faultline_core::fault::kill::POD_KILL_NEEDS_PODS
            )
        );
        let mut ck = spec_to_pb(
            &parse_fault("{kind: container-kill, containers: [app], target: {pod: 1f0e}}")
                .expect("container-kill"),
        );
        if let Some(pb::fault_spec::Kind::ContainerKill(k)) = ck.kind.as_mut() {
            k.interval_ms = 200;
        }
        assert_eq!(
            spec_from_pb(&ck, "apply.spec")
                .expect_err("interval")
                .to_string(),
            "apply.spec.interval: 200ms is outside 1s..=24h"
        );
        let empty = pb::FaultSpec::default();
        assert!(spec_from_pb(&empty, "spec")
            .expect_err("no kind")
            .to_string()
            .starts_with("spec.kind: is required"));
        let mut s =
            spec_to_pb(&parse_fault("{kind: disk-fill, path: /tmp, percent: 50}").expect("fill"));
        if let Some(pb::fault_spec::Kind::DiskFill(d)) = s.kind.as_mut() {
            d.amount = Some(pb::disk_fill_fault::Amount::Percent(100));
        }
        let err = spec_from_pb(&s, "spec").expect_err("100%");
        assert_eq!(
            err.to_string(),
            "spec.percent: 100 is outside 1..=99 (whole percent of the filesystem)"
        );
    }

    // dns (issue 13)
    #[test]
    fn wire_dns_specs_are_validated_with_paths() {
        let good = pb::DnsFault {
            names: vec!["a.example".into()],
            action: pb::DnsAction::Nxdomain as i32,
            probability: None,
            interface: String::new(),
        };
        let spec = |d: pb::DnsFault| pb::FaultSpec {
            target: None,
            kind: Some(pb::fault_spec::Kind::Dns(d)),
        };
        let ok = spec_from_pb(&spec(good.clone()), "spec").expect("dns");
        let Fault::Dns(d) = ok.fault else {
            panic!("dns")
        };
        assert_eq!(d.probability, 1.0, "an absent probability is 1");
        let err = |d: pb::DnsFault| {
            spec_from_pb(&spec(d), "apply.spec")
                .expect_err("bad")
                .to_string()
        };
        assert_eq!(
            err(pb::DnsFault {
                action: 0,
                ..good.clone()
            }),
            "apply.spec.action: is required: nxdomain, servfail or timeout"
        );
        assert_eq!(
            err(pb::DnsFault {
                probability: Some(1.5),
                ..good.clone()
            }),
            "apply.spec.probability: 1.5 is outside 0..=1"
        );
        assert!(err(pb::DnsFault {
            names: vec!["ok.example".into(), "-*-".into()],
            ..good
        })
        .starts_with("apply.spec.names[1]: \"-*-\" has '*' in a label"));
    }
}
