//! JSON views of the wire types for `-o json` (prost types carry no serde): every field, enums
//! by their proto names, maps as objects with sorted keys.

mod experiment;

pub use experiment::{event, experiment, hypothesis, plan};

use std::collections::HashMap;

use faultline_proto::pb;
use serde_json::{json, Map, Value};

fn string_map(map: &HashMap<String, String>) -> Value {
    let sorted: Map<String, Value> = map
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(sorted)
}

fn direction(d: i32) -> &'static str {
    pb::Direction::try_from(d)
        .map(|d| d.as_str_name())
        .unwrap_or("UNKNOWN")
}

pub fn agent(a: &pb::AgentInfo) -> Value {
    json!({
        "node_name": a.node_name,
        "labels": string_map(&a.labels),
        "capabilities": a.capabilities,
        "version": a.version,
        "connected": a.connected,
        "last_seen_unix_ms": a.last_seen_unix_ms,
        "connected_since_unix_ms": a.connected_since_unix_ms,
        "remote_address": a.remote_address,
        "telemetry": a.telemetry.as_ref().map(telemetry),
        "held_faults": a.held_faults.iter().map(held_fault).collect::<Vec<_>>(),
    })
}

pub fn telemetry(t: &pb::Telemetry) -> Value {
    json!({
        "timestamp_unix_ms": t.timestamp_unix_ms,
        "cpu_busy_ratio": t.cpu_busy_ratio,
        "memory_total_bytes": t.memory_total_bytes,
        "memory_available_bytes": t.memory_available_bytes,
        "memory_used_bytes": t.memory_used_bytes,
        "load1": t.load1,
        "load5": t.load5,
        "load15": t.load15,
        "interfaces": t.interfaces.iter().map(|i| json!({
            "name": i.name,
            "rx_bytes": i.rx_bytes,
            "rx_packets": i.rx_packets,
            "tx_bytes": i.tx_bytes,
            "tx_packets": i.tx_packets,
        })).collect::<Vec<_>>(),
        "pressure": t.pressure.as_ref().map(pressure),
        "active_faults": t.active_faults,
    })
}

fn pressure(p: &pb::Pressure) -> Value {
    let line = |l: &Option<pb::PressureLine>| {
        l.as_ref().map(|l| {
            json!({"avg10": l.avg10, "avg60": l.avg60, "avg300": l.avg300, "total_us": l.total_us})
        })
    };
    json!({
        "cpu_some": line(&p.cpu_some),
        "memory_some": line(&p.memory_some),
        "memory_full": line(&p.memory_full),
        "io_some": line(&p.io_some),
        "io_full": line(&p.io_full),
    })
}

pub fn held_fault(f: &pb::HeldFault) -> Value {
    json!({
        "fault_id": f.fault_id,
        "experiment_id": f.experiment_id,
        "spec": f.spec.as_ref().map(spec),
        "deadline_unix_ms": f.deadline_unix_ms,
        "applied_unix_ms": f.applied_unix_ms,
    })
}

pub fn spec(s: &pb::FaultSpec) -> Value {
    use pb::fault_spec::Kind;
    let (kind, params) = match &s.kind {
        None => ("unspecified", Value::Null),
        Some(Kind::Network(n)) => (
            "network",
            json!({
                "interface": n.interface,
                "match": n.r#match.as_ref().map(traffic_match),
                "delay_us": n.delay_us,
                "jitter_us": n.jitter_us,
                "correlation_percent": n.correlation_percent,
                "distribution": n.distribution,
                "loss_percent": n.loss_percent,
                "loss_correlation_percent": n.loss_correlation_percent,
                "duplicate_percent": n.duplicate_percent,
                "corrupt_percent": n.corrupt_percent,
                "reorder_percent": n.reorder_percent,
                "reorder_gap": n.reorder_gap,
                "netem_rate_bps": n.netem_rate_bps,
                "rate_bps": n.rate_bps,
                "burst_bytes": n.burst_bytes,
                "limit_bytes": n.limit_bytes,
            }),
        ),
        Some(Kind::Drop(d)) => (
            "drop",
            json!({
                "interface": d.interface,
                "probability": d.probability,
                "match": d.r#match.as_ref().map(traffic_match),
            }),
        ),
        Some(Kind::Partition(p)) => (
            "partition",
            json!({
                "interface": p.interface,
                "peers": p.peers,
                "direction": direction(p.direction),
            }),
        ),
        Some(Kind::Cpu(c)) => (
            "cpu",
            json!({"load_percent": c.load_percent, "workers": c.workers}),
        ),
        Some(Kind::Memory(m)) => {
            use pb::memory_fault::Amount;
            let amount = match m.amount {
                Some(Amount::SizeBytes(b)) => json!({"size_bytes": b}),
                Some(Amount::Percent(p)) => json!({"percent": p}),
                None => Value::Null,
            };
            ("memory", json!({ "amount": amount }))
        }
        Some(Kind::Io(i)) => (
            "io",
            json!({
                "path": i.path,
                "workers": i.workers,
                "size_bytes": i.size_bytes,
                "rate_bytes_per_second": i.rate_bytes_per_second,
            }),
        ),
        Some(Kind::Process(p)) => {
            use pb::process_fault::{Action, Selector};
            let action = match &p.action {
                Some(Action::KillSignal(s)) => json!({"kill_signal": s}),
                Some(Action::Pause(b)) => json!({"pause": b}),
                None => Value::Null,
            };
            let selector = match &p.selector {
                Some(Selector::Pid(pid)) => json!({"pid": pid}),
                Some(Selector::NamePattern(n)) => json!({"name_pattern": n}),
                Some(Selector::Container(c)) => json!({"container": container(c)}),
                None => Value::Null,
            };
            (
                "process",
                json!({"action": action, "selector": selector, "count": p.count}),
            )
        }
        // Disk faults (issue 13).
        Some(Kind::DiskFill(d)) => {
            use pb::disk_fill_fault::Amount;
            let amount = match d.amount {
                Some(Amount::Percent(p)) => json!({"percent": p}),
                Some(Amount::SizeBytes(b)) => json!({"size_bytes": b}),
                None => Value::Null,
            };
            (
                "disk_fill",
                json!({"path": d.path, "amount": amount, "keep_free_bytes": d.keep_free_bytes}),
            )
        }
        Some(Kind::IoLimit(l)) => (
            "io_limit",
            json!({
                "device": l.device,
                "read_bytes_per_second": l.read_bytes_per_second,
                "write_bytes_per_second": l.write_bytes_per_second,
                "read_iops": l.read_iops,
                "write_iops": l.write_iops,
            }),
        ),
        // dns (issue 13)
        Some(Kind::Dns(d)) => (
            "dns",
            json!({
                "names": d.names,
                "action": pb::DnsAction::try_from(d.action)
                    .map(|a| a.as_str_name())
                    .unwrap_or("DNS_ACTION_UNSPECIFIED"),
                "probability": d.probability.unwrap_or(1.0),
                "interface": d.interface,
            }),
        ),
        // Kill faults (issue 13).
        Some(Kind::PodKill(k)) => (
            "pod_kill",
            json!({"grace_period_seconds": k.grace_period_seconds, "interval_ms": k.interval_ms}),
        ),
        Some(Kind::ContainerKill(k)) => (
            "container_kill",
            json!({"containers": k.containers, "interval_ms": k.interval_ms}),
        ),
    };
    json!({
        "target": s.target.as_ref().map(target),
        "kind": kind,
        kind: params,
    })
}

