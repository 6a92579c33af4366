//! Resource views of the pods for the resource and process fault tests: the cgroup lines of a
//! process by hierarchy, cgroup2 CPU usage and v1 counters of a pod's cgroups, kubelet-like
//! settings along a pod's path, the pods' cgroups in the v1 `memory` hierarchy (below this test
//! process's own memory cgroup), and how an app ended.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultline_agent::host::cgroup::{self, CgroupFs, Hierarchy, Version};
use faultline_core::fault::{ContainerRef, Target};

use super::{place, pod_paths, App, Node, Pod};

impl App {
    /// The signal that ended the app (from waitpid), waiting up to `limit`; `None` while it
    /// runs or when it exited without one.
    pub fn ended_by_signal(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.proc.0.try_wait() {
                return st.signal();
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `/proc/<pid>/cgroup` by hierarchy label (`cgroup2`, `pids`, `cpu`, `memory`, ...).
pub fn cgroup_lines(pid: u32) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    cgroup::parse_proc_cgroup(&text)
        .into_iter()
        .map(|l| {
            let label = if l.id == 0 && l.controllers.is_empty() {
                "cgroup2".to_string()
            } else {
                l.controllers.join(",")
            };
            (label, l.path)
        })
        .collect()
}

/// The directory of an existing hierarchy path.
pub fn dir_of(h: &Hierarchy, path: &str) -> PathBuf {
    let dir = h.dir(path).expect("a path under the mount");
    assert!(dir.is_dir(), "{} is not a cgroup directory", dir.display());
    dir
}

/// The value of `key` in a flat-keyed cgroup file (`cpu.stat`, `memory.stat`).
pub fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}/{file} has no {key}: {text}", dir.display()))
}

/// A single-number cgroup file (`memory.usage_in_bytes`).
pub fn number(dir: &Path, file: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}/{file} is {text:?}: {e}", dir.display()))
}

/// CPU time used by a cgroup2 cgroup and its descendants (`cpu.stat` `usage_usec`, which
/// cgroup2 keeps for every cgroup even where the cpu controller is bound to v1).
pub fn cpu_usage_usec(v2: &Hierarchy, path: &str) -> u64 {
    assert_eq!(v2.version, Version::V2, "usage_usec is read from cgroup2");
    keyed(&dir_of(v2, path), "cpu.stat", "usage_usec")
}

