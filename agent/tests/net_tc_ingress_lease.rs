//! Ingress `network` faults and the agent's lifecycle (root, this machine's kernel): a lease
//! that is not renewed ends the ingress redirect (the renewal rewrites ingress deadlines too),
//! and a new process reverts, from the journaled recipe alone, an ingress tree it does not
//! hold by deleting the IFB device.

mod net_tc_support;

use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::RevertOutcome;
use faultline_core::fault::{Direction, Fault, FaultSpec, NetworkFault, Target, Tbf, TrafficMatch};
use net_tc_support::*;

fn spec(netns: &str, direction: Direction) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(netns.to_string()),
        fault: Fault::Network(NetworkFault {
            interface: Some("va".into()),
            matcher: TrafficMatch {
                ports: vec![5001],
                direction,
                ..TrafficMatch::default()
            },
            netem: None,
            tbf: Some(Tbf {
                rate_bps: 10_000_000,
                ..Tbf::default()
            }),
        }),
    }
}

#[test]
fn a_lease_that_is_not_renewed_ends_ingress_steering() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("inl");
    let (d, lease) = leased_driver();
    let c = ctx("leased-in");
    let s = spec(&pair.path_a(), Direction::Ingress);
    let planned = d.plan(&c, &s).expect("plan");
    let recipe = d.apply(&c, &s, &planned).expect("apply");
    let flow = Flow::start_into_a(&pair, 5001);
    std::thread::sleep(Duration::from_millis(1000));
    let shaped = flow.rate_over(Duration::from_secs(1));
    assert!(shaped < 11_000_000.0, "not shaping: {}", mbit(shaped));
    let renewed = Instant::now();
    lease.renew(SystemTime::now());
    let took = time_to_line_rate(&flow, renewed, Duration::from_secs(3));
    drop(flow);
    println!(
        "ingress, lease cut to now: shaped {} before; line rate after {took:?}",
        mbit(shaped)
    );
    let took = took.expect("inbound traffic still shaped 3 s after the lease ended");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(d.revert(&recipe).expect("revert"), RevertOutcome::Reverted);
    assert!(!pair.ip_a("-o link show").contains("flifb"));
}

#[test]
fn a_new_process_reverts_an_ingress_tree_it_does_not_hold() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("inr");
    let recipe = {
        let d = driver();
        let c = ctx("orphan-both");
        let s = spec(&pair.path_a(), Direction::Both);
        let planned = d.plan(&c, &s).expect("plan");
        let r = d.apply(&c, &s, &planned).expect("apply");
        // Leak the driver's state as a crashed agent would.
        std::mem::forget(d);
        r
    };
    let ifb = recipe.data["ifb"].as_str().expect("ifb").to_string();
    assert!(pair.ip_a("-o link show").contains(&ifb));
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc htb fa17: root"));
    let fresh = driver();
    assert_eq!(
        fresh.revert(&recipe).expect("revert"),
        RevertOutcome::Reverted
    );
    assert!(!pair.ip_a("-o link show").contains(&ifb), "{ifb} is left");
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc noqueue 0: root"));
    assert_eq!(
        fresh.revert(&recipe).expect("again"),
        RevertOutcome::AlreadyGone
    );
}