fn target(t: &pb::Target) -> Value {
    use pb::target::Target;
    match &t.target {
        None => Value::Null,
        Some(Target::Host(_)) => json!({"host": {}}),
        Some(Target::NetnsPath(p)) => json!({"netns_path": p}),
        Some(Target::Pid(p)) => json!({"pid": p}),
        Some(Target::CgroupPath(p)) => json!({"cgroup_path": p}),
        Some(Target::Container(c)) => json!({"container": container(c)}),
    }
}

fn container(c: &pb::ContainerTarget) -> Value {
    json!({
        "container_id": c.container_id,
        "pod_uid": c.pod_uid,
        "pod_namespace": c.pod_namespace,
        "pod_name": c.pod_name,
        "container_name": c.container_name,
    })
}

fn traffic_match(m: &pb::TrafficMatch) -> Value {
    json!({
        "destination_cidrs": m.destination_cidrs,
        "source_cidrs": m.source_cidrs,
        "ports": m.ports,
        "protocol": m.protocol,
        "direction": direction(m.direction),
        "include_protected": m.include_protected,
    })
}

pub fn policy(p: &pb::Policy) -> Value {
    json!({
        "max_fleet_percent_under_fault": p.max_fleet_percent_under_fault,
        "max_concurrent_experiments": p.max_concurrent_experiments,
        "allowed_fault_kinds": p.allowed_fault_kinds,
        "max_duration_ms": p.max_duration_ms,
        "protected_agent_labels": string_map(&p.protected_agent_labels),
        "protected_namespaces": p.protected_namespaces,
        "max_pod_percent_per_namespace": p.max_pod_percent_per_namespace,
        "halted": p.halted,
        "halted_reason": p.halted_reason,
        "lease_ms": p.lease_ms,
    })
}

pub fn audit_entry(e: &pb::AuditEntry) -> Value {
    json!({
        "at_unix_ms": e.at_unix_ms,
        "identity": e.identity,
        "action": e.action,
        "detail": e.detail,
        "allowed": e.allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_has_every_field_and_sorted_labels() {
        let agent_info = pb::AgentInfo {
            node_name: "node-a".into(),
            labels: [("zone", "a"), ("role", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            connected: true,
            last_seen_unix_ms: 42,
            telemetry: Some(pb::Telemetry {
                cpu_busy_ratio: 0.25,
                memory_used_bytes: 1024,
                ..Default::default()
            }),
            held_faults: vec![pb::HeldFault {
                fault_id: "f1".into(),
                spec: Some(pb::FaultSpec {
                    target: None,
                    kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
                        load_percent: 80,
                        workers: 2,
                    })),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = agent(&agent_info);
        assert_eq!(
            serde_json::to_string(&v["labels"]).expect("json"),
            r#"{"role":"web","zone":"a"}"#
        );
        assert_eq!(v["connected"], json!(true));
        assert_eq!(v["telemetry"]["cpu_busy_ratio"], json!(0.25));
        assert_eq!(v["telemetry"]["pressure"], Value::Null);
        assert_eq!(v["held_faults"][0]["spec"]["kind"], json!("cpu"));
        assert_eq!(
            v["held_faults"][0]["spec"]["cpu"]["load_percent"],
            json!(80)
        );
        for field in [
            "node_name",
            "capabilities",
            "version",
            "last_seen_unix_ms",
            "connected_since_unix_ms",
            "remote_address",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
    }

    #[test]
    fn enums_use_proto_names() {
        let s = pb::FaultSpec {
            target: Some(pb::Target {
                target: Some(pb::target::Target::Pid(7)),
            }),
            kind: Some(pb::fault_spec::Kind::Partition(pb::PartitionFault {
                interface: "eth0".into(),
                peers: vec!["10.0.0.0/8".into()],
                direction: pb::Direction::Both as i32,
            })),
        };
        let v = spec(&s);
        assert_eq!(v["partition"]["direction"], json!("DIRECTION_BOTH"));
        assert_eq!(v["target"], json!({"pid": 7}));
    }
}
