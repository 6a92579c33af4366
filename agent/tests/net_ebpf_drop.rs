//! `drop` on an interface (TCX) between two network namespaces, against the real kernel (root):
//! measured loss over numbered UDP datagrams at 30%, 0% and 100%, matches that must not hit,
//! ingress, the auto-exclusions, refusals, and the revert contract.

mod net_ebpf_support;

use std::process::Command;

use faultline_agent::engine::driver::{Driver, DriverError, RevertOutcome};
use faultline_agent::net::KernelLease;
use faultline_core::fault::{
    Direction, DropFault, Fault, FaultSpec, Protocol, Target, TrafficMatch,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use net_ebpf_support::*;

fn udp_port(port: u16) -> TrafficMatch {
    TrafficMatch {
        ports: vec![port],
        protocol: Protocol::Udp,
        ..TrafficMatch::default()
    }
}

#[test]
fn drop_30_percent_on_egress_measures_27_to_33_percent() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx = udp_in(&p.b.path(), &format!("{B}:5001"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let spec = drop_spec(&p.a.path(), Some(&p.if_a), 0.3, udp_port(5001));
    let c = ctx(120);
    let r = apply(d.as_ref(), &c, &spec);
    let n = 20_000;
    let m = measure(&tx, &rx, &format!("{B}:5001"), n);
    let matched = counter(d.as_ref(), &r, "packets_matched");
    let dropped = counter(d.as_ref(), &r, "packets_dropped");
    println!(
        "drop 30%: sent {} received {} loss {:.2}% (matched {matched}, dropped {dropped})",
        m.sent,
        m.received,
        m.loss() * 100.0
    );
    assert!(
        (0.27..=0.33).contains(&m.loss()),
        "measured loss {:.2}% is outside [27%, 33%]",
        m.loss() * 100.0
    );
    assert_eq!(
        matched,
        u64::from(n),
        "every datagram passed the egress hook"
    );
    assert_eq!(
        u64::from(m.received) + dropped,
        u64::from(n),
        "what arrived plus what the program dropped is what was sent"
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    assert_eq!(
        d.revert(&r).expect("revert again"),
        RevertOutcome::AlreadyGone
    );
    let after = measure(&tx, &rx, &format!("{B}:5001"), 2_000);
    assert_eq!(
        after.received, after.sent,
        "after revert nothing is dropped"
    );
}

#[test]
fn drop_0_and_100_percent() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx = udp_in(&p.b.path(), &format!("{B}:5002"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));

    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 0.0, udp_port(5002)),
    );
    let m = measure(&tx, &rx, &format!("{B}:5002"), 10_000);
    assert_eq!(m.received, 10_000, "0% drops nothing");
    assert_eq!(counter(d.as_ref(), &r, "packets_matched"), 10_000);
    assert_eq!(counter(d.as_ref(), &r, "packets_dropped"), 0);
    d.revert(&r).expect("revert");

    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5002)),
    );
    let m = measure(&tx, &rx, &format!("{B}:5002"), 10_000);
    assert_eq!(m.received, 0, "100% drops everything");
    // The health poll also feeds the Prometheus counter.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let dropped =
        metrics::with_local_recorder(&recorder, || counter(d.as_ref(), &r, "packets_dropped"));
    assert_eq!(dropped, 10_000);
    let text = handle.render();
    assert!(
        text.contains(
            r#"faultline_agent_ebpf_packets_total{fault_kind="drop",verdict="dropped"} 10000"#
        ),
        "{text}"
    );
    d.revert(&r).expect("revert");
}

#[test]
fn pid_target_acts_in_the_process_netns() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    assert_eq!(d.available(), Ok(()));
    let mut sleeper = Command::new("nsenter")
        .arg(format!("--net={}", p.b.path().display()))
        .args(["sleep", "30"])
        .spawn()
        .expect("spawn nsenter sleep (util-linux)");
    let pid = sleeper.id();
    let spec = FaultSpec {
        target: Target::Pid(pid),
        fault: Fault::Drop(DropFault {
            interface: Some(p.if_b.clone()),
            probability: 1.0,
            matcher: TrafficMatch {
                direction: Direction::Ingress,
                ..udp_port(5006)
            },
        }),
    };
    // nsenter execs sleep in place, but give it a moment to enter the netns.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let r = apply(d.as_ref(), &ctx(120), &spec);
        assert_eq!(r.data["scope"]["netns"], format!("/proc/{pid}/ns/net"));
        let rx = udp_in(&p.b.path(), &format!("{B}:5006"));
        let tx = udp_in(&p.a.path(), &format!("{A}:0"));
        assert_eq!(measure(&tx, &rx, &format!("{B}:5006"), 500).received, 0);
        d.revert(&r).expect("revert");
    }));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn non_matching_port_and_cidr_are_unaffected() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx_other_port = udp_in(&p.b.path(), &format!("{B}:6000"));
    let rx_b = udp_in(&p.b.path(), &format!("{B}:5003"));
    let rx_b2 = udp_in(&p.b.path(), &format!("{B2}:5003"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let m = TrafficMatch {
        destinations: vec![cidr(&format!("{B}/32"))],
        ports: vec![5003],
        protocol: Protocol::Udp,
        ..TrafficMatch::default()
    };
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, m),
    );
    let hit = measure(&tx, &rx_b, &format!("{B}:5003"), 2_000);
    let other_port = measure(&tx, &rx_other_port, &format!("{B}:6000"), 10_000);
    let other_cidr = measure(&tx, &rx_b2, &format!("{B2}:5003"), 10_000);
    println!(
        "matching {}/{}, other port {}/{}, other CIDR {}/{}",
        hit.received,
        hit.sent,
        other_port.received,
        other_port.sent,
        other_cidr.received,
        other_cidr.sent
    );
    assert_eq!(hit.received, 0, "the matching flow is dropped");
    assert_eq!(
        other_port.received, other_port.sent,
        "port 6000 is not matched"
    );
    assert_eq!(other_cidr.received, other_cidr.sent, "{B2} is not matched");
    assert_eq!(counter(d.as_ref(), &r, "packets_matched"), 2_000);
    d.revert(&r).expect("revert");
}

