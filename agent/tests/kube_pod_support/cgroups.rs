//! Kubelet-shaped cgroups on the real kernel: the paths its systemd and cgroupfs drivers give
//! a pod and its containers, the hierarchies the tests use (cgroup2 and v1 `pids`, `cpu`), and a
//! Drop guard that removes every cgroup a test made.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultline_agent::host::cgroup::{CgroupFs, Hierarchy, Version};

pub fn tag() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

pub fn hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16usize)]))
        .collect()
}

/// A random pod UID, `8-4-4-4-12` hex digits.
pub fn pod_uid() -> String {
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

/// Which kubelet cgroup driver named the pod's cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
    Systemd,
    /// `kubepods/burstable/pod<uid>/<id>`
    Cgroupfs,
}

/// Where a node keeps its pods' cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In cgroup2 and in the v1 `pids` and `cpu` hierarchies, all with the same path.
    V2AndV1(CgroupDriver),
    /// The v1 layout: pods' cgroups in the v1 hierarchies only (cgroupfs driver); in cgroup2
    /// every container process sits in the runtime's cgroup, shared by all pods of the node.
    V1Only,
}

impl Layout {
    pub fn driver(self) -> CgroupDriver {
        match self {
            Layout::V2AndV1(d) => d,
            Layout::V1Only => CgroupDriver::Cgroupfs,
        }
    }
}

/// The hierarchies the tests use: cgroup2 and the v1 `pids` and `cpu` ones, as mounted.
#[derive(Debug, Clone)]
pub struct Mounts {
    pub v2: Hierarchy,
    pub v1: Vec<Hierarchy>,
}

impl Mounts {
    /// Fails with what is missing: these tests need a hybrid host (cgroup2 beside v1).
    pub fn find() -> Mounts {
        let hs = CgroupFs::new(Path::new("/proc"), Path::new("/sys/fs/cgroup"))
            .hierarchies()
            .unwrap_or_else(|e| panic!("reading the cgroup mounts: {e}"));
        let v2 = hs
            .iter()
            .find(|h| h.version == Version::V2)
            .cloned()
            .unwrap_or_else(|| {
                panic!("the pod tests need cgroup2 mounted under /sys/fs/cgroup (e.g. /sys/fs/cgroup/unified); found {hs:?}")
            });
        let v1: Vec<Hierarchy> = ["pids", "cpu"]
            .iter()
            .map(|c| {
                hs.iter()
                    .find(|h| h.version == Version::V1 && h.controllers == [c.to_string()])
                    .cloned()
                    .unwrap_or_else(|| {
                        panic!("the pod tests need the v1 {c} controller mounted on its own under /sys/fs/cgroup (a hybrid host, as systemd's default before v2); found {hs:?}")
                    })
            })
            .collect();
        for h in std::iter::once(&v2).chain(&v1) {
            assert_eq!(h.root, "/", "{} must show its hierarchy from the root (this test process is in a cgroup namespace?)", h.mount.display());
        }
        Mounts { v2, v1 }
    }
}

/// Cgroups the test made (every level it created, in every hierarchy), removed deepest first
/// on drop, after the processes in them are gone (retrying while the kernel still counts them).
pub struct CgroupTree {
    /// `/fl-k-<tag>`: every path of this test starts with it, so runs never collide.
    pub top: String,
    made: Vec<PathBuf>,
}

impl CgroupTree {
    pub fn new() -> CgroupTree {
        CgroupTree {
            top: format!("/fl-k-{}", tag()),
            made: Vec::new(),
        }
    }

    /// Creates hierarchy path `path` (with its parents) in `h`; returns its directory.
    pub fn make(&mut self, h: &Hierarchy, path: &str) -> PathBuf {
        let dir = h.dir(path).expect("a path under the mount");
        let mut at = h.mount.clone();
        for comp in path.trim_start_matches('/').split('/') {
            at = at.join(comp);
            if !at.exists() {
                std::fs::create_dir(&at).unwrap_or_else(|e| panic!("mkdir {}: {e}", at.display()));
                self.made.push(at.clone());
            }
        }
        dir
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let until = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("warning: cannot remove the test cgroup {}", dir.display());
            }
        }
    }
}

/// Moves a process into a cgroup directory.
pub fn place(dir: &Path, pid: u32) {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", dir.display()));
}

/// (pod, app container, pause container) hierarchy paths under `top`, as `driver` names them.
pub fn pod_paths(
    driver: CgroupDriver,
    top: &str,
    uid: &str,
    container_id: &str,
    pause_id: &str,
) -> (String, String, String) {
    match driver {
        CgroupDriver::Systemd => {
            let pod = format!(
                "{top}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            );
            (
                pod.clone(),
                format!("{pod}/cri-containerd-{container_id}.scope"),
                format!("{pod}/cri-containerd-{pause_id}.scope"),
            )
        }
        CgroupDriver::Cgroupfs => {
            let pod = format!("{top}/kubepods/burstable/pod{uid}");
            (
                pod.clone(),
                format!("{pod}/{container_id}"),
                format!("{pod}/{pause_id}"),
            )
        }
    }
}