/// Writes `value` into `file` of every cgroup from the node's top cgroup down to `path`, as a
/// kubelet sets `cpu.shares` on each level of its tree.
pub fn set_along(node: &Node, h: &Hierarchy, path: &str, file: &str, value: &str) {
    let rel = path
        .strip_prefix(&node.tree.top)
        .unwrap_or_else(|| panic!("{path} is not below {}", node.tree.top));
    let mut at = node.tree.top.clone();
    let levels = std::iter::once(String::new()).chain(
        rel.split('/')
            .filter(|c| !c.is_empty())
            .map(|c| format!("/{c}")),
    );
    for level in levels {
        at.push_str(&level);
        let f = dir_of(h, &at).join(file);
        std::fs::write(&f, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", f.display()));
    }
}

/// One pod's cgroups in the v1 memory hierarchy.
#[derive(Debug, Clone)]
pub struct MemoryPaths {
    pub pod: String,
    pub container: String,
    pub pause: String,
}

/// The pods' cgroups in the v1 memory hierarchy (`pods[i]` for `node.pods[i]`).
#[derive(Debug, Clone)]
pub struct MemoryPods {
    pub hierarchy: Hierarchy,
    /// This test process's memory cgroup, which the kubelet-shaped tree is built under.
    pub base: String,
    pub pods: Vec<MemoryPaths>,
}

impl MemoryPods {
    pub fn dir(&self, path: &str) -> PathBuf {
        dir_of(&self.hierarchy, path)
    }
}

/// The v1 memory hierarchy, or a panic saying what the test needs.
pub fn memory_hierarchy() -> Hierarchy {
    let hs = CgroupFs::new(Path::new("/proc"), Path::new("/sys/fs/cgroup"))
        .hierarchies()
        .unwrap_or_else(|e| panic!("reading the cgroup mounts: {e}"));
    let h = hs
        .iter()
        .find(|h| h.version == Version::V1 && h.controllers == ["memory".to_string()])
        .cloned()
        .unwrap_or_else(|| {
            panic!("the pod memory test needs the v1 memory controller mounted on its own under /sys/fs/cgroup (e.g. /sys/fs/cgroup/memory, a hybrid host); found {hs:?}")
        });
    assert_eq!(
        h.root,
        "/",
        "{} must show its hierarchy from the root",
        h.mount.display()
    );
    h
}

impl Node {
    /// Gives both pods cgroups in the v1 memory hierarchy too, shaped as the node's driver
    /// names them, below this test process's own memory cgroup (a kubelet `--cgroup-root`; the
    /// processes stay inside the memory cgroup they were started in), and moves their pause and
    /// app processes there. The node's tree removes them.
    pub fn add_memory(&mut self) -> MemoryPods {
        let hierarchy = memory_hierarchy();
        let base = cgroup_lines(std::process::id())
            .remove("memory")
            .expect("this process has a memory cgroup line");
        let top = format!("{}{}", base.trim_end_matches('/'), self.tree.top);
        let mut pods = Vec::new();
        for pod in &self.pods {
            let (p, c, z) = pod_paths(
                self.layout.driver(),
                &top,
                &pod.uid,
                &pod.container_id,
                &pod.pause_id,
            );
            place(&self.tree.make(&hierarchy, &z), pod.pause.pid());
            place(&self.tree.make(&hierarchy, &c), pod.app.pid());
            pods.push(MemoryPaths {
                pod: p,
                container: c,
                pause: z,
            });
        }
        MemoryPods {
            hierarchy,
            base,
            pods,
        }
    }
}

impl Pod {
    /// The pod's hierarchy labelled `label` (`cgroup2`, `pids`, `cpu`).
    pub fn hierarchy(&self, label: &str) -> Hierarchy {
        let hs = &self.hierarchies;
        hs.iter()
            .find(|h| h.label() == label)
            .cloned()
            .unwrap_or_else(|| panic!("the pod has no {label} hierarchy: {hs:?}"))
    }

    /// The container reference a pod target carries (the coordinator sends it as a process
    /// fault's container selector).
    pub fn container_ref(&self) -> ContainerRef {
        match self.container_target() {
            Target::Container(c) => c,
            other => panic!("a container target, not {other:?}"),
        }
    }
}

impl Node {
    /// `pods[pod]`'s container cgroup in every hierarchy the pod has, memory included.
    fn container_dirs(&self, mem: &MemoryPods, pod: usize) -> Vec<(Hierarchy, String)> {
        let p = &self.pods[pod];
        p.hierarchies
            .iter()
            .map(|h| (h.clone(), p.container_path.clone()))
            .chain([(mem.hierarchy.clone(), mem.pods[pod].container.clone())])
            .collect()
    }

    /// `pods[pod]`'s container cgroup path by hierarchy label, memory included.
    pub fn container_cgroups(&self, mem: &MemoryPods, pod: usize) -> BTreeMap<String, String> {
        self.container_dirs(mem, pod)
            .into_iter()
            .map(|(h, path)| (h.label(), path))
            .collect()
    }

    /// `pids` (sorted) for each of `pods[pod]`'s container cgroups: what
    /// [`Node::container_procs`] shows when the container holds exactly them.
    pub fn container_holding(
        &self,
        mem: &MemoryPods,
        pod: usize,
        pids: &[u32],
    ) -> BTreeMap<String, Vec<u32>> {
        let mut v = pids.to_vec();
        v.sort_unstable();
        self.container_cgroups(mem, pod)
            .into_keys()
            .map(|l| (l, v.clone()))
            .collect()
    }

    /// A CPU limit as a kubelet sets it on a burstable container in the v1 cpu hierarchy:
    /// `shares` on every level down to the container, and a CFS quota of `cpus`; returns the
    /// container's cpu cgroup directory.
    pub fn kubelet_cpu_limit(&self, pod: usize, shares: u32, cpus: u32) -> PathBuf {
        let p = &self.pods[pod];
        let h = p.hierarchy("cpu");
        set_along(
            self,
            &h,
            &p.container_path,
            "cpu.shares",
            &shares.to_string(),
        );
        let dir = dir_of(&h, &p.container_path);
        for (file, v) in [
            ("cpu.cfs_period_us", 100_000),
            ("cpu.cfs_quota_us", 100_000 * cpus),
        ] {
            std::fs::write(dir.join(file), v.to_string())
                .unwrap_or_else(|e| panic!("write {v} to {}/{file}: {e}", dir.display()));
        }
        dir
    }

    /// The processes of `pods[pod]`'s container cgroups by hierarchy label, each list sorted.
    pub fn container_procs(&self, mem: &MemoryPods, pod: usize) -> BTreeMap<String, Vec<u32>> {
        self.container_dirs(mem, pod)
            .into_iter()
            .map(|(h, path)| {
                let mut v = cgroup::procs(&dir_of(&h, &path));
                v.sort_unstable();
                (h.label(), v)
            })
            .collect()
    }
}

/// The `pid`s of a recipe's list of identities (`signalled`) or of `{id: identity}` objects
/// (`victims`).
pub fn recipe_list_pids(list: &serde_json::Value) -> Vec<u32> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter_map(|v| v["pid"].as_u64().or_else(|| v["id"]["pid"].as_u64()))
        .map(|p| p as u32)
        .collect()
}

/// A process state letter, with running (`R`) and sleeping (`S`) both shown as `S`.
pub fn run_state(pid: u32) -> char {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match text
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
    {
        Some('R') => 'S',
        Some(c) => c,
        None => '?',
    }
}