#[test]
fn ingress_drop_on_the_receiving_side_and_default_interface() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx = udp_in(&p.b.path(), &format!("{B}:5004"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let m = TrafficMatch {
        sources: vec![cidr("10.200.1.0/24")],
        direction: Direction::Ingress,
        ..udp_port(5004)
    };
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.b.path(), Some(&p.if_b), 1.0, m),
    );
    assert_eq!(measure(&tx, &rx, &format!("{B}:5004"), 2_000).received, 0);
    d.revert(&r).expect("revert");

    // No interface named: the one of the default route of netns a.
    let spec = drop_spec(&p.a.path(), None, 1.0, udp_port(5004));
    let planned = d.plan(&ctx(120), &spec).expect("plan");
    assert_eq!(planned.data["scope"]["interface"], p.if_a.as_str());
    assert_eq!(planned.data["programs"][0], "fl_drop_tc_eg");
}

#[test]
fn coordinator_address_and_ssh_are_protected_unless_included() {
    require_root();
    let p = Pair::new();
    // B2 plays the coordinator.
    let d = driver(&[B2], &KernelLease::new());
    let rx_b = udp_in(&p.b.path(), &format!("{B}:5005"));
    let rx_coord = udp_in(&p.b.path(), &format!("{B2}:5005"));
    let rx_ssh = udp_in(&p.b.path(), &format!("{B}:22"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let everything = TrafficMatch::default();
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, everything.clone()),
    );
    assert_eq!(measure(&tx, &rx_b, &format!("{B}:5005"), 1_000).received, 0);
    let coord = measure(&tx, &rx_coord, &format!("{B2}:5005"), 1_000);
    let ssh = measure(&tx, &rx_ssh, &format!("{B}:22"), 1_000);
    assert_eq!(
        coord.received, 1_000,
        "the coordinator's address is never dropped"
    );
    assert_eq!(ssh.received, 1_000, "port 22 is never dropped");
    d.revert(&r).expect("revert");

    let included = TrafficMatch {
        include_protected: true,
        ..everything
    };
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, included),
    );
    assert_eq!(
        measure(&tx, &rx_coord, &format!("{B2}:5005"), 500).received,
        0
    );
    assert_eq!(measure(&tx, &rx_ssh, &format!("{B}:22"), 500).received, 0);
    d.revert(&r).expect("revert");
}

#[test]
fn refusals_name_what_is_wrong_before_any_change() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let spec = drop_spec(&p.a.path(), Some("nosuch0"), 0.5, TrafficMatch::default());
    match d.plan(&ctx(60), &spec) {
        Err(DriverError::Refused(msg)) => {
            assert!(
                msg.contains("interface \"nosuch0\" does not exist"),
                "{msg}"
            );
            assert!(
                msg.contains(&p.if_a) && msg.contains("lo"),
                "lists interfaces: {msg}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let spec = drop_spec(&p.a.path(), Some(&p.if_a), 0.5, udp_port(0));
    match d.plan(&ctx(60), &spec) {
        Err(DriverError::Refused(msg)) => {
            assert_eq!(msg, "match.ports: port 0 is outside 1..=65535")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let spec = drop_spec(
        std::path::Path::new("/run/netns/fl-t-missing"),
        None,
        0.5,
        TrafficMatch::default(),
    );
    match d.plan(&ctx(60), &spec) {
        Err(DriverError::Refused(msg)) => {
            assert!(msg.contains("/run/netns/fl-t-missing"), "{msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn ipv6_destinations_and_ports_match() {
    require_root();
    let p = Pair::new();
    p.a.exec(&["addr", "add", "fd00:fa17::1/64", "dev", &p.if_a, "nodad"]);
    p.b.exec(&["addr", "add", "fd00:fa17::2/64", "dev", &p.if_b, "nodad"]);
    p.b.exec(&["addr", "add", "fd00:fa17::3/64", "dev", &p.if_b, "nodad"]);
    let d = driver(&[], &KernelLease::new());
    let rx2 = udp_in(&p.b.path(), "[fd00:fa17::2]:5007");
    let rx3 = udp_in(&p.b.path(), "[fd00:fa17::3]:5007");
    let tx = udp_in(&p.a.path(), "[fd00:fa17::1]:0");
    let m = TrafficMatch {
        destinations: vec![cidr("fd00:fa17::2/128")],
        ..udp_port(5007)
    };
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, m),
    );
    let hit = measure(&tx, &rx2, "[fd00:fa17::2]:5007", 1_000);
    let other = measure(&tx, &rx3, "[fd00:fa17::3]:5007", 1_000);
    println!(
        "ipv6: matching {}/{}, other address {}/{}",
        hit.received, hit.sent, other.received, other.sent
    );
    assert_eq!(hit.received, 0, "fd00:fa17::2 is dropped");
    assert_eq!(other.received, 1_000, "fd00:fa17::3 is not matched");
    d.revert(&r).expect("revert");
}
