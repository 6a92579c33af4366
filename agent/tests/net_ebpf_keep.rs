//! Kept TCX links (`faultline_agent::net::keep`) against the real kernel (root): two faults on
//! one hook both act and a revert leaves the other acting, an interface deleted and recreated
//! between applies gets a fresh link, a fault past its deadline is inert while its link is
//! kept, SIGKILL of the process holding a kept (reused) link lets traffic through at once, and
//! no background thread stays in a target's netns.
//! Every claim is measured with real datagrams between two network namespaces.

mod net_ebpf_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, Recipe, RevertOutcome};
use faultline_agent::net::KernelLease;
use faultline_core::fault::{Protocol, TrafficMatch};
use net_ebpf_support::*;

const CHILD_ENV: &str = "FL_KEEP_TEST_CHILD";

fn udp_port(port: u16) -> TrafficMatch {
    TrafficMatch {
        ports: vec![port],
        protocol: Protocol::Udp,
        ..TrafficMatch::default()
    }
}

/// The kept link ids a recipe names.
fn link_ids(r: &Recipe) -> Vec<u64> {
    r.data["link_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no link_ids in {}", r.data))
        .iter()
        .map(|v| v.as_u64().expect("link id"))
        .collect()
}

#[test]
fn two_faults_on_one_hook_both_act_and_a_revert_leaves_the_other() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx1 = udp_in(&p.b.path(), &format!("{B}:5021"));
    let rx2 = udp_in(&p.b.path(), &format!("{B}:5022"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let (to1, to2) = (format!("{B}:5021"), format!("{B}:5022"));

    let r1 = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5021)),
    );
    let r2 = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5022)),
    );
    assert_ne!(
        link_ids(&r1),
        link_ids(&r2),
        "two faults on one hook use two kept links"
    );
    assert_eq!(
        dispatchers(&p.a.path(), &p.if_a),
        2,
        "two dispatchers on egress"
    );
    assert_eq!(measure(&tx, &rx1, &to1, 500).received, 0, "fault 1 drops");
    assert_eq!(measure(&tx, &rx2, &to2, 500).received, 0, "fault 2 drops");

    assert_eq!(d.revert(&r1).expect("revert 1"), RevertOutcome::Reverted);
    let m1 = measure(&tx, &rx1, &to1, 500);
    assert_eq!(m1.received, m1.sent, "fault 1 reverted: nothing dropped");
    assert_eq!(
        measure(&tx, &rx2, &to2, 500).received,
        0,
        "fault 2 still drops after fault 1's revert"
    );
    assert_eq!(
        dispatchers(&p.a.path(), &p.if_a),
        2,
        "the reverted fault's link is kept for the next fault"
    );

    // The next fault on this hook reuses the free link: no attach.
    let r3 = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5021)),
    );
    assert_eq!(link_ids(&r3), link_ids(&r1), "the free kept link is reused");
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 2);
    assert_eq!(measure(&tx, &rx1, &to1, 500).received, 0, "fault 3 drops");
    assert_eq!(measure(&tx, &rx2, &to2, 500).received, 0, "fault 2 drops");

    assert_eq!(d.revert(&r2).expect("revert 2"), RevertOutcome::Reverted);
    assert_eq!(d.revert(&r3).expect("revert 3"), RevertOutcome::Reverted);
    for (rx, to) in [(&rx1, &to1), (&rx2, &to2)] {
        let m = measure(&tx, rx, to, 500);
        assert_eq!(m.received, m.sent, "every fault reverted: nothing dropped");
    }
}

#[test]
fn a_recreated_interface_gets_a_fresh_link() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let to = format!("{B}:5023");
    let spec = drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5023));

    let r1 = apply(d.as_ref(), &ctx(120), &spec);
    assert_eq!(d.revert(&r1).expect("revert"), RevertOutcome::Reverted);
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 1, "the link is kept");

    // Same names, same namespaces, new interfaces (new ifindex): the kept link died with
    // the old device.
    p.a.exec(&["link", "del", &p.if_a]);
    p.a.exec(&[
        "link", "add", &p.if_a, "type", "veth", "peer", "name", &p.if_b, "netns", &p.b.name,
    ]);
    p.a.exec(&["addr", "add", &format!("{A}/24"), "dev", &p.if_a]);
    p.b.exec(&["addr", "add", &format!("{B}/24"), "dev", &p.if_b]);
    p.a.exec(&["link", "set", &p.if_a, "up"]);
    p.b.exec(&["link", "set", &p.if_b, "up"]);
    assert_eq!(
        dispatchers(&p.a.path(), &p.if_a),
        0,
        "a new device has no programs"
    );
    let rx = udp_in(&p.b.path(), &format!("{B}:5023"));
    let m = measure(&tx, &rx, &to, 300);
    assert_eq!(m.received, m.sent, "the new pair passes traffic");

    let r2 = apply(d.as_ref(), &ctx(120), &spec);
    assert_ne!(
        link_ids(&r2),
        link_ids(&r1),
        "the apply attached afresh instead of writing into the dead link"
    );
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 1);
    assert_eq!(
        measure(&tx, &rx, &to, 500).received,
        0,
        "the fault drops on the recreated interface"
    );
    assert_eq!(d.revert(&r2).expect("revert"), RevertOutcome::Reverted);
    let m = measure(&tx, &rx, &to, 300);
    assert_eq!(m.received, m.sent, "reverted");
}

