//! The `dns` fault aimed at a pod (root, real kernel), on the kubelet-shaped node of the pod
//! tests: two pods, each in its own netns and kubelet-named cgroups, querying dnsmasq in the
//! node's namespace. The target pod's queries for the name fail; its other names resolve; the
//! neighbour pod resolves everything, even from a process placed in the target pod's netns
//! (as pods sharing the host's netns would be): the program judges the pod's cgroup.

mod kube_pod_support;
mod net_dns_support;
mod net_ebpf_support;

use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::net::KernelLease;
use faultline_core::fault::DnsAction;
use kube_pod_support::*;
use net_dns_support::*;

const CHILD_ENV: &str = "FL_DNS_POD_CHILD";

/// The helper process: sends raw queries from a pod's cgroup and a netns (see `queries`).
#[test]
#[ignore = "helper process started by a_pod_target_fails_only_that_pods_queries"]
fn child_querying_from_a_pod() {
    query_child_main(CHILD_ENV);
}

/// `n` queries for `name` from a process in the cgroup2 container cgroup of pod `cgroup_of`,
/// inside the netns of pod `netns_of`: (answered, nxdomain, servfail, timeouts).
fn queries(node: &Node, cgroup_of: usize, netns_of: usize, name: &str, n: u32) -> [u32; 4] {
    let dir = node
        .mounts
        .v2
        .dir(&node.pods[cgroup_of].container_path)
        .expect("the container's cgroup2 directory");
    queries_from(
        "child_querying_from_a_pod",
        CHILD_ENV,
        &dir,
        &node.pods[netns_of].ns.path(),
        &format!("{PEER}:53"),
        name,
        n,
    )
}

#[test]
fn a_pod_target_fails_only_that_pods_queries() {
    require_tools();
    let node = Node::new(Layout::V2AndV1(CgroupDriver::Systemd));
    let mut dnsmasq = Dnsmasq::start_on(&node.ns.name, PEER);
    let probe = net_ebpf_support::udp_in(&node.pods[1].ns.path(), "0.0.0.0:0");
    dnsmasq.wait_ready_at(&probe, &format!("{PEER}:53"));
    assert_eq!(queries(&node, 0, 0, BAD, 10), [10, 0, 0, 0], "before");

    let d = driver(&KernelLease::new());
    let spec = dns_spec(node.pods[0].pod_target(), &[BAD], DnsAction::Nxdomain, 1.0);
    let (r, _) = apply(d.as_ref(), &ctx(60), &spec);
    println!("pod-scoped dns fault: {}", r.data);
    assert_eq!(r.data["interface"], "eth0", "the pod's interface");
    assert_eq!(
        r.data["cgroup"]["path"], node.pods[0].pod_path,
        "scoped to the pod's cgroup2 cgroup"
    );

    let pod = queries(&node, 0, 0, BAD, 100);
    let pod_good = queries(&node, 0, 0, GOOD, 50);
    let neighbour = queries(&node, 1, 1, BAD, 100);
    let neighbour_in_pod_netns = queries(&node, 1, 0, BAD, 100);
    println!(
        "pod: {pod:?}, its other name: {pod_good:?}, neighbour pod: {neighbour:?}, neighbour's process in the pod's netns: {neighbour_in_pod_netns:?} (answered, nxdomain, servfail, timeouts)"
    );
    assert_eq!(pod, [0, 100, 0, 0], "the pod's queries fail");
    assert_eq!(pod_good, [50, 0, 0, 0], "the pod's other names resolve");
    assert_eq!(neighbour, [100, 0, 0, 0], "the neighbour pod resolves");
    assert_eq!(
        neighbour_in_pod_netns,
        [100, 0, 0, 0],
        "the neighbour's process resolves even in the pod's netns"
    );

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    let t = Instant::now();
    while queries(&node, 0, 0, BAD, 1) != [1, 0, 0, 0] {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the pod still fails 2 s after revert"
        );
    }
    assert_eq!(queries(&node, 0, 0, BAD, 20), [20, 0, 0, 0], "after revert");
}
