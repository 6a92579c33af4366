//! Table tests of the cgroup parsers and limit readers over fake cgroup trees.

use super::*;

/// This machine's layout: v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified.
const HOST_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:29 / /mnt/other/cpu rw,relatime - cgroup cgroup rw,cpu
";

#[test]
fn mountinfo_gives_one_hierarchy_per_mount_under_the_root() {
    let hs = parse_mountinfo(HOST_V1, Path::new("/sys/fs/cgroup"));
    let labels: Vec<String> = hs.iter().map(Hierarchy::label).collect();
    assert_eq!(
        labels,
        ["cpu", "cpuacct", "memory", "name=systemd", "cgroup2"]
    );
    assert_eq!(hs[2].mount, PathBuf::from("/sys/fs/cgroup/memory"));
    assert_eq!(hs[4].version, Version::V2);
    assert!(hs.iter().all(|h| h.root == "/"));
}

#[test]
fn comounted_controllers_and_escaped_paths() {
    let text = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n\
                2 0 0:2 /ns\\040root /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n";
    let hs = parse_mountinfo(text, Path::new("/sys/fs/cgroup"));
    assert_eq!(hs[0].controllers, ["cpu", "cpuacct"]);
    assert_eq!(hs[1].mount, PathBuf::from("/sys/fs/cgroup/my mem"));
    assert_eq!(hs[1].root, "/ns root");
    let line = &parse_proc_cgroup("4:cpu,cpuacct:/a\n")[0];
    assert_eq!(
        hierarchy_of(&hs, line).map(Hierarchy::label).as_deref(),
        Some("cpu,cpuacct")
    );
}

#[test]
fn proc_cgroup_lines_map_to_their_hierarchy() {
    let hs = parse_mountinfo(HOST_V1, Path::new("/sys/fs/cgroup"));
    let lines = parse_proc_cgroup(
        "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice\nbogus\n",
    );
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1].controllers, ["memory"]);
    assert_eq!(lines[1].path, "/process_api/abc");
    let found: Vec<String> = lines
        .iter()
        .filter_map(|l| hierarchy_of(&hs, l).map(Hierarchy::label))
        .collect();
    assert_eq!(found, ["name=systemd", "memory", "cpu", "cgroup2"]);
}

#[test]
fn a_mount_of_a_subtree_maps_paths_below_its_root() {
    let h = Hierarchy {
        version: Version::V2,
        controllers: vec![],
        mount: PathBuf::from("/sys/fs/cgroup"),
        root: "/kubepods/pod1".into(),
    };
    assert_eq!(
        h.dir("/kubepods/pod1/c1"),
        Some(PathBuf::from("/sys/fs/cgroup/c1"))
    );
    assert_eq!(
        h.dir("/kubepods/pod1"),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    assert_eq!(h.dir("/kubepods/pod10"), None);
    assert_eq!(h.dir("/other"), None);
}

#[test]
fn limits_and_cpu_lists_parse() {
    assert_eq!(parse_limit("max"), None);
    assert_eq!(parse_limit("9223372036854771712"), None);
    assert_eq!(parse_limit("268435456\n"), Some(268_435_456));
    assert_eq!(parse_limit("lots"), None);
    assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(7));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_max("max 100000"), None);
    assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
    assert_eq!(parse_cpu_max("50000"), Some(0.5));
}

fn write(p: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(p).expect("mkdir");
    std::fs::write(p.join(file), text).expect("write");
}

fn v1(mount: &Path, controllers: &[&str]) -> Hierarchy {
    Hierarchy {
        version: Version::V1,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        mount: mount.to_path_buf(),
        root: "/".into(),
    }
}

#[test]
fn memory_limit_is_the_smallest_up_the_tree() {
    let t = tempfile::tempdir().expect("tempdir");
    let mem = t.path().join("memory");
    write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
    write(&mem.join("a"), "memory.limit_in_bytes", "1073741824\n");
    write(
        &mem.join("a/b"),
        "memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(
        &mem.join("a/b"),
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    let hs = vec![v1(&t.path().join("cpu"), &["cpu"]), v1(&mem, &["memory"])];
    std::fs::create_dir_all(t.path().join("cpu/a/b")).expect("mkdir");
    let dirs = dirs_for_path(&hs, "/a/b");
    assert_eq!(dirs.len(), 2);
    let (limit, at) = memory_limit(&dirs).expect("limited");
    assert_eq!(limit, 1 << 30);
    assert!(at.ends_with("memory/a"), "{at}");
    assert_eq!(oom_kills(memory_dir(&dirs).expect("memory")), Some(3));
    write(&mem.join("a/b"), "memory.failcnt", "12\n");
    assert_eq!(limit_hits(memory_dir(&dirs).expect("memory")), Some(12));
    // The root alone is unlimited.
    assert_eq!(memory_limit(&dirs_for_path(&hs, "/")), None);
    assert_eq!(dirs[1].describe(), "memory:/a/b");
}

#[test]
fn v2_memory_max_events_and_leaf_rule() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().to_path_buf();
    write(&root, "cgroup.controllers", "cpuset cpu io memory pids\n");
    write(&root.join("pod"), "memory.max", "536870912\n");
    write(&root.join("pod"), "cgroup.subtree_control", "cpu memory\n");
    write(
        &root.join("pod"),
        "memory.events",
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
    );
    write(&root.join("pod"), "cpu.max", "150000 100000\n");
    write(&root.join("pod"), "cpuset.cpus.effective", "0-3\n");
    write(&root.join("pod/c1"), "memory.max", "max\n");
    write(&root.join("pod/c1"), "cgroup.subtree_control", "\n");
    let hs = vec![Hierarchy {
        version: Version::V2,
        controllers: vec![],
        mount: root.clone(),
        root: "/".into(),
    }];
    let pod = dirs_for_path(&hs, "/pod");
    let c1 = dirs_for_path(&hs, "/pod/c1");
    assert_eq!(memory_limit(&c1).map(|l| l.0), Some(512 << 20));
    assert_eq!(oom_kills(&pod[0]), Some(1));
    assert_eq!(limit_hits(&pod[0]), Some(4));
    assert!(needs_leaf(&pod[0]));
    assert!(!needs_leaf(&c1[0]));
    assert!(
        !needs_leaf(&dirs_for_path(&hs, "/")[0]),
        "the root may hold processes"
    );
    // 1.5 CPUs of quota beat 4 in the cpuset; rounded up.
    assert_eq!(cpus_available(&pod), Some(2));
    assert_eq!(
        pod[0].child("faultline-fault-x").path,
        "/pod/faultline-fault-x"
    );
}

