//! The protection rules over fake `/proc`, cgroup and kubelet trees: canonical cgroup paths,
//! component-wise prefixes, protected namespaces through pod UIDs, and names matched on comm
//! and command line alike.

use super::*;
use crate::host::fake_tree::*;
use crate::host::pods::{parse_log_dir, uid_in_path};
use crate::host::Protected;
use faultline_core::fault::{ContainerRef, Target};

#[test]
fn cgroup_paths_are_canonical_and_dot_dot_is_refused() {
    let ok = [
        ("/", "/"),
        ("//", "/"),
        ("//x", "/x"),
        ("/./x", "/x"),
        ("/x/", "/x"),
        ("/x//y/./z/", "/x/y/z"),
        ("/x/.../y", "/x/.../y"),
    ];
    for (given, want) in ok {
        assert_eq!(canonical_cgroup(given).as_deref(), Ok(want), "{given}");
    }
    for bad in ["/x/../y", "/..", "x", "", "./x"] {
        assert!(canonical_cgroup(bad).is_err(), "{bad:?} accepted");
    }
    assert!(under("/x", "/x") && under("/x/y", "/x") && under("/x2", "/"));
    assert!(!under("/x2", "/x") && !under("/x", "/x/y") && !under("/xy/z", "/x"));
}

#[test]
fn every_spelling_of_a_protected_cgroup_is_refused_and_a_sibling_is_not() {
    let f = Fake::new(&[("unified", "cgroup2", "rw"), ("pids", "cgroup", "rw,pids")]);
    for c in ["barprot/sub", "barprot2"] {
        f.mkcg(&format!("unified/{c}"));
        f.mkcg(&format!("pids/{c}"));
    }
    // The config's own spelling does not matter either.
    let r = f.resolver(Protected {
        cgroups: vec!["//barprot/./".into()],
        ..Protected::default()
    });
    for t in [
        "/barprot",
        "//barprot",
        "/./barprot",
        "/barprot/",
        "/barprot//sub/.",
    ] {
        let msg = refused(r.resolve(&Target::Cgroup(t.into())));
        assert!(
            msg.contains(
                "is under the protected cgroup /barprot (agent config limits.protected_cgroups)"
            ),
            "{t}: {msg}"
        );
    }
    let ok = r
        .resolve(&Target::Cgroup("/barprot2".into()))
        .expect("a sibling");
    assert_eq!(ok.cgroups.len(), 2);
    assert_eq!(ok.description, "cgroup /barprot2");
    let msg = refused(r.resolve(&Target::Cgroup("//".into())));
    assert!(
        msg.contains("cgroup / holds the protected cgroup /barprot"),
        "{msg}"
    );
    let msg = refused(r.resolve(&Target::Cgroup("/barprot2/../barprot".into())));
    assert!(
        msg.starts_with("spec.target.cgroup: \"/barprot2/../barprot\" climbs with '..'"),
        "{msg}"
    );

    let bad = Protected {
        cgroups: vec!["/ok".into(), "/a/../b".into()],
        ..Protected::default()
    };
    assert_eq!(
        bad.validate(),
        Err("protected_cgroups[1]: \"/a/../b\" climbs with '..'".into())
    );
}

const KS_UID: &str = "11111111-2222-3333-4444-555555555555";
const SHOP_UID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// A static pod's UID: a 32-digit hash.
const STATIC_UID: &str = "0123456789abcdef0123456789abcdef";
const UNKNOWN_UID: &str = "99999999-8888-7777-6666-555555555555";

fn systemd_pod(uid: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    )
}

