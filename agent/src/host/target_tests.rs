//! Target resolution over fake /proc and cgroup trees shaped like kubelet nodes (systemd and
//! cgroupfs drivers, v2 and v1 layouts), and the never-targetable rules.

use super::*;
use crate::host::Protected;

use crate::host::fake_tree::*;

#[test]
fn container_ids_and_pod_uids_match_both_kubelet_spellings() {
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope",
        UID.replace('-', "_")
    );
    let cgroupfs = format!("/kubepods/burstable/pod{UID}/{CID}");
    for p in [
        &systemd,
        &cgroupfs,
        &format!("/system.slice/docker-{CID}.scope"),
    ] {
        assert!(path_has_container(p, CID), "{p}");
        assert!(path_has_container(p, &CID[..12]), "short id in {p}");
    }
    assert!(!path_has_container(&format!("/x/ab{CID}"), CID));
    assert_eq!(
        pod_cgroup(&systemd, UID).as_deref(),
        Some(
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                UID.replace('-', "_")
            )
            .as_str()
        )
    );
    assert_eq!(
        pod_cgroup(&cgroupfs, UID).as_deref(),
        Some(format!("/kubepods/burstable/pod{UID}").as_str())
    );
    assert_eq!(
        pod_cgroup(&cgroupfs, &UID[..8]),
        None,
        "a prefix of a UID is another pod"
    );
    assert_eq!(bare_container_id(&format!("containerd://{CID}")), CID);
    assert_eq!(
        bare_container_id(&format!("docker://{}", CID.to_uppercase())),
        CID
    );
}

#[test]
fn v2_systemd_node_container_and_pod() {
    let f = Fake::new(&[("unified", "cgroup2", "rw")]);
    let pod = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID.replace('-', "_")
    );
    let ctr = format!("{pod}/cri-containerd-{CID}.scope");
    let pause = format!("{pod}/cri-containerd-{}.scope", "f".repeat(64));
    f.mkcg(&format!("unified{ctr}"));
    f.mkcg(&format!("unified{pause}"));
    f.process(900, 300, "pause", 100, &format!("0::{pause}\n"));
    f.process(901, 300, "nginx", 101, &format!("0::{ctr}\n"));
    f.process(902, 901, "nginx", 102, &format!("0::{ctr}\n"));
    let r = f.resolver(Protected::default());

    let got = r
        .resolve(&container(&format!("containerd://{CID}"), ""))
        .expect("container");
    assert_eq!(got.pids, [901, 902]);
    assert_eq!(got.cgroups.len(), 1);
    assert_eq!(got.cgroups[0].path, ctr);
    assert_eq!(got.cgroups[0].dir, f.cg().join(format!("unified{ctr}")));
    assert_eq!(got.netns, Some(f.proc_dir().join("901/ns/net")));
    assert_eq!(got.description, format!("container containerd://{CID}"));

    let got = r.resolve(&container("", UID)).expect("pod");
    assert_eq!(got.pids, [900, 901, 902]);
    assert_eq!(got.cgroups.len(), 1);
    assert_eq!(got.cgroups[0].path, pod);

    let msg = refused(r.resolve(&container(&"e".repeat(64), "")));
    assert!(
        msg.contains("no process on this host is in its cgroup"),
        "{msg}"
    );
}