#[test]
fn v1_cpu_quota_and_cpuset() {
    let t = tempfile::tempdir().expect("tempdir");
    let cpu = t.path().join("cpu");
    let cpuset = t.path().join("cpuset");
    write(&cpu, "cpu.cfs_quota_us", "-1\n");
    write(&cpu, "cpu.cfs_period_us", "100000\n");
    write(&cpu.join("x"), "cpu.cfs_quota_us", "-1\n");
    write(&cpu.join("x"), "cpu.cfs_period_us", "100000\n");
    write(&cpuset.join("x"), "cpuset.effective_cpus", "0-2\n");
    let hs = vec![v1(&cpu, &["cpu"]), v1(&cpuset, &["cpuset"])];
    assert_eq!(cpus_available(&dirs_for_path(&hs, "/x")), Some(3));
    write(&cpu.join("x"), "cpu.cfs_quota_us", "50000\n");
    assert_eq!(cpus_available(&dirs_for_path(&hs, "/x")), Some(1));
    assert_eq!(cpus_available(&dirs_for_path(&hs[..1], "/")), None);
    assert!(online_cpus() >= 1);
}

fn dest(h: Hierarchy, path: &str) -> CgroupDir {
    CgroupDir {
        dir: h.mount.join(path.trim_start_matches('/')),
        hierarchy: h,
        path: path.into(),
    }
}

/// `holds` matches a destination only on its own hierarchy's line and path: controller order,
/// the v2 line against a v1 destination of the same path, the root, `name=systemd`.
#[test]
fn holds_matches_the_hierarchy_and_the_path() {
    let m = Path::new("/sys/fs/cgroup");
    let cpu = v1(&m.join("cpu,cpuacct"), &["cpu", "cpuacct"]);
    let systemd = v1(&m.join("systemd"), &["name=systemd"]);
    let v2 = Hierarchy {
        version: Version::V2,
        controllers: vec![],
        mount: m.join("unified"),
        root: "/".into(),
    };
    let lines = parse_proc_cgroup(
        "4:cpuacct,cpu:/kubepods/pod1/\n1:name=systemd:/\n0::/system.slice/agent.service\n",
    );
    assert!(holds(&dest(cpu.clone(), "/kubepods/pod1"), &lines));
    assert!(!holds(&dest(cpu.clone(), "/kubepods"), &lines));
    assert!(holds(&dest(systemd.clone(), "/"), &lines));
    assert!(!holds(&dest(systemd, "/kubepods/pod1"), &lines));
    assert!(holds(
        &dest(v2.clone(), "/system.slice/agent.service"),
        &lines
    ));
    assert!(
        !holds(&dest(v2.clone(), "/kubepods/pod1"), &lines),
        "the v1 line's path does not count for v2"
    );
    let only_v2 = parse_proc_cgroup("0::/kubepods/pod1\n");
    assert!(!holds(&dest(cpu, "/kubepods/pod1"), &only_v2));
    assert!(holds(&dest(v2, "/kubepods/pod1"), &only_v2));
}

/// Only v1 destinations have a file to join by thread.
#[test]
fn only_v1_has_a_self_join_file() {
    let m = Path::new("/sys/fs/cgroup");
    let d = dest(v1(&m.join("memory"), &["memory"]), "/a");
    assert_eq!(self_join_file(&d), Some(m.join("memory/a/tasks")));
    let v2 = Hierarchy {
        version: Version::V2,
        controllers: vec![],
        mount: m.join("unified"),
        root: "/".into(),
    };
    assert_eq!(self_join_file(&dest(v2, "/a")), None);
}

/// A frozen cgroup is named as such (v1 freezer.state, v2 cgroup.events); a thawed one not.
#[test]
fn frozen_reads_the_freezer_state() {
    let t = tempfile::tempdir().expect("tempdir");
    let fz = t.path().join("freezer");
    write(&fz.join("a"), "freezer.state", "FROZEN\n");
    write(&fz.join("b"), "freezer.state", "THAWED\n");
    let h = v1(&fz, &["freezer"]);
    assert_eq!(
        frozen(&dest(h.clone(), "/a")).as_deref(),
        Some("freezer.state FROZEN")
    );
    assert_eq!(frozen(&dest(h, "/b")), None);
    let u = t.path().join("unified");
    write(&u.join("c"), "cgroup.events", "populated 1\nfrozen 1\n");
    write(&u.join("d"), "cgroup.events", "populated 1\nfrozen 0\n");
    let v2 = Hierarchy {
        version: Version::V2,
        controllers: vec![],
        mount: u,
        root: "/".into(),
    };
    assert!(frozen(&dest(v2.clone(), "/c")).is_some());
    assert_eq!(frozen(&dest(v2, "/d")), None);
}
