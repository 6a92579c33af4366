//! cgroup hierarchies as mounted (v1 per-controller mounts and the v2 unified mount, found in
//! mountinfo), paths within them, joining a process, and the limits and counters faults need:
//! memory limit, OOM kills, CPUs available.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod limits;

pub use limits::*;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read the mount table {path}: {source}")]
    Mountinfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move pid {pid} into cgroup {file}: {source}")]
    Join {
        pid: u32,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create cgroup {dir}: {source}")]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub version: Version,
    /// v1: the mount's controllers and `name=...`, sorted; v2: empty (they vary per cgroup).
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    /// The hierarchy path shown at the top of the mount (`/` unless a cgroup namespace or a
    /// bind mount of a sub-tree).
    pub root: String,
}

/// v1 controllers we recognise in mount options (other options are mount flags).
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

impl Hierarchy {
    /// `memory`, `cpu,cpuacct`, `name=systemd` or `cgroup2`.
    pub fn label(&self) -> String {
        match self.version {
            Version::V2 => "cgroup2".into(),
            Version::V1 => self.controllers.join(","),
        }
    }

    /// Whether this hierarchy runs a controller (v2: enabled at its top).
    pub fn has(&self, controller: &str) -> bool {
        match self.version {
            Version::V1 => self.controllers.iter().any(|c| c == controller),
            Version::V2 => std::fs::read_to_string(self.mount.join("cgroup.controllers"))
                .map(|t| t.split_whitespace().any(|c| c == controller))
                .unwrap_or(false),
        }
    }

    /// The directory of a hierarchy path (`/kubepods/pod1`), whether or not it exists; `None`
    /// when the path is outside what this mount shows, or climbs with `..` (a path read in a
    /// private cgroup namespace: joining it to the mount would name some other directory).
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        if super::cgroupns::outside_namespace(path) {
            return None;
        }
        let root = self.root.trim_end_matches('/');
        let rel = path.strip_prefix(root)?;
        if !(rel.is_empty() || rel.starts_with('/')) {
            return None;
        }
        let rel = rel.trim_start_matches('/');
        Some(if rel.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rel)
        })
    }
}

/// A cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub hierarchy: Hierarchy,
    /// Path within the hierarchy, `/` for the root.
    pub path: String,
    pub dir: PathBuf,
}

impl CgroupDir {
    /// `memory:/kubepods/pod1`.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.hierarchy.label(), self.path)
    }

    /// A child cgroup of this one.
    pub fn child(&self, name: &str) -> CgroupDir {
        CgroupDir {
            hierarchy: self.hierarchy.clone(),
            path: format!("{}/{name}", self.path.trim_end_matches('/')),
            dir: self.dir.join(name),
        }
    }

    /// This directory and its parents up to the mount point.
    fn upwards(&self) -> impl Iterator<Item = &Path> {
        let mount = self.hierarchy.mount.clone();
        self.dir
            .ancestors()
            .take_while(move |d| d.starts_with(&mount))
    }

    fn read(&self, dir: &Path, file: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Undoes the `\040`-style escapes of mountinfo paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a mountinfo text whose mount point is under `under`, one per hierarchy.
pub fn parse_mountinfo(text: &str, under: &Path) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let version = match r[0] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let mount = PathBuf::from(unescape(l[4]));
        if !mount.starts_with(under) {
            continue;
        }
        let mut controllers: Vec<String> = match version {
            Version::V2 => Vec::new(),
            Version::V1 => r[2]
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_string)
                .collect(),
        };
        controllers.sort();
        if version == Version::V1 && controllers.is_empty() {
            continue;
        }
        let h = Hierarchy {
            version,
            controllers,
            mount,
            root: unescape(l[3]),
        };
        let dup = out
            .iter()
            .any(|o| o.version == h.version && o.controllers == h.controllers);
        if !dup {
            out.push(h);
        }
    }
    out
}

/// One line of `/proc/<pid>/cgroup`: `hier-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub id: u32,
    /// Sorted; empty for the v2 line.
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let mut controllers: Vec<String> = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            controllers.sort();
            let path = parts.next()?.to_string();
            Some(CgroupLine {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

/// The hierarchy a `/proc/<pid>/cgroup` line belongs to.
pub fn hierarchy_of<'h>(hs: &'h [Hierarchy], line: &CgroupLine) -> Option<&'h Hierarchy> {
    hs.iter().find(|h| match h.version {
        Version::V2 => line.controllers.is_empty() && line.id == 0,
        Version::V1 => !line.controllers.is_empty() && h.controllers == line.controllers,
    })
}

