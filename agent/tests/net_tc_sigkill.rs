//! Kernel-enforced expiry of the `network` fault (root, this machine's kernel): when the
//! process holding a tbf fault is SIGKILLed its TCX steering link dies with it, so matching
//! traffic falls back to the unimpaired default class within a second; the next start's sweep
//! removes the orphaned tree and says so. And with no renewal, the deadline in the steering
//! program's map ends the impairment by itself.

mod net_tc_support;

use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{FaultCtx, RevertOutcome};
use faultline_core::fault::{Fault, FaultSpec, NetworkFault, Target, Tbf, TrafficMatch};
use net_tc_support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CHILD_ENV: &str = "FL_TC_CHILD_NETNS";

fn spec(netns: &str) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(netns.to_string()),
        fault: Fault::Network(NetworkFault {
            interface: Some("va".into()),
            matcher: TrafficMatch {
                ports: vec![5001],
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

/// Not a test on its own: the "agent" process the SIGKILL test starts (and kills). It applies
/// a tbf fault in the netns named by FL_TC_CHILD_NETNS through the driver, says so, and waits.
#[test]
#[ignore = "run by sigkill_of_the_holder_bypasses_the_impaired_class_within_a_second"]
fn child_holds_a_tbf_fault() {
    let netns = std::env::var(CHILD_ENV).expect("FL_TC_CHILD_NETNS (set by the parent test)");
    let d = driver();
    let c = ctx("killed-holder");
    let s = spec(&netns);
    let planned = d.plan(&c, &s).expect("plan");
    d.apply(&c, &s, &planned).expect("apply");
    println!("{APPLIED}");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn sigkill_of_the_holder_bypasses_the_impaired_class_within_a_second() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("kill");
    let mut holder = start_holder("child_holds_a_tbf_fault", CHILD_ENV, &pair.path_a());
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc htb fa17: root"));

    let flow = Flow::start(&pair, 5001);
    std::thread::sleep(Duration::from_millis(1500));
    let shaped = flow.rate_over(Duration::from_secs(1));
    assert!(
        shaped < 12_000_000.0,
        "the fault was not shaping: {}",
        mbit(shaped)
    );

    let pid = Pid::from_raw(holder.0.id() as i32);
    let killed = Instant::now();
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    let _ = holder.0.wait();
    let took = time_to_line_rate(&flow, killed, Duration::from_secs(3));
    let after = flow.rate_over(Duration::from_millis(500));
    drop(flow);
    println!(
        "SIGKILL of the holder: shaped {} before, {} after; back above {} in {:?}",
        mbit(shaped),
        mbit(after),
        mbit(LINE_RATE_FLOOR),
        took
    );
    let took = took.expect("traffic stayed in the impaired class for 3 s after SIGKILL");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The tree is still there (nobody reverted it); only the steering died.
    let qdiscs = pair.tc_a("qdisc show dev va");
    assert!(qdiscs.contains("qdisc htb fa17: root"), "{qdiscs}");

    // The next start's sweep finds the orphan and says so.
    let lines = driver().sweep(&[]);
    let want = format!(
        "sweep: removed the Faultline qdisc tree fa17: (htb) from interface va in netns {}",
        pair.path_a()
    );
    assert!(lines.contains(&want), "sweep said {lines:#?}");
    let qdiscs = pair.tc_a("qdisc show dev va");
    assert!(qdiscs.contains("qdisc noqueue 0: root"), "{qdiscs}");
    drop(holder);
}

#[test]
fn the_deadline_in_the_map_ends_steering_without_any_revert() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("deadline");
    let d = driver();
    let c = FaultCtx {
        fault_id: "short".into(),
        deadline: SystemTime::now() + Duration::from_millis(2500),
    };
    let s = spec(&pair.path_a());
    let planned = d.plan(&c, &s).expect("plan");
    let recipe = d.apply(&c, &s, &planned).expect("apply");
    let flow = Flow::start(&pair, 5001);
    std::thread::sleep(Duration::from_millis(500));
    let shaped = flow.rate_over(Duration::from_secs(1));
    assert!(shaped < 12_000_000.0, "not shaping: {}", mbit(shaped));
    let start = Instant::now();
    let left = c
        .deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let took = time_to_line_rate(&flow, start, left + Duration::from_secs(5));
    drop(flow);
    let took = took.expect("still shaped 5 s after the deadline");
    println!(
        "deadline without renewal: shaped {} before; line rate {:?} after the deadline",
        mbit(shaped),
        took.saturating_sub(left)
    );
    assert!(
        took + Duration::from_millis(100) >= left,
        "line rate {took:?} after start, before the deadline ({left:?})"
    );
    assert!(
        took < left + Duration::from_secs(1),
        "line rate only {took:?} after start (deadline {left:?})"
    );
    assert_eq!(d.revert(&recipe).expect("revert"), RevertOutcome::Reverted);
    assert!(pair
        .tc_a("qdisc show dev va")
        .contains("qdisc noqueue 0: root"));
}

#[test]
fn a_lease_that_is_not_renewed_ends_steering() {
    let _serial = serial();
    require_root();
    let pair = Pair::new("lease");
    let (d, lease) = leased_driver();
    let c = ctx("leased");
    let s = spec(&pair.path_a());
    let planned = d.plan(&c, &s).expect("plan");
    let recipe = d.apply(&c, &s, &planned).expect("apply");
    let flow = Flow::start(&pair, 5001);
    std::thread::sleep(Duration::from_millis(500));
    let shaped = flow.rate_over(Duration::from_secs(1));
    assert!(shaped < 12_000_000.0, "not shaping: {}", mbit(shaped));
    // The coordinator is gone: the last renewal said "until now".
    let renewed = Instant::now();
    lease.renew(SystemTime::now());
    let took = time_to_line_rate(&flow, renewed, Duration::from_secs(3));
    drop(flow);
    println!(
        "lease cut to now: shaped {} before; line rate after {took:?}",
        mbit(shaped)
    );
    let took = took.expect("still shaped after the lease ended");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(d.revert(&recipe).expect("revert"), RevertOutcome::Reverted);
}
