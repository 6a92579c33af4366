//! Pod targets on the real kernel (root): processes placed in cgroups shaped like a kubelet's
//! (systemd and cgroupfs drivers on cgroup2 and v1, and the v1-only layout), each pod in its
//! own network namespace, are found from pod UID + container ID; a `drop` aimed at one pod
//! (cgroup-scoped, and on the pod's `eth0`) takes all of its datagrams and none of its
//! neighbour's, which sends to the same peer at the same time.

mod kube_pod_support;
mod net_ebpf_support;

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::host::target::{Resolved, Resolver};
use faultline_agent::host::HostConfig;
use faultline_agent::net::KernelLease;
use faultline_core::fault::Target;
use kube_pod_support::*;
use net_ebpf_support::{apply, counter, ctx, driver, require_root};

/// Datagrams per pod and burst.
const N: u32 = 200;

fn labelled(r: &Resolved) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .cgroups
        .iter()
        .map(|d| (d.hierarchy.label(), d.path.clone()))
        .collect();
    v.sort();
    v
}

/// Resolves both pods by container and by pod UID: exactly their processes, their
/// kubelet-shaped cgroups (existing directories under each mount) and their netns.
fn check_resolution(node: &Node) {
    let r = Resolver::new(&HostConfig::default());
    for pod in &node.pods {
        let c = r
            .resolve(&pod.container_target())
            .unwrap_or_else(|e| panic!("resolving container {}: {e}", pod.container_id));
        assert_eq!(c.pids, [pod.app.pid()], "the container's only process");
        assert_eq!(labelled(&c), pod.cgroups_at(&pod.container_path));
        for d in &c.cgroups {
            assert_eq!(d.dir, d.hierarchy.mount.join(&d.path[1..]));
            assert!(d.dir.is_dir(), "{}", d.dir.display());
        }
        let netns = c.netns.as_deref().expect("a container has a netns");
        assert_eq!(ns_inode(netns), pod.netns_inode(), "the pod's netns");

        let p = r
            .resolve(&pod.pod_target())
            .unwrap_or_else(|e| panic!("resolving pod {}: {e}", pod.uid));
        assert_eq!(
            p.pids,
            [pod.pause.pid(), pod.app.pid()],
            "pause (oldest) and app"
        );
        assert_eq!(labelled(&p), pod.cgroups_at(&pod.pod_path));
        let netns = p.netns.as_deref().expect("a pod has a netns");
        assert_eq!(ns_inode(netns), pod.netns_inode(), "the pod's netns");
        println!(
            "resolved pod {} container {}: pids {:?} (pod {:?}), netns {} (inode {}), cgroups {:?}",
            pod.uid,
            pod.container_id,
            c.pids,
            p.pids,
            netns.display(),
            pod.netns_inode(),
            labelled(&c)
        );
    }
}

/// Where the drop is expected to attach.
enum Want<'a> {
    /// cgroup_skb on this cgroup2 path.
    Cgroup(&'a str),
    /// TCX on `eth0` in the pod's netns.
    PodEth0,
}