#[test]
fn v1_cgroupfs_node_maps_every_hierarchy() {
    let f = Fake::new(&[
        ("memory", "cgroup", "rw,memory"),
        ("cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        ("systemd", "cgroup", "rw,xattr,name=systemd"),
        ("unified", "cgroup2", "rw"),
    ]);
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/{CID}");
    for h in ["memory", "cpu,cpuacct", "systemd"] {
        f.mkcg(&format!("{h}{ctr}"));
    }
    let lines = format!("12:memory:{ctr}\n4:cpu,cpuacct:{ctr}\n1:name=systemd:{ctr}\n0::/\n");
    f.process(700, 300, "redis-server", 70, &lines);
    let r = f.resolver(Protected::default());

    let got = r
        .resolve(&container(&format!("docker://{CID}"), ""))
        .expect("container");
    // Not the v2 line (`0::/`): that cgroup is not the container's, and a cgroup-scoped fault
    // there would hit the whole node.
    let labels: Vec<String> = got.cgroups.iter().map(CgroupDir::describe).collect();
    assert_eq!(
        labels,
        [
            format!("memory:{ctr}"),
            format!("cpu,cpuacct:{ctr}"),
            format!("name=systemd:{ctr}"),
        ]
    );

    let got = r.resolve(&container("", UID)).expect("pod");
    let mut labels: Vec<String> = got.cgroups.iter().map(CgroupDir::describe).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            format!("cpu,cpuacct:{pod}"),
            format!("memory:{pod}"),
            format!("name=systemd:{pod}")
        ]
    );

    // A cgroup path: wherever it exists.
    f.mkcg("memory/batch");
    let got = r.resolve(&Target::Cgroup("/batch".into())).expect("cgroup");
    assert_eq!(got.cgroups.len(), 1);
    assert_eq!(got.cgroups[0].dir, f.cg().join("memory/batch"));
    let msg = refused(r.resolve(&Target::Cgroup("/nope".into())));
    assert!(
        msg.contains("cgroup /nope does not exist in any cgroup hierarchy"),
        "{msg}"
    );

    // The host: the root of every hierarchy.
    let got = r.resolve(&Target::Host).expect("host");
    assert_eq!(got.cgroups.len(), 4);
    assert!(got.cgroups.iter().all(|c| c.dir == c.hierarchy.mount));
    assert!(got.pids.is_empty());
}

#[test]
fn a_v1_container_in_the_runtimes_v2_cgroup_gets_only_its_own_cgroups() {
    let f = Fake::new(&[("pids", "cgroup", "rw,pids"), ("unified", "cgroup2", "rw")]);
    let runtime = "/system.slice/containerd.service";
    let ctr = format!("/kubepods/burstable/pod{UID}/{CID}");
    f.mkcg(&format!("pids{ctr}"));
    f.mkcg(&format!("unified{runtime}"));
    f.process(
        710,
        300,
        "app",
        71,
        &format!("8:pids:{ctr}\n0::{runtime}\n"),
    );
    let r = f.resolver(Protected::default());
    for target in [container(CID, UID), container(CID, "")] {
        let got = r.resolve(&target).expect("container");
        let labels: Vec<String> = got.cgroups.iter().map(CgroupDir::describe).collect();
        assert_eq!(labels, [format!("pids:{ctr}")], "{target:?}");
    }
}

/// Lines as a process in a private cgroup namespace reads them (the kernel's own text, captured
/// on cgroup v2 with `unshare -C`): every hierarchy path climbs with `..`.
#[test]
fn paths_relative_to_a_private_cgroup_namespace_are_refused_not_misresolved() {
    let f = Fake::new(&[("pids", "cgroup", "rw,pids"), ("unified", "cgroup2", "rw")]);
    let pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        UID.replace('-', "_")
    );
    let ctr = format!("{pod}/cri-containerd-{CID}.scope");
    f.mkcg(&format!("unified{ctr}"));
    f.mkcg(&format!("pids{ctr}"));
    // Where joining the `..` path to a mount lands (<mount>/../..): a directory that exists.
    let rel = format!("/../..{ctr}");
    let decoy = f.cg().join("unified").join(&rel[1..]);
    std::fs::create_dir_all(&decoy).expect("mkdir decoy");
    f.process(720, 300, "app", 72, &format!("8:pids:{rel}\n0::{rel}\n"));
    let r = f.resolver(Protected::default());
    for target in [container(CID, UID), container("", UID), Target::Pid(720)] {
        let msg = refused(r.resolve(&target));
        assert!(
            msg.contains(&format!("pid 720 reads as cgroup pids:{rel}, a path relative to the agent's own cgroup namespace")),
            "{msg}"
        );
        assert!(
            msg.contains("run the agent with hostPID and CAP_SYS_ADMIN"),
            "{msg}"
        );
    }
    // With protected cgroups, a process whose cgroup cannot be placed is not targetable at all.
    let r = f.resolver(Protected {
        cgroups: vec!["/system.slice".into()],
        ..Protected::default()
    });
    let why = r.why_protected(720).expect("refused");
    assert!(
        why.starts_with("cannot tell whether pid 720 is in a protected cgroup: "),
        "{why}"
    );
    let h = &r.hierarchies().expect("mounts")[1];
    assert_eq!(h.dir(&rel), None, "a `..` path maps to no directory");
}

