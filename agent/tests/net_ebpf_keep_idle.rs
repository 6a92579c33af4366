//! The idle expiry of kept TCX links against the real kernel (root), in a test binary of its
//! own since the expiry is a process-wide setting: a link without a fault is detached after
//! `network.link_idle`, one holding a fault never is, and the next fault attaches afresh.

mod net_ebpf_support;

use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::net::{keep, KernelLease};
use faultline_core::fault::{Protocol, TrafficMatch};
use net_ebpf_support::*;

#[test]
fn an_idle_kept_link_is_detached_after_the_idle_expiry() {
    require_root();
    let idle = Duration::from_millis(400);
    keep::set_idle(idle);
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx = udp_in(&p.b.path(), &format!("{B}:5026"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let to = format!("{B}:5026");
    let spec = drop_spec(
        &p.a.path(),
        Some(&p.if_a),
        1.0,
        TrafficMatch {
            ports: vec![5026],
            protocol: Protocol::Udp,
            ..TrafficMatch::default()
        },
    );

    let r = apply(d.as_ref(), &ctx(120), &spec);
    // Held for three idle expiries: a link holding a fault is never detached.
    std::thread::sleep(idle * 3);
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 1, "in use: kept");
    assert_eq!(measure(&tx, &rx, &to, 300).received, 0, "still dropping");

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    let freed = Instant::now();
    assert_eq!(
        dispatchers(&p.a.path(), &p.if_a),
        1,
        "kept right after the revert"
    );
    let m = measure(&tx, &rx, &to, 300);
    assert_eq!(m.received, m.sent, "the revert was immediate");
    let gone = loop {
        if dispatchers(&p.a.path(), &p.if_a) == 0 {
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < idle * 4,
            "the idle link is still attached {:?} after its last fault (idle expiry {idle:?})",
            freed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("idle link detached {gone:?} after its last fault (expiry {idle:?})");
    assert!(gone >= idle, "detached before the idle expiry ({gone:?})");
    assert_eq!(keep::count(), (0, 0), "nothing kept in the process");

    // The next fault attaches afresh and acts.
    let r = apply(d.as_ref(), &ctx(120), &spec);
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 1);
    assert_eq!(
        measure(&tx, &rx, &to, 300).received,
        0,
        "the new fault drops"
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
}