/// A hierarchy path under every hierarchy where it exists.
pub fn dirs_for_path(hs: &[Hierarchy], path: &str) -> Vec<CgroupDir> {
    hs.iter()
        .filter_map(|h| {
            let dir = h.dir(path)?;
            dir.is_dir().then(|| CgroupDir {
                hierarchy: h.clone(),
                path: path.to_string(),
                dir,
            })
        })
        .collect()
}

/// The existing cgroup directories named by `/proc/<pid>/cgroup` lines.
pub fn dirs_for_lines(hs: &[Hierarchy], lines: &[CgroupLine]) -> Vec<CgroupDir> {
    lines
        .iter()
        .filter_map(|line| {
            let h = hierarchy_of(hs, line)?;
            let dir = h.dir(&line.path)?;
            dir.is_dir().then(|| CgroupDir {
                hierarchy: h.clone(),
                path: line.path.clone(),
                dir,
            })
        })
        .collect()
}

/// Moves a process into a cgroup.
pub fn join(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    std::fs::write(&file, format!("{pid}\n")).map_err(|source| CgroupError::Join {
        pid,
        file,
        source,
    })
}

/// Whether `lines` (a process's `/proc/<pid>/cgroup`) already place it in `dest`.
pub fn holds(dest: &CgroupDir, lines: &[CgroupLine]) -> bool {
    lines.iter().any(|l| {
        hierarchy_of(std::slice::from_ref(&dest.hierarchy), l).is_some()
            && l.path.trim_end_matches('/') == dest.path.trim_end_matches('/')
    })
}

/// The file through which a single-threaded process moves itself into a v1 cgroup by writing
/// `0`. For one thread moving itself, kernels with "cgroup: Optimize single thread migration"
/// (Linux 5.x, here 6.18) skip the global thread-group rwsem, whose every write lock waits out
/// an RCU grace period (7 to 15 ms on this machine). On cgroup2 the same shortcut exists only
/// through `cgroup.threads`, which moves a thread within its threaded domain, never to another
/// cgroup's, so v2 destinations get `None`.
pub fn self_join_file(dest: &CgroupDir) -> Option<PathBuf> {
    (dest.hierarchy.version == Version::V1).then(|| dest.dir.join("tasks"))
}

/// Why a process placed in `d` would not run: the cgroup is frozen (v1 `freezer.state` not
/// `THAWED`, v2 `frozen 1` in `cgroup.events`, both counting frozen ancestors). `None` when it
/// is thawed or has no freezer.
pub fn frozen(d: &CgroupDir) -> Option<String> {
    let read = |file: &str| std::fs::read_to_string(d.dir.join(file)).ok();
    match d.hierarchy.version {
        Version::V1 if d.hierarchy.has("freezer") => read("freezer.state")
            .map(|t| t.trim().to_string())
            .filter(|s| s != "THAWED")
            .map(|s| format!("freezer.state {s}")),
        Version::V1 => None,
        Version::V2 => read("cgroup.events")
            .filter(|t| t.lines().any(|l| l.trim() == "frozen 1"))
            .map(|_| "cgroup.events: frozen 1".to_string()),
    }
}

/// The processes in a cgroup (not its children).
pub fn procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether processes must go into a child of this cgroup: a non-root v2 cgroup that enables
/// controllers for its children may not hold processes itself.
pub fn needs_leaf(d: &CgroupDir) -> bool {
    d.hierarchy.version == Version::V2
        && d.dir != d.hierarchy.mount
        && d.read(&d.dir, "cgroup.subtree_control")
            .is_some_and(|s| !s.is_empty())
}

/// Creates a child cgroup (existing is fine).
pub fn create(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(CgroupError::Create {
            dir: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The cgroup mounts of this host, from a mountinfo file, limited to those under a root.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    mountinfo: PathBuf,
    root: PathBuf,
}

impl CgroupFs {
    /// Mounts from `<proc_root>/self/mountinfo` under `cgroup_root`.
    pub fn new(proc_root: &Path, cgroup_root: &Path) -> Self {
        CgroupFs {
            mountinfo: proc_root.join("self").join("mountinfo"),
            root: cgroup_root.to_path_buf(),
        }
    }

    pub fn hierarchies(&self) -> Result<Vec<Hierarchy>, CgroupError> {
        let text =
            std::fs::read_to_string(&self.mountinfo).map_err(|source| CgroupError::Mountinfo {
                path: self.mountinfo.clone(),
                source,
            })?;
        Ok(parse_mountinfo(&text, &self.root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests;