#[test]
fn a_fault_past_its_deadline_is_inert_while_its_link_is_kept() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let rx = udp_in(&p.b.path(), &format!("{B}:5024"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let to = format!("{B}:5024");
    let c = ctx(2);
    let r = apply(
        d.as_ref(),
        &c,
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5024)),
    );
    assert_eq!(
        measure(&tx, &rx, &to, 300).received,
        0,
        "in force before the deadline"
    );
    let left = c
        .deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(left + Duration::from_millis(300));
    // Nothing reverted it: the program is still in its kept link, past its deadline.
    assert!(
        dispatchers(&p.a.path(), &p.if_a) >= 1,
        "the link is still attached"
    );
    let m = measure(&tx, &rx, &to, 500);
    assert_eq!(
        m.received, m.sent,
        "a fault past its deadline drops nothing while its link is kept"
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
}

/// Threads of this process in another network namespace than the process's own, as
/// (name, netns), leaving out the per-call netns threads (`fl-netns`, which end with their
/// call) and the detach threads (which end with their grace period).
fn threads_away_from_home() -> Vec<(String, String)> {
    let home = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let mut away = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let (Ok(ns), Ok(comm)) = (
            std::fs::read_link(t.path().join("ns/net")),
            std::fs::read_to_string(t.path().join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let comm = comm.trim().to_string();
        if ns != home && comm != "fl-netns" && !comm.ends_with("-detach") {
            away.push((comm, ns.display().to_string()));
        }
    }
    away
}

/// The idle expiry thread and the spare refill are started from a target's netns thread;
/// they must not stay in that netns (it would outlive `ip netns del`, devices and all).
#[test]
fn background_threads_do_not_keep_a_target_netns() {
    require_root();
    let p = Pair::new();
    let d = driver(&[], &KernelLease::new());
    let r = apply(
        d.as_ref(),
        &ctx(120),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5026)),
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    // The refill thread starts 20 ms after the apply and returns home first thing.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let away = threads_away_from_home();
        if away.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "threads left in a target's netns: {away:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dispatchers(&p.a.path(), &p.if_a) >= 1,
        "the link is kept (so the idle expiry thread runs)"
    );
}

/// The helper process of `sigkill_with_a_kept_link_lets_traffic_through`: applies a 100%
/// drop, reverts it, applies another (which reuses the kept link), prints `READY <recipe>`,
/// then holds it.
#[test]
#[ignore = "helper process started by sigkill_with_a_kept_link_lets_traffic_through"]
fn child_holding_a_kept_link() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        panic!("only run by sigkill_with_a_kept_link_lets_traffic_through (needs {CHILD_ENV})");
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).expect("pdeathsig");
    let (ns, iface) = arg.split_once('|').expect("netns|interface");
    let d = driver(&[], &KernelLease::new());
    let spec = drop_spec(Path::new(ns), Some(iface), 1.0, udp_port(5025));
    let first = apply(d.as_ref(), &ctx(60), &spec);
    d.revert(&first).expect("revert the first");
    let r = apply(d.as_ref(), &ctx(60), &spec);
    assert_eq!(link_ids(&r), link_ids(&first), "the kept link is reused");
    println!(
        "READY {}",
        serde_json::to_string(&r.data).expect("recipe json")
    );
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn sigkill_with_a_kept_link_lets_traffic_through() {
    require_root();
    let p = Pair::new();
    let rx = udp_in(&p.b.path(), &format!("{B}:5025"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let target = format!("{}|{}", p.a.path().display(), p.if_a);
    let mut child = Helper::start("child_holding_a_kept_link", (CHILD_ENV, &target));
    let stdout = child.0.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("read helper output"))
        .any(|l| l.contains("READY "));
    assert!(ready, "the helper never said READY");
    assert_eq!(
        measure(&tx, &rx, &format!("{B}:5025"), 300).received,
        0,
        "the helper's drop is in force"
    );
    assert_eq!(dispatchers(&p.a.path(), &p.if_a), 1);

    let to: SocketAddr = format!("{B}:5025").parse().expect("addr");
    let mut sent = Vec::new();
    let mut killed_at = None;
    let seen = receive_while(&rx, || {
        let (s, at) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                send_timed(
                    &tx,
                    to,
                    Duration::from_millis(1),
                    Duration::from_millis(1500),
                )
            });
            std::thread::sleep(Duration::from_millis(300));
            child.0.kill().expect("SIGKILL the helper");
            let at = Instant::now();
            (h.join().expect("sender"), at)
        });
        sent = s;
        killed_at = Some(at);
    });
    let killed_at = killed_at.expect("killed");
    let through = first_through(&sent, &seen).expect("no datagram got through after SIGKILL");
    let before_kill = seen
        .iter()
        .filter(|(s, _)| sent.iter().any(|(q, t)| q == s && *t < killed_at))
        .count();
    assert_eq!(before_kill, 0, "nothing got through before the kill");
    let delay = through.saturating_duration_since(killed_at);
    println!("first datagram through {delay:?} after SIGKILL");
    assert!(
        delay < Duration::from_millis(500),
        "first datagram through {delay:?} after SIGKILL (want tens of ms)"
    );
    assert_eq!(
        dispatchers(&p.a.path(), &p.if_a),
        0,
        "the kernel detached the kept link"
    );
}