#[test]
fn a_cgroup_target_seen_from_a_private_namespace_says_so() {
    let f = Fake::new(&[]);
    let unified = f.cg().join("unified");
    std::fs::create_dir_all(&unified).expect("mkdir");
    std::fs::write(
        f.proc_dir().join("self/mountinfo"),
        format!(
            "41 31 0:38 /../.. {} rw,relatime - cgroup2 cgroup2 rw\n",
            unified.display()
        ),
    )
    .expect("mountinfo");
    let r = f.resolver(Protected::default());
    let msg = refused(r.resolve(&Target::Cgroup("/kubepods".into())));
    assert!(
        msg.contains("cgroup /kubepods does not exist in any cgroup hierarchy"),
        "{msg}"
    );
    assert!(
        msg.contains("shows the hierarchy from /../.., outside the agent's cgroup namespace"),
        "{msg}"
    );
}

#[test]
fn never_targetable_processes_are_refused_with_the_reason() {
    let f = Fake::new(&[("unified", "cgroup2", "rw")]);
    f.process(600, 300, "sshd", 60, "0::/system.slice/ssh.service\n");
    f.process(
        601,
        300,
        "kubelet",
        61,
        "0::/system.slice/kubelet.service/x\n",
    );
    f.process(602, 300, "app", 62, "0::/apps/a\n");
    f.process(603, 300, "app", 63, "0::/apps/a\n");
    f.mkcg("unified/apps/a");
    f.mkcg("unified/system.slice/kubelet.service");
    let r = f.resolver(Protected {
        pids: vec![603],
        names: vec!["^sshd$".into()],
        cgroups: vec!["/system.slice/kubelet.service/".into()],
        ..Protected::default()
    });
    let cases: &[(u32, &str)] = &[
        (1, "pid 1 is the host's init process"),
        (SELF, "pid 500 is the agent itself"),
        (400, "pid 400 is an ancestor of the agent (pid 500)"),
        (300, "pid 300 is an ancestor of the agent"),
        (603, "pid 603 is in the agent's protected pids"),
        (
            600,
            "pid 600 (sshd) matches the protected name pattern \"^sshd$\"",
        ),
        (
            601,
            "pid 601 is in the protected cgroup /system.slice/kubelet.service",
        ),
        (99999, "pid 99999 does not exist"),
    ];
    for (pid, want) in cases {
        let msg = refused(r.resolve(&Target::Pid(*pid)));
        assert!(msg.contains(want), "pid {pid}: {msg}");
    }
    let ok = r.resolve(&Target::Pid(602)).expect("an ordinary process");
    assert_eq!(ok.pids, [602]);
    assert_eq!(ok.cgroups[0].path, "/apps/a");

    let msg = refused(r.resolve(&Target::Cgroup("/system.slice/kubelet.service/pods".into())));
    assert!(
        msg.contains("under the protected cgroup /system.slice/kubelet.service"),
        "{msg}"
    );
    // A cgroup whose processes include a protected one is fine as a cgroup target ...
    assert!(r.resolve(&Target::Cgroup("/apps/a".into())).is_ok());
    // ... but a container holding the agent is not.
    f.process(
        SELF,
        400,
        "faultline-agent",
        30,
        &format!("0::/docker/{CID}\n"),
    );
    f.mkcg(&format!("unified/docker/{CID}"));
    let msg = refused(r.resolve(&container(CID, "")));
    assert!(msg.contains("pid 500 is the agent itself"), "{msg}");
}

#[test]
fn bad_protected_patterns_are_reported() {
    let p = Protected {
        names: vec!["ok".into(), "(".into()],
        ..Protected::default()
    };
    let err = p.validate().expect_err("bad regex");
    assert!(err.starts_with("protected_names[1] \"(\""), "{err}");
}
