//! `network` faults on ingress against this machine's kernel (root; HTB, TBF, TCX, IFB): a tbf
//! fault with `direction: ingress` on A's `va` limits TCP into A and leaves TCP out of A at line
//! rate; `both` limits both ways; a port match leaves other inbound traffic alone; revert
//! restores line rate and deletes the IFB device; SIGKILL of the holder un-redirects at once and
//! the next start's sweep deletes the IFB it left.

mod net_tc_support;

use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, Health, Recipe, RevertOutcome};
use faultline_core::fault::{Direction, Fault, FaultSpec, NetworkFault, Target, Tbf, TrafficMatch};
use net_tc_support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CHILD_ENV: &str = "FL_TC_INGRESS_CHILD_NETNS";
const RATE: f64 = 10_000_000.0;

fn spec(netns: &str, direction: Direction, ports: &[u16]) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(netns.to_string()),
        fault: Fault::Network(NetworkFault {
            interface: Some("va".into()),
            matcher: TrafficMatch {
                ports: ports.to_vec(),
                direction,
                ..TrafficMatch::default()
            },
            netem: None,
            tbf: Some(Tbf {
                rate_bps: RATE as u64,
                ..Tbf::default()
            }),
        }),
    }
}

fn apply(d: &dyn Driver, id: &str, spec: &FaultSpec) -> Recipe {
    let c = ctx(id);
    let planned = d
        .plan(&c, spec)
        .unwrap_or_else(|e| panic!("plan {id}: {e}"));
    d.apply(&c, spec, &planned)
        .unwrap_or_else(|e| panic!("apply {id}: {e}"))
}

/// The IFB Faultline uses for `va` in A: `flifb<ifindex of va>`.
fn ifb_of_va(pair: &Pair) -> String {
    let line = pair.ip_a("-o link show va");
    let index = line
        .split(':')
        .next()
        .and_then(|i| i.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no ifindex in {line:?}"));
    format!("flifb{index}")
}

/// Throughput of a flow over 2 s after 1 s of warm-up.
fn measure(flow: Flow) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let r = flow.rate_over(Duration::from_secs(2));
    drop(flow);
    r
}

fn assert_near_rate(what: &str, rate: f64) {
    println!(
        "{what}: {} ({:+.1}% of 10 Mbit/s)",
        mbit(rate),
        (rate / RATE - 1.0) * 100.0
    );
    assert!(
        (0.9 * RATE..=1.1 * RATE).contains(&rate),
        "{what}: measured {} is outside 10 Mbit/s +-10%",
        mbit(rate)
    );
}

fn assert_line_rate(what: &str, rate: f64) {
    println!("{what}: {}", mbit(rate));
    assert!(rate > LINE_RATE_FLOOR, "{what}: limited to {}", mbit(rate));
}

fn assert_no_ifb(pair: &Pair) {
    let links = pair.ip_a("-o link show");
    assert!(!links.contains("flifb"), "an IFB is left: {links}");
}

