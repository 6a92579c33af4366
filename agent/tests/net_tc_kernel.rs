//! The `network` driver against this machine's kernel (root; HTB, TBF, TCX; no netem here):
//! two network namespaces joined by a veth pair, a tbf fault steered onto one TCP port, its
//! measured throughput, the tree as `tc` shows it, composition, refusals, revert and the
//! restore of the previous root (ingress: `net_tc_ingress`).

mod net_tc_support;

use std::time::Duration;

use faultline_agent::engine::driver::{DriverError, Recipe, RevertOutcome};
use faultline_core::fault::{Direction, Fault, FaultSpec, NetworkFault, Target, Tbf, TrafficMatch};
use net_tc_support::*;

fn tbf_spec(pair: &Pair, ports: &[u16], rate_bps: u64) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(pair.path_a()),
        fault: Fault::Network(NetworkFault {
            interface: Some("va".into()),
            matcher: TrafficMatch {
                ports: ports.to_vec(),
                ..TrafficMatch::default()
            },
            netem: None,
            tbf: Some(Tbf {
                rate_bps,
                ..Tbf::default()
            }),
        }),
    }
}

fn apply(d: &dyn faultline_agent::engine::driver::Driver, id: &str, spec: &FaultSpec) -> Recipe {
    let c = ctx(id);
    let planned = d
        .plan(&c, spec)
        .unwrap_or_else(|e| panic!("plan {id}: {e}"));
    d.apply(&c, spec, &planned)
        .unwrap_or_else(|e| panic!("apply {id}: {e}"))
}

#[test]
fn tbf_10mbit_holds_tcp_to_10mbit_and_revert_restores_the_root() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("tbf");
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc noqueue 0: root"));
    let d = driver();
    let recipe = apply(
        d.as_ref(),
        "tbf-10mbit",
        &tbf_spec(&pair, &[5001], 10_000_000),
    );
    assert_eq!(recipe.data["class"], "fa17:2", "{recipe:?}");

    let qdiscs = pair.tc_a("qdisc show dev va");
    assert!(qdiscs.contains("qdisc htb fa17: root"), "{qdiscs}");
    assert!(
        qdiscs.contains("qdisc tbf fc02: parent fa17:2 rate 10Mbit"),
        "{qdiscs}"
    );
    let classes = pair.tc_a("class show dev va");
    assert!(
        classes.contains("class htb fa17:1 root prio 0 rate 100Gbit"),
        "{classes}"
    );
    assert!(
        classes.contains("class htb fa17:2 root leaf fc02:"),
        "{classes}"
    );

    // Port 5001 is steered into the 10 Mbit/s class: TCP goodput within +-10%.
    let flow = Flow::start(&pair, 5001);
    std::thread::sleep(Duration::from_secs(1));
    let rate = flow.rate_over(Duration::from_secs(4));
    drop(flow);
    println!(
        "tbf rate 10mbit: measured TCP goodput {} ({:+.1}%)",
        mbit(rate),
        (rate / 1e7 - 1.0) * 100.0
    );
    assert!(
        (9_000_000.0..=11_000_000.0).contains(&rate),
        "measured {} is outside 10 Mbit/s +-10%",
        mbit(rate)
    );
    let stats = pair.tc_a("-s class show dev va");
    assert!(stats.contains("class htb fa17:2"), "{stats}");

    // Port 5002 does not match: it stays in the default class, far above 10 Mbit/s.
    let other = Flow::start(&pair, 5002);
    std::thread::sleep(Duration::from_millis(300));
    let free = other.rate_over(Duration::from_secs(1));
    drop(other);
    println!("unmatched port 5002 under the same fault: {}", mbit(free));
    assert!(
        free > 50_000_000.0,
        "unmatched traffic was limited: {}",
        mbit(free)
    );
    match d.health(&recipe) {
        faultline_agent::engine::driver::Health::Ok(c) => {
            let get = |name: &str| c.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            // Counted per (GSO) packet handed to the qdisc.
            assert!(
                get("packets_steered").unwrap_or(0) > 50,
                "steering counters {c:?}"
            );
            assert_eq!(get("packets_steered"), get("packets_matched"), "{c:?}");
        }
        other => panic!("health {other:?}"),
    }

    assert_eq!(d.revert(&recipe).expect("revert"), RevertOutcome::Reverted);
    let after = pair.tc_a("qdisc show dev va");
    assert!(
        after.contains("qdisc noqueue 0: root"),
        "not restored: {after}"
    );
    assert!(!after.contains("fa17"), "{after}");
    assert_eq!(
        d.revert(&recipe).expect("revert again"),
        RevertOutcome::AlreadyGone
    );
}

