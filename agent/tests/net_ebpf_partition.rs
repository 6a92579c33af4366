//! `partition` against the real kernel (root): traffic to and from the peer is blocked in both
//! directions on the default-route interface; a second peer behind the same interface is not.

mod net_ebpf_support;

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::net::KernelLease;
use faultline_core::fault::{Direction, Fault, FaultSpec, PartitionFault, Target};
use net_ebpf_support::*;

#[test]
fn partition_blocks_both_directions_and_spares_other_peers() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    // a -> b, a -> b2, and b -> a, b2 -> a.
    let a_rx = udp_in(&p.a.path(), &format!("{A}:8000"));
    let a_tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let b_rx = udp_in(&p.b.path(), &format!("{B}:8001"));
    let b2_rx = udp_in(&p.b.path(), &format!("{B2}:8001"));
    let b_tx = udp_in(&p.b.path(), &format!("{B}:0"));
    let b2_tx = udp_in(&p.b.path(), &format!("{B2}:0"));

    let spec = FaultSpec {
        target: Target::Netns(p.a.path().display().to_string()),
        fault: Fault::Partition(PartitionFault {
            interface: None,
            peers: vec![cidr(&format!("{B}/32"))],
            direction: Direction::Both,
        }),
    };
    let r = apply(d.as_ref(), &ctx(120), &spec);
    assert_eq!(r.kind, "partition");
    assert_eq!(r.data["scope"]["interface"], p.if_a.as_str());
    assert_eq!(r.data["programs"][0], "fl_drop_tc_in");
    assert_eq!(r.data["programs"][1], "fl_drop_tc_eg");

    let to_peer = measure(&a_tx, &b_rx, &format!("{B}:8001"), 1_000);
    let from_peer = measure(&b_tx, &a_rx, &format!("{A}:8000"), 1_000);
    let to_other = measure(&a_tx, &b2_rx, &format!("{B2}:8001"), 1_000);
    let from_other = measure(&b2_tx, &a_rx, &format!("{A}:8000"), 1_000);
    println!(
        "partition: a->peer {}/{}, peer->a {}/{}, a->other {}/{}, other->a {}/{}",
        to_peer.received,
        to_peer.sent,
        from_peer.received,
        from_peer.sent,
        to_other.received,
        to_other.sent,
        from_other.received,
        from_other.sent
    );
    assert_eq!(to_peer.received, 0, "a -> peer is blocked");
    assert_eq!(from_peer.received, 0, "peer -> a is blocked");
    assert_eq!(to_other.received, to_other.sent, "a -> other peer flows");
    assert_eq!(
        from_other.received, from_other.sent,
        "other peer -> a flows"
    );
    assert!(counter(d.as_ref(), &r, "packets_dropped") >= 2_000);

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    assert_eq!(
        measure(&a_tx, &b_rx, &format!("{B}:8001"), 500).received,
        500
    );
    assert_eq!(
        measure(&b_tx, &a_rx, &format!("{A}:8000"), 500).received,
        500
    );
}
