//! Pod scoping of the `dns` fault (root, real kernel): with a cgroup target, a process in the
//! target cgroup fails to resolve the name while its neighbour in the same network namespace,
//! in another cgroup, resolves it, through glibc and through raw queries.

mod net_dns_support;
mod net_ebpf_support;

use std::process::Command;
use std::time::Duration;

use faultline_agent::engine::driver::Driver;
use faultline_agent::net::KernelLease;
use faultline_core::fault::{DnsAction, Target};
use net_dns_support::*;

const CHILD_ENV: &str = "FL_DNS_SCOPE_CHILD";

/// The helper process of `a_cgroup_target_fails_only_its_own_processes`: joins the cgroup2
/// directory and netns from the environment, sends raw queries, prints `TALLY ...`.
#[test]
#[ignore = "helper process started by a_cgroup_target_fails_only_its_own_processes"]
fn child_querying_from_a_cgroup() {
    query_child_main(CHILD_ENV);
}

/// Runs the helper in `cgroup` and returns (answered, nxdomain, servfail, timeouts).
fn queries_in(cgroup: &Cgroup2, lab: &Lab, name: &str, n: u32) -> [u32; 4] {
    queries_from(
        "child_querying_from_a_cgroup",
        CHILD_ENV,
        &cgroup.dir,
        &lab.netns(),
        &format!("{}:53", net_ebpf_support::B),
        name,
        n,
    )
}

#[test]
fn a_cgroup_target_fails_only_its_own_processes() {
    let lab = Lab::new();
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let target = Cgroup2::new(&format!("/fl-dns-{tag}/target"));
    let neighbour = Cgroup2::new(&format!("/fl-dns-{tag}/neighbour"));
    // A process of the target cgroup in the client netns: the fault attaches to its netns.
    let holder = Command::new("ip")
        .args(["netns", "exec", &lab.pair.a.name, "sleep", "120"])
        .spawn()
        .expect("start a process in the client netns");
    let holder = ChildGuard(holder);
    target.add(holder.0.id());

    let d = driver(&KernelLease::new());
    let spec = dns_spec(
        Target::Cgroup(target.path.clone()),
        &[BAD],
        DnsAction::Nxdomain,
        1.0,
    );
    let (r, took) = apply(d.as_ref(), &ctx(60), &spec);
    println!(
        "cgroup-scoped dns fault applied in {:.2} ms: {}",
        took.as_secs_f64() * 1000.0,
        r.data
    );

    let inside = queries_in(&target, &lab, BAD, 100);
    let beside = queries_in(&neighbour, &lab, BAD, 100);
    println!(
        "target cgroup: {inside:?}; neighbour: {beside:?} (answered, nxdomain, servfail, timeouts)"
    );
    assert_eq!(inside, [0, 100, 0, 0], "the target cgroup's queries fail");
    assert_eq!(beside, [100, 0, 0, 0], "the neighbour's queries resolve");
    // The test process itself (in neither cgroup) resolves too.
    assert_eq!(tally(&lab.client, BAD, 20, 1, Q).answered, 20);
    // glibc, from each cgroup.
    let ns = &lab.pair.a.name;
    assert_eq!(getent_in(ns, Some(&target.dir), BAD), None);
    assert_eq!(
        getent_in(ns, Some(&neighbour.dir), BAD).as_deref(),
        Some("10.9.9.2")
    );
    assert_eq!(
        getent_in(ns, Some(&target.dir), GOOD).as_deref(),
        Some(GOOD_ADDR)
    );

    d.revert(&r).expect("revert");
    assert_eq!(queries_in(&target, &lab, BAD, 20), [20, 0, 0, 0]);
}

const Q: Duration = Duration::from_millis(500);

#[test]
fn a_cgroup_without_processes_is_refused() {
    require_tools();
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let empty = Cgroup2::new(&format!("/fl-dns-{tag}"));
    let d = driver(&KernelLease::new());
    let spec = dns_spec(
        Target::Cgroup(empty.path.clone()),
        &[BAD],
        DnsAction::Timeout,
        1.0,
    );
    let err = d.plan(&ctx(10), &spec).expect_err("refused").to_string();
    assert!(err.contains("has no processes"), "{err}");
}
