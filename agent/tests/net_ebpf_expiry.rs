//! Kernel-enforced expiry against the real kernel (root): drops stop within a second when the
//! process holding them is SIGKILLed (links are not pinned), and by themselves at the deadline
//! in the map (the fault's, cut to the lease), without any revert.

mod net_ebpf_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{Driver, FaultCtx, Recipe, RevertOutcome};
use faultline_agent::net::drop::PROGRAM_PREFIX;
use faultline_agent::net::{ebpf, KernelLease};
use faultline_core::fault::{Protocol, TrafficMatch};
use net_ebpf_support::*;

const CHILD_ENV: &str = "FL_EBPF_TEST_CHILD";

fn udp_port(port: u16) -> TrafficMatch {
    TrafficMatch {
        ports: vec![port],
        protocol: Protocol::Udp,
        ..TrafficMatch::default()
    }
}

/// Sequence numbers with the time each was sent or received.
type Stamps = Vec<(u32, Instant)>;

/// Sends one datagram per millisecond for `total`; returns what was sent and what arrived.
fn timeline(
    tx: &std::net::UdpSocket,
    rx: &std::net::UdpSocket,
    to: &str,
    total: Duration,
) -> (Stamps, Stamps) {
    let to: SocketAddr = to.parse().expect("destination");
    let mut sent = Vec::new();
    let seen = receive_while(rx, || {
        sent = send_timed(tx, to, Duration::from_millis(1), total);
    });
    (sent, seen)
}