/// Applies a drop of everything to the peer aimed at `target` (pods[0]), measures both pods,
/// reverts, measures again.
fn drop_round(node: &mut Node, label: &str, target: Target, interface: Option<&str>, want: Want) {
    let d = driver(&[], &KernelLease::new());
    let c = ctx(120);
    let r = apply(d.as_ref(), &c, &drop_to_peer(target, interface));
    let scope = &r.data["scope"];
    match want {
        Want::Cgroup(path) => {
            assert_eq!(scope["type"], "cgroup", "{scope}");
            assert_eq!(scope["path"], path, "{scope}");
        }
        Want::PodEth0 => {
            assert_eq!(scope["type"], "interface", "{scope}");
            assert_eq!(scope["interface"], "eth0", "{scope}");
            let ns = scope["netns"].as_str().expect("netns path");
            assert_eq!(
                ns_inode(std::path::Path::new(ns)),
                node.pods[0].netns_inode(),
                "attached in the pod's netns"
            );
        }
    }
    let (pod, neighbour) = node.burst(N);
    let dropped = counter(d.as_ref(), &r, "packets_dropped");
    println!(
        "{label} [{}]: fault on: pod {pod}/{N} received, neighbour {neighbour}/{N} received, program dropped {dropped}",
        scope
    );
    assert_eq!(pod, 0, "{label}: the pod loses every datagram to the peer");
    assert_eq!(neighbour, N as usize, "{label}: the neighbour loses none");
    assert!(
        dropped >= u64::from(N),
        "{label}: the program counted the drops: {dropped}"
    );

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    let (pod, neighbour) = node.burst(N);
    println!("{label}: reverted: pod {pod}/{N} received, neighbour {neighbour}/{N} received");
    assert_eq!(
        (pod, neighbour),
        (N as usize, N as usize),
        "{label}: after revert both pods' traffic flows"
    );
}

/// Both pods reach the peer before any fault.
fn baseline(node: &mut Node) {
    let (pod, neighbour) = node.burst(N);
    println!("baseline: pod {pod}/{N}, neighbour {neighbour}/{N}");
    assert_eq!(
        (pod, neighbour),
        (N as usize, N as usize),
        "no fault, no loss"
    );
}

fn v2_and_v1(driver_kind: CgroupDriver) {
    require_root();
    let mut node = Node::new(Layout::V2AndV1(driver_kind));
    let (ctr, pod_path) = (
        node.pods[0].container_path.clone(),
        node.pods[0].pod_path.clone(),
    );
    println!("{driver_kind:?} driver: container cgroup {ctr} in cgroup2, pids and cpu");
    check_resolution(&node);
    baseline(&mut node);
    let container = node.pods[0].container_target();
    let pod = node.pods[0].pod_target();
    drop_round(
        &mut node,
        "container target (default: cgroup-scoped)",
        container.clone(),
        None,
        Want::Cgroup(&ctr),
    );
    drop_round(
        &mut node,
        "pod target (default: cgroup-scoped)",
        pod,
        None,
        Want::Cgroup(&pod_path),
    );
    drop_round(
        &mut node,
        "container target on interface eth0",
        container,
        Some("eth0"),
        Want::PodEth0,
    );
}

#[test]
fn systemd_driver_pod_is_found_and_a_drop_hits_only_it() {
    v2_and_v1(CgroupDriver::Systemd);
}

#[test]
fn cgroupfs_driver_pod_is_found_and_a_drop_hits_only_it() {
    v2_and_v1(CgroupDriver::Cgroupfs);
}

/// The v1 layout: the pods' own cgroups exist only in v1 hierarchies; in cgroup2 both pods sit
/// in the runtime's cgroup. The pod resolves to its v1 cgroups only, and a drop falls back to
/// the pod's netns (a cgroup-scoped one on the shared cgroup2 cgroup would hit the neighbour).
#[test]
fn v1_layout_pod_is_found_and_a_drop_falls_back_to_its_netns() {
    require_root();
    let mut node = Node::new(Layout::V1Only);
    println!(
        "v1 layout: container cgroup {} in pids and cpu; both pods in cgroup2 {}",
        node.pods[0].container_path,
        node.runtime_path.as_deref().unwrap_or_default()
    );
    check_resolution(&node);
    baseline(&mut node);
    let container = node.pods[0].container_target();
    let pod = node.pods[0].pod_target();
    drop_round(
        &mut node,
        "v1 container target (default)",
        container.clone(),
        None,
        Want::PodEth0,
    );
    drop_round(
        &mut node,
        "v1 pod target (default)",
        pod,
        None,
        Want::PodEth0,
    );
    drop_round(
        &mut node,
        "v1 container target on interface eth0",
        container,
        Some("eth0"),
        Want::PodEth0,
    );
}