#[test]
fn ingress_limits_inbound_only_both_limits_both_ways_and_revert_deletes_the_ifb() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("ing");
    let d = driver();
    let ifb = ifb_of_va(&pair);
    let recipe = apply(
        d.as_ref(),
        "in-10mbit",
        &spec(&pair.path_a(), Direction::Ingress, &[5001]),
    );
    assert_eq!(recipe.data["ifb"], ifb.as_str(), "{recipe:?}");
    assert_eq!(recipe.data["ingress_class"], "fa17:2", "{recipe:?}");
    assert_eq!(recipe.data["sides"], serde_json::json!(["ingress"]));

    // The device as `ip -d link` shows it (made with the rtnetlink crate's ifb builder).
    let link = pair.ip_a(&format!("-d link show {ifb}"));
    assert!(
        link.contains(&format!("{ifb}: <BROADCAST,NOARP,UP,LOWER_UP>")),
        "{link}"
    );
    assert!(link.contains("\n    ifb "), "not an ifb: {link}");
    let qdiscs = pair.tc_a(&format!("qdisc show dev {ifb}"));
    assert!(qdiscs.contains("qdisc htb fa17: root"), "{qdiscs}");
    assert!(
        qdiscs.contains("qdisc tbf fc02: parent fa17:2 rate 10Mbit"),
        "{qdiscs}"
    );
    // Egress is untouched.
    let va = pair.tc_a("qdisc show dev va");
    assert!(va.contains("qdisc noqueue 0: root"), "{va}");

    assert_near_rate(
        "ingress tbf 10mbit, TCP into A (port 5001)",
        measure(Flow::start_into_a(&pair, 5001)),
    );
    assert_line_rate(
        "ingress tbf 10mbit, TCP out of A (port 5001)",
        measure(Flow::start(&pair, 5001)),
    );
    match d.health(&recipe) {
        Health::Ok(c) => {
            let get = |name: &str| c.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            assert!(
                get("ingress_packets_steered").unwrap_or(0) > 50,
                "steering counters {c:?}"
            );
            assert_eq!(get("packets_steered"), get("ingress_packets_steered"));
            assert_eq!(get("packets_matched"), get("packets_steered"), "{c:?}");
        }
        other => panic!("health {other:?}"),
    }
    let stats = pair.tc_a(&format!("-s class show dev {ifb}"));
    assert!(stats.contains("class htb fa17:2"), "{stats}");

    assert_eq!(d.revert(&recipe).expect("revert"), RevertOutcome::Reverted);
    assert_no_ifb(&pair);
    assert_line_rate(
        "after revert, TCP into A",
        measure(Flow::start_into_a(&pair, 5001)),
    );
    assert_eq!(
        d.revert(&recipe).expect("revert again"),
        RevertOutcome::AlreadyGone
    );

    // Both directions: one fault, a member of the egress tree on va and the IFB's tree.
    let both = apply(
        d.as_ref(),
        "both-10mbit",
        &spec(&pair.path_a(), Direction::Both, &[5001]),
    );
    assert_eq!(both.data["class"], "fa17:2", "{both:?}");
    assert_eq!(both.data["ingress_class"], "fa17:2", "{both:?}");
    let va = pair.tc_a("qdisc show dev va");
    assert!(
        va.contains("qdisc tbf fc02: parent fa17:2 rate 10Mbit"),
        "{va}"
    );
    assert_near_rate(
        "both tbf 10mbit, TCP into A",
        measure(Flow::start_into_a(&pair, 5001)),
    );
    assert_near_rate(
        "both tbf 10mbit, TCP out of A",
        measure(Flow::start(&pair, 5001)),
    );
    assert_eq!(
        d.revert(&both).expect("revert both"),
        RevertOutcome::Reverted
    );
    assert_no_ifb(&pair);
    let va = pair.tc_a("qdisc show dev va");
    assert!(va.contains("qdisc noqueue 0: root"), "{va}");
    assert_line_rate(
        "after revert of both, TCP into A",
        measure(Flow::start_into_a(&pair, 5001)),
    );
    assert_line_rate(
        "after revert of both, TCP out of A",
        measure(Flow::start(&pair, 5001)),
    );
}

#[test]
fn inbound_traffic_the_match_leaves_out_is_unaffected() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("ingm");
    let d = driver();
    // Port 5001, and only from a CIDR B is not in: nothing B sends matches.
    let mut s = spec(&pair.path_a(), Direction::Ingress, &[5001]);
    let port_only = apply(d.as_ref(), "in-port", &s);
    assert_line_rate(
        "ingress match port 5001, TCP into A on port 5002",
        measure(Flow::start_into_a(&pair, 5002)),
    );
    assert_eq!(
        d.revert(&port_only).expect("revert"),
        RevertOutcome::Reverted
    );

    if let Fault::Network(n) = &mut s.fault {
        n.matcher.sources = vec!["10.99.0.0/16".parse().expect("cidr")];
    }
    let other_source = apply(d.as_ref(), "in-cidr", &s);
    assert_line_rate(
        "ingress match source 10.99.0.0/16, TCP from B into A on port 5001",
        measure(Flow::start_into_a(&pair, 5001)),
    );
    assert_eq!(
        d.revert(&other_source).expect("revert"),
        RevertOutcome::Reverted
    );
    assert_no_ifb(&pair);
}