#[test]
fn pod_uids_are_read_from_both_kubelet_spellings_and_log_directories() {
    let cases = [
        (
            format!("{}/cri-containerd-{CID}.scope", systemd_pod(KS_UID)),
            Some(KS_UID),
        ),
        (
            format!("/kubepods/besteffort/pod{KS_UID}/{CID}"),
            Some(KS_UID),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{STATIC_UID}.slice"),
            Some(STATIC_UID),
        ),
        (format!("/kubepods/pod{STATIC_UID}"), Some(STATIC_UID)),
        ("/system.slice/podman.service".to_string(), None),
        (format!("/kubepods/pod{}", &KS_UID[..20]), None),
        (format!("/x/notpod{KS_UID}"), None),
    ];
    for (path, want) in cases {
        assert_eq!(uid_in_path(&path).as_deref(), want, "{path}");
    }
    let p = parse_log_dir(&format!("kube-system_coredns-5d78c9869d-x2x4q_{KS_UID}")).expect("pod");
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
        ("kube-system", "coredns-5d78c9869d-x2x4q", KS_UID)
    );
    assert!(parse_log_dir("kube-system_coredns").is_none());
    assert!(parse_log_dir(&format!("_x_{KS_UID}")).is_none());
}

/// A node with a kube-system pod, a static control-plane pod, a shop pod and a pod the kubelet's
/// log directories do not know, one process each.
fn pod_node() -> Fake {
    let f = Fake::new(&[("unified", "cgroup2", "rw")]);
    let pods = [
        (810, "coredns", KS_UID),
        (811, "etcd", STATIC_UID),
        (820, "checkout", SHOP_UID),
        (830, "mystery", UNKNOWN_UID),
    ];
    for (pid, comm, uid) in pods {
        let ctr = format!(
            "{}/cri-containerd-{pid}{}.scope",
            systemd_pod(uid),
            &CID[3..]
        );
        let dir = f.mkcg(&format!("unified{ctr}"));
        std::fs::write(dir.join("cgroup.procs"), format!("{pid}\n")).expect("procs");
        f.process(pid, 300, comm, u64::from(pid), &format!("0::{ctr}\n"));
    }
    f.pod("kube-system", "coredns-1", KS_UID);
    f.pod("kube-system", "etcd-node-a", STATIC_UID);
    f.pod("shop", "checkout-1", SHOP_UID);
    f
}

fn kube_system() -> Protected {
    Protected {
        namespaces: vec!["kube-system".into()],
        ..Protected::default()
    }
}

#[test]
fn processes_and_cgroups_of_protected_namespaces_are_refused_with_the_rule() {
    let f = pod_node();
    let r = f.resolver(kube_system());
    let rule = "(agent config limits.protected_namespaces)";
    for (pid, pod) in [
        (810, "kube-system/coredns-1"),
        (811, "kube-system/etcd-node-a"),
    ] {
        let msg = refused(r.resolve(&Target::Pid(pid)));
        assert!(
            msg.contains(&format!("pid {pid} is in pod {pod} (uid "))
                && msg.contains(&format!("in the protected namespace kube-system {rule}")),
            "{msg}"
        );
    }
    let msg = refused(r.resolve(&Target::Pid(830)));
    assert!(
        msg.contains(&format!(
            "pid 830 is in pod {UNKNOWN_UID}, whose namespace the agent cannot tell"
        )) && msg.contains("counts as protected"),
        "{msg}"
    );
    assert_eq!(r.resolve(&Target::Pid(820)).expect("shop").pids, [820]);

    // Cgroup targets: the pod's own, one inside it, and one above it.
    let msg = refused(r.resolve(&Target::Cgroup(systemd_pod(KS_UID))));
    assert!(
        msg.contains("is in pod kube-system/coredns-1") && msg.contains(rule),
        "{msg}"
    );
    let msg = refused(r.resolve(&Target::Cgroup("/kubepods.slice".into())));
    assert!(
        msg.starts_with("cgroup /kubepods.slice holds ") && msg.contains(rule),
        "{msg}"
    );
    assert!(r.resolve(&Target::Cgroup(systemd_pod(SHOP_UID))).is_ok());

    // The pod and container forms, and the namespace a coordinator names.
    let msg = refused(r.resolve(&container("", KS_UID)));
    assert!(
        msg.contains("pid 810 is in pod kube-system/coredns-1"),
        "{msg}"
    );
    let named = Target::Container(ContainerRef {
        pod_uid: SHOP_UID.into(),
        pod_namespace: "kube-system".into(),
        ..ContainerRef::default()
    });
    let msg = refused(r.resolve(&named));
    assert!(
        msg.contains(&format!(
            "its pod namespace kube-system is protected {rule}"
        )),
        "{msg}"
    );

    // Without protected namespaces (and the agent in no pod) pods are ordinary targets.
    let r = f.resolver(Protected::default());
    for pid in [810, 811, 820, 830] {
        assert!(r.resolve(&Target::Pid(pid)).is_ok(), "pid {pid}");
    }
}