/// The helper process of `sigkill_stops_drops_within_a_second`: applies a 100% drop with the
/// netns and interface from the environment, prints `READY <recipe>`, then holds it.
#[test]
#[ignore = "helper process started by sigkill_stops_drops_within_a_second"]
fn child_holding_a_drop() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        panic!("only run by sigkill_stops_drops_within_a_second (needs {CHILD_ENV})");
    };
    // Die with the test that started us, even if it fails before killing us.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).expect("pdeathsig");
    let (ns, iface) = arg.split_once('|').expect("netns|interface");
    let d = driver(&[], &KernelLease::new());
    let spec = drop_spec(std::path::Path::new(ns), Some(iface), 1.0, udp_port(5010));
    let r = apply(d.as_ref(), &ctx(60), &spec);
    println!(
        "READY {}",
        serde_json::to_string(&r.data).expect("recipe json")
    );
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn sigkill_stops_drops_within_a_second() {
    require_root();
    let p = Pair::new();
    let rx = udp_in(&p.b.path(), &format!("{B}:5010"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let target = format!("{}|{}", p.a.path().display(), p.if_a);
    let mut child = Helper::start("child_holding_a_drop", (CHILD_ENV, &target));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut recipe_json = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read helper output");
        // libtest prints `test child_holding_a_drop ... ` first, on the same line.
        if let Some((_, rest)) = line.split_once("READY ") {
            recipe_json = Some(rest.to_string());
            break;
        }
    }
    let data: serde_json::Value =
        serde_json::from_str(&recipe_json.expect("the helper never said READY")).expect("json");
    let recipe = Recipe {
        kind: "drop".into(),
        data,
    };

    // The drop is in force, and it belongs to a live process: a sweep leaves it alone.
    let before = measure(&tx, &rx, &format!("{B}:5010"), 500);
    assert_eq!(before.received, 0, "the helper's drop is in force");
    let parent = driver(&[], &KernelLease::new());
    assert_eq!(parent.sweep(&[]), Vec::<String>::new());
    assert_eq!(measure(&tx, &rx, &format!("{B}:5010"), 200).received, 0);

    let to: SocketAddr = format!("{B}:5010").parse().expect("addr");
    let mut sent = Vec::new();
    let mut killed_at = None;
    let seen = receive_while(&rx, || {
        let killer = std::thread::scope(|s| {
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
        sent = killer.0;
        killed_at = Some(killer.1);
    });
    let killed_at = killed_at.expect("killed");
    let first = first_through(&sent, &seen).expect("nothing got through after SIGKILL");
    let stop = first.saturating_duration_since(killed_at);
    println!(
        "drops stopped {:.1} ms after SIGKILL of the process holding them",
        stop.as_secs_f64() * 1000.0
    );
    assert!(
        first >= killed_at - Duration::from_millis(5),
        "datagrams got through before the kill"
    );
    assert!(
        stop < Duration::from_secs(1),
        "drops went on for {stop:?} after SIGKILL"
    );

    // The kernel detached and freed everything; revert after the fact finds nothing.
    let ids: Vec<u64> = recipe.data["prog_ids"]
        .as_array()
        .expect("prog_ids")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(!ids.is_empty(), "the recipe records program ids");
    let _ = child.0.wait();
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<_> = ebpf::programs_named(PROGRAM_PREFIX)
        .into_iter()
        .filter(|p| ids.contains(&u64::from(p.id)))
        .collect();
    assert!(left.is_empty(), "programs left after SIGKILL: {left:?}");
    assert_eq!(
        parent.revert(&recipe).expect("revert"),
        RevertOutcome::AlreadyGone
    );
}

#[test]
fn deadline_in_the_map_stops_drops_by_itself() {
    require_root();
    let p = Pair::new();
    let rx = udp_in(&p.b.path(), &format!("{B}:5011"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let d = driver(&[], &KernelLease::new());
    let c = FaultCtx {
        fault_id: "t-deadline".into(),
        deadline: SystemTime::now() + Duration::from_secs(1),
    };
    let deadline_at = Instant::now() + Duration::from_secs(1);
    let r = apply(
        d.as_ref(),
        &c,
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5011)),
    );
    let (sent, seen) = timeline(&tx, &rx, &format!("{B}:5011"), Duration::from_millis(1800));
    let first = first_through(&sent, &seen).expect("drops never stopped");
    let late = first.saturating_duration_since(deadline_at);
    let early = deadline_at.saturating_duration_since(first);
    println!(
        "deadline 1 s ahead, no renewal: drops stopped {:+.1} ms from the deadline",
        (late.as_secs_f64() - early.as_secs_f64()) * 1000.0
    );
    assert!(
        early < Duration::from_millis(30),
        "drops stopped {early:?} early"
    );
    assert!(
        late < Duration::from_millis(250),
        "drops stopped {late:?} late"
    );
    let after: Vec<u32> = sent
        .iter()
        .filter(|(_, t)| *t > first)
        .map(|(s, _)| *s)
        .collect();
    let seen_after = seen.iter().filter(|(s, _)| after.contains(s)).count();
    assert_eq!(
        seen_after,
        after.len(),
        "everything after the deadline arrived"
    );
    // Still attached until reverted, but inert.
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
}

#[test]
fn lease_cuts_the_kernel_deadline_and_renewals_extend_it() {
    require_root();
    let p = Pair::new();
    let rx = udp_in(&p.b.path(), &format!("{B}:5012"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));
    let lease = KernelLease::new();
    let d = driver(&[], &lease);
    let r = apply(
        d.as_ref(),
        &ctx(60),
        &drop_spec(&p.a.path(), Some(&p.if_a), 1.0, udp_port(5012)),
    );
    // The lease cuts the fault's 60 s to 1.5 s from now...
    let first_lease_end = Instant::now() + Duration::from_millis(1500);
    lease.renew(SystemTime::now() + Duration::from_millis(1500));
    let to: SocketAddr = format!("{B}:5012").parse().expect("addr");
    let mut sent = Vec::new();
    let mut renewed_at = None;
    let seen = receive_while(&rx, || {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                send_timed(
                    &tx,
                    to,
                    Duration::from_millis(1),
                    Duration::from_millis(2600),
                )
            });
            // ...and one renewal 0.7 s later extends it to 1 s after the renewal; then none.
            std::thread::sleep(Duration::from_millis(700));
            renewed_at = Some(Instant::now());
            lease.renew(SystemTime::now() + Duration::from_secs(1));
            sent = h.join().expect("sender");
        });
    });
    let renewed_at = renewed_at.expect("renewed");
    assert!(
        renewed_at < first_lease_end,
        "the renewal came {:?} after the first lease ended (machine too busy)",
        renewed_at - first_lease_end
    );
    let first = first_through(&sent, &seen).expect("drops never stopped");
    let at = first.saturating_duration_since(renewed_at);
    println!(
        "lease renewed once for 1 s: drops stopped {:.0} ms after the renewal (fault deadline 60 s)",
        at.as_secs_f64() * 1000.0
    );
    assert!(
        first > first_lease_end,
        "drops stopped at the first lease's end: the renewal did not extend them"
    );
    assert!(
        at > Duration::from_millis(970) && at < Duration::from_millis(1250),
        "drops stopped {at:?} after the renewal, expected about 1 s"
    );
    d.revert(&r).expect("revert");
}