#[test]
fn faults_compose_into_one_tree_and_conflicts_are_refused() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("compose");
    let d = driver();
    let r1 = apply(d.as_ref(), "rate-a", &tbf_spec(&pair, &[5001], 10_000_000));
    let r2 = apply(d.as_ref(), "rate-b", &tbf_spec(&pair, &[6001], 20_000_000));
    let classes = pair.tc_a("class show dev va");
    for c in ["fa17:1", "fa17:2", "fa17:3"] {
        assert!(
            classes.contains(&format!("class htb {c} ")),
            "{c} missing: {classes}"
        );
    }
    let qdiscs = pair.tc_a("qdisc show dev va");
    assert!(
        qdiscs.contains("tbf fc02: parent fa17:2 rate 10Mbit"),
        "{qdiscs}"
    );
    assert!(
        qdiscs.contains("tbf fc03: parent fa17:3 rate 20Mbit"),
        "{qdiscs}"
    );
    assert_eq!(qdiscs.matches("qdisc htb").count(), 1, "one tree: {qdiscs}");

    // The same traffic cannot get two rates: refused at plan, nothing changes.
    let e = d
        .plan(&ctx("rate-c"), &tbf_spec(&pair, &[5001], 1_000_000))
        .expect_err("conflict");
    assert!(matches!(e, DriverError::Refused(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("fault rate-c sets rate for the same traffic as fault rate-a"),
        "{e}"
    );
    assert_eq!(pair.tc_a("qdisc show dev va"), qdiscs);

    assert_eq!(d.revert(&r1).expect("revert a"), RevertOutcome::Reverted);
    let classes = pair.tc_a("class show dev va");
    assert!(!classes.contains("fa17:2 "), "{classes}");
    assert!(classes.contains("fa17:3 "), "{classes}");
    assert_eq!(d.revert(&r2).expect("revert b"), RevertOutcome::Reverted);
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc noqueue 0: root"));
}

#[test]
fn custom_roots_and_unknown_interfaces_are_refused_before_any_change_but_ingress_is_not() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("refuse");
    let d = driver();
    pair.tc_a("qdisc add dev va root handle 1: pfifo");
    let e = d
        .plan(&ctx("custom"), &tbf_spec(&pair, &[], 10_000_000))
        .expect_err("custom root");
    assert_eq!(
        e.to_string(),
        "interface va has a custom root qdisc pfifo (handle 1:); Faultline will not replace it"
    );
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc pfifo 1: root"));

    let mut ingress = tbf_spec(&pair, &[], 10_000_000);
    if let Fault::Network(n) = &mut ingress.fault {
        n.matcher.direction = Direction::Ingress;
    }
    // Ingress leaves the interface's root alone (its tree is on an IFB): not refused.
    let planned = d
        .plan(&ctx("ingress"), &ingress)
        .expect("ingress does not replace the custom root");
    assert_eq!(planned.data["sides"], serde_json::json!(["ingress"]));
    assert!(
        planned.data["ifb"]
            .as_str()
            .is_some_and(|n| n.starts_with("flifb")),
        "{planned:?}"
    );

    let mut unknown = tbf_spec(&pair, &[], 10_000_000);
    if let Fault::Network(n) = &mut unknown.fault {
        n.interface = Some("nope0".into());
    }
    let e = d
        .plan(&ctx("unknown"), &unknown)
        .expect_err("unknown interface");
    assert!(e.to_string().contains("\"nope0\" does not exist"), "{e}");
    assert!(e.to_string().contains("va"), "lists the interfaces: {e}");

    let e = d
        .plan(&ctx("port0"), &tbf_spec(&pair, &[0], 10_000_000))
        .expect_err("port 0");
    assert_eq!(e.to_string(), "match.ports: port 0 is outside 1..=65535");
}

#[test]
fn a_new_process_reverts_a_tree_it_does_not_hold() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("restart");
    let recipe = {
        let d = driver();
        let r = apply(d.as_ref(), "orphan", &tbf_spec(&pair, &[5001], 10_000_000));
        // Leak the driver's state as a crashed agent would (its steering link dies with it).
        std::mem::forget(d);
        r
    };
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc htb fa17: root"));
    let fresh = driver();
    assert_eq!(
        fresh.revert(&recipe).expect("revert"),
        RevertOutcome::Reverted
    );
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc noqueue 0: root"));
    assert_eq!(
        fresh.revert(&recipe).expect("again"),
        RevertOutcome::AlreadyGone
    );
}

#[test]
fn the_default_route_interface_is_used_when_none_is_named() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("route");
    let mut spec = tbf_spec(&pair, &[], 10_000_000);
    if let Fault::Network(n) = &mut spec.fault {
        n.interface = None;
    }
    let d = driver();
    let e = d
        .plan(&ctx("no-route"), &spec)
        .expect_err("no default route");
    assert!(e.to_string().contains("has no default route"), "{e}");
    sh(&format!("ip -n {} route add default via {B_IP}", pair.a));
    let recipe = d.plan(&ctx("route"), &spec).expect("plan");
    assert_eq!(recipe.data["interface"], "va", "{recipe:?}");
    assert_eq!(recipe.data["netns"], pair.path_a());
}

#[test]
fn revert_after_the_netns_is_gone_is_already_gone() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("gone");
    let d = driver();
    let recipe = apply(d.as_ref(), "gone", &tbf_spec(&pair, &[5001], 10_000_000));
    sh(&format!("ip netns del {}", pair.a));
    assert_eq!(
        d.revert(&recipe).expect("revert"),
        RevertOutcome::AlreadyGone
    );
    assert_eq!(
        d.revert(&recipe).expect("again"),
        RevertOutcome::AlreadyGone
    );
}