/// On a v1 node the runtime's cgroup2 cgroup holds every container's processes: a cgroup-skb
/// drop there would reach kube-system's pods, whose own cgroups are only in v1.
#[test]
fn a_cgroup_directly_holding_a_protected_pods_process_is_refused() {
    let f = Fake::new(&[("pids", "cgroup", "rw,pids"), ("unified", "cgroup2", "rw")]);
    let runtime = "/system.slice/containerd.service";
    let ctr = format!("/kubepods/burstable/pod{KS_UID}/{CID}");
    f.mkcg(&format!("pids{ctr}"));
    let dir = f.mkcg(&format!("unified{runtime}"));
    std::fs::write(dir.join("cgroup.procs"), "860\n").expect("procs");
    f.process(
        860,
        300,
        "coredns",
        86,
        &format!("8:pids:{ctr}\n0::{runtime}\n"),
    );
    f.pod("kube-system", "coredns-1", KS_UID);
    let r = f.resolver(kube_system());
    let msg = refused(r.resolve(&Target::Cgroup(runtime.into())));
    assert!(
        msg.starts_with(&format!("cgroup {runtime} holds a protected process (cgroup2 {runtime}): pid 860 is in pod kube-system/coredns-1")),
        "{msg}"
    );
    let r = f.resolver(Protected::default());
    assert!(r.resolve(&Target::Cgroup(runtime.into())).is_ok());
}

#[test]
fn the_agents_own_namespace_is_always_protected() {
    let f = pod_node();
    let own = "cccccccc-dddd-eeee-ffff-000000000000";
    let other = "cccccccc-dddd-eeee-ffff-111111111111";
    for (pid, uid) in [(SELF, own), (840, other)] {
        let path = format!(
            "{}/cri-containerd-{pid}{}.scope",
            systemd_pod(uid),
            &CID[3..]
        );
        f.mkcg(&format!("unified{path}"));
        f.process(pid, 400, "x", 90, &format!("0::{path}\n"));
    }
    f.pod("faultline", "faultline-agent-abcde", own);
    f.pod("faultline", "faultline-coordinator-1", other);
    let r = f.resolver(Protected::default());
    let msg = refused(r.resolve(&Target::Pid(840)));
    assert!(
        msg.contains("in the agent's own namespace faultline, which is always protected"),
        "{msg}"
    );
    assert!(r.resolve(&Target::Pid(820)).is_ok());
}

#[test]
fn protected_names_match_the_name_or_the_command_line_as_selectors_do() {
    let f = Fake::new(&[("unified", "cgroup2", "rw")]);
    // comm `kube-controller` (15 characters), argv the full name.
    f.process(850, 300, "kube-controller", 85, "0::/\n");
    f.cmdline(850, &["/usr/local/bin/kube-controller-manager", "--v=2"]);
    f.process(851, 300, "flp-a", 86, "0::/\n");
    f.cmdline(851, &["renamed", "--serve"]);
    let r = f.resolver(Protected {
        names: vec!["kube-controller-manager".into(), "^flp-a$".into()],
        ..Protected::default()
    });
    let msg = r
        .why_protected(850)
        .expect("protected through its command line");
    assert!(
        msg.contains("matches the protected name pattern \"kube-controller-manager\" on its name or command line")
            && msg.contains("(agent config limits.protected_names)"),
        "{msg}"
    );
    let msg = r.why_protected(851).expect("protected through its name");
    assert!(msg.contains("\"^flp-a$\""), "{msg}");
    let re = regex::Regex::new("^renamed --serve$").expect("re");
    assert!(matches_process(
        &re,
        "flp-a",
        &["renamed".into(), "--serve".into()]
    ));
    // A kernel thread (no command line) is matched on its name alone.
    assert!(!matches_process(&re, "kworker/0:1", &[]));
}