#[test]
fn a_device_that_takes_the_ifb_name_is_refused_before_any_change() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("ingn");
    let ifb = ifb_of_va(&pair);
    pair.ip_a(&format!("link add {ifb} type veth peer name flpeer0"));
    let e = driver()
        .plan(&ctx("taken"), &spec(&pair.path_a(), Direction::Both, &[]))
        .expect_err("a veth named like the IFB");
    assert_eq!(
        e.to_string(),
        format!("interface {ifb} exists and is a veth device, not an ifb; Faultline needs that name for the ingress tree and will not touch it")
    );
    let va = pair.tc_a("qdisc show dev va");
    assert!(va.contains("qdisc noqueue 0: root"), "{va}");
}

/// Not a test on its own: the "agent" process the SIGKILL test starts (and kills).
#[test]
#[ignore = "run by sigkill_of_the_holder_stops_the_redirect_and_the_sweep_deletes_the_ifb"]
fn child_holds_an_ingress_fault() {
    let netns = std::env::var(CHILD_ENV).expect("FL_TC_INGRESS_CHILD_NETNS (set by the parent)");
    let d = driver();
    apply(
        d.as_ref(),
        "killed-ingress-holder",
        &spec(&netns, Direction::Ingress, &[5001]),
    );
    println!("{APPLIED}");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn sigkill_of_the_holder_stops_the_redirect_and_the_sweep_deletes_the_ifb() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("ingk");
    let ifb = ifb_of_va(&pair);
    let mut holder = start_holder("child_holds_an_ingress_fault", CHILD_ENV, &pair.path_a());
    assert!(pair.ip_a("-o link show").contains(&ifb));

    // Another agent's sweep leaves a tree a live process steers into alone.
    let lines = driver().sweep(&[]);
    assert!(
        !lines.iter().any(|l| l.contains(&ifb)),
        "swept a live tree: {lines:#?}"
    );
    assert!(pair.ip_a("-o link show").contains(&ifb));

    let flow = Flow::start_into_a(&pair, 5001);
    std::thread::sleep(Duration::from_millis(1500));
    let shaped = flow.rate_over(Duration::from_secs(1));
    assert!(shaped < 11_000_000.0, "not shaping: {}", mbit(shaped));

    let killed = Instant::now();
    kill(Pid::from_raw(holder.0.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    let _ = holder.0.wait();
    let took = time_to_line_rate(&flow, killed, Duration::from_secs(3));
    let after = flow.rate_over(Duration::from_millis(500));
    drop(flow);
    println!(
        "SIGKILL of the ingress holder: shaped {} before, {} after; back above {} in {:?}",
        mbit(shaped),
        mbit(after),
        mbit(LINE_RATE_FLOOR),
        took.map(|t| t.as_millis())
    );
    let took = took.expect("inbound traffic stayed shaped for 3 s after SIGKILL");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Nobody reverted: the IFB and its tree are still there, only the redirect died.
    let qdiscs = pair.tc_a(&format!("qdisc show dev {ifb}"));
    assert!(qdiscs.contains("qdisc htb fa17: root"), "{qdiscs}");

    let lines = driver().sweep(&[]);
    let want = format!(
        "sweep: removed the Faultline ingress device {ifb} (ifb, with its qdisc tree fa17:) of interface va in netns {}",
        pair.path_a()
    );
    println!("sweep said: {lines:?}");
    assert!(lines.contains(&want), "sweep said {lines:#?}");
    assert_no_ifb(&pair);
    drop(holder);
}
