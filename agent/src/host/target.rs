//! Resolves a fault's target (host, cgroup path, PID, container or pod) to processes, cgroups
//! and network namespace through `/proc` and the cgroup mounts alone, and refuses what may never
//! be targeted: PID 1, the agent and its ancestors, and the agent config's protected list.

use std::collections::BTreeMap;
use std::path::PathBuf;

use faultline_core::fault::{ContainerRef, Target};
use regex::Regex;

use super::cgroup::{self, CgroupDir, CgroupFs, CgroupLine, Hierarchy};
use super::cgroupns;
use super::proc::{ProcTable, Stat};
use super::{HostConfig, Protected};
use crate::engine::driver::DriverError;

/// What a target stands for on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `host`, `cgroup /x`, `pid 123`, `container abc`, `pod 1234-...`.
    pub description: String,
    /// Processes of the target (empty for the host).
    pub pids: Vec<u32>,
    /// The target's cgroup in every hierarchy (the roots for the host).
    pub cgroups: Vec<CgroupDir>,
    pub netns: Option<PathBuf>,
}

/// The protected list, compiled.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    pids: Vec<u32>,
    names: Vec<Regex>,
    cgroups: Vec<String>,
    /// Patterns that do not compile; the drivers report them as unavailable.
    pub errors: Vec<String>,
}

impl Protection {
    pub fn new(p: &Protected) -> Self {
        let mut names = Vec::new();
        let mut errors = Vec::new();
        for (i, n) in p.names.iter().enumerate() {
            match Regex::new(n) {
                Ok(r) => names.push(r),
                Err(e) => errors.push(format!("protected_names[{i}] {n:?} is not a regex: {e}")),
            }
        }
        Protection {
            pids: p.pids.clone(),
            names,
            cgroups: p.cgroups.iter().map(|c| normalize(c)).collect(),
            errors,
        }
    }

    /// The protected cgroup that holds `path`, if any.
    pub fn cgroup_of(&self, path: &str) -> Option<&str> {
        let path = normalize(path);
        self.cgroups
            .iter()
            .find(|p| under(&path, p))
            .map(String::as_str)
    }
}

fn normalize(p: &str) -> String {
    let t = p.trim().trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else if t.starts_with('/') {
        t.into()
    } else {
        format!("/{t}")
    }
}

/// Whether `path` is `base` or below it (both normalized).
fn under(path: &str, base: &str) -> bool {
    base == "/" || path == base || path.starts_with(&format!("{base}/"))
}

/// The container ID without a `containerd://`-style prefix, lowercased.
pub fn bare_container_id(id: &str) -> String {
    id.rsplit("://").next().unwrap_or(id).to_ascii_lowercase()
}

/// Whether a cgroup path names a container: a path component holding the ID right after its
/// start or a non-hex character (`/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>`).
pub fn path_has_container(path: &str, id: &str) -> bool {
    !id.is_empty()
        && path.split('/').any(|comp| {
            comp.match_indices(id)
                .any(|(at, _)| at == 0 || !comp.as_bytes()[at - 1].is_ascii_hexdigit())
        })
}

/// The path up to the pod's own cgroup, if the path is in the pod: `pod<uid>` as cgroupfs
/// writes it (`/kubepods/burstable/pod<uid>`) or as systemd does, dashes turned to
/// underscores (`kubepods-burstable-pod<uid_>.slice`).
pub fn pod_cgroup(path: &str, uid: &str) -> Option<String> {
    let uid = uid.to_ascii_lowercase();
    let spellings = [
        format!("pod{}", uid.replace('_', "-")),
        format!("pod{}", uid.replace('-', "_")),
    ];
    let comps: Vec<&str> = path.split('/').collect();
    let at = comps.iter().position(|comp| {
        spellings.iter().any(|s| {
            comp.match_indices(s.as_str()).any(|(i, _)| {
                let before_ok = i == 0 || matches!(comp.as_bytes()[i - 1], b'-' | b'_');
                let after = &comp[i + s.len()..];
                before_ok && (after.is_empty() || after.starts_with('.'))
            })
        })
    })?;
    Some(comps[..=at].join("/"))
}

/// Whether a cgroup path is the container's (with a container ID) or inside the pod (without).
fn in_container(c: &ContainerRef, path: &str) -> bool {
    let id = bare_container_id(&c.container_id);
    (id.is_empty() || path_has_container(path, &id))
        && (c.pod_uid.is_empty() || pod_cgroup(path, &c.pod_uid).is_some())
}

/// Target resolution over a process table and cgroup mounts.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub proc: ProcTable,
    pub cgroups: CgroupFs,
    pub protection: Protection,
    /// The agent's PID (a fake one in tests of fake trees).
    pub self_pid: u32,
}

impl Resolver {
    pub fn new(cfg: &HostConfig) -> Self {
        Resolver {
            proc: ProcTable::new(&cfg.proc_root),
            cgroups: CgroupFs::new(&cfg.proc_root, &cfg.cgroup_root),
            protection: Protection::new(&cfg.protected),
            self_pid: std::process::id(),
        }
    }

    pub fn hierarchies(&self) -> Result<Vec<Hierarchy>, DriverError> {
        self.cgroups
            .hierarchies()
            .map_err(|e| DriverError::Other(e.to_string()))
    }

    /// Why a process may never be targeted, or `None` when it may.
    pub fn why_protected(&self, pid: u32) -> Option<String> {
        Checker::new(self).why(pid, self.proc.stat(pid).ok().as_ref())
    }

    /// Resolves a target; refuses protected or missing ones with the reason.
    pub fn resolve(&self, target: &Target) -> Result<Resolved, DriverError> {
        let hs = self.hierarchies()?;
        match target {
            Target::Host => Ok(Resolved {
                description: "host".into(),
                pids: Vec::new(),
                cgroups: hs
                    .iter()
                    .map(|h| CgroupDir {
                        hierarchy: h.clone(),
                        path: h.root.clone(),
                        dir: h.mount.clone(),
                    })
                    .collect(),
                netns: None,
            }),
            Target::Netns(p) => Ok(Resolved {
                description: format!("netns {p}"),
                pids: Vec::new(),
                cgroups: Vec::new(),
                netns: Some(PathBuf::from(p)),
            }),
            Target::Cgroup(path) => {
                if let Some(p) = self.protection.cgroup_of(path) {
                    return Err(DriverError::Refused(format!(
                        "cgroup {path} is under the protected cgroup {p} (agent config)"
                    )));
                }
                let dirs = cgroup::dirs_for_path(&hs, path);
                if dirs.is_empty() {
                    let where_: Vec<String> =
                        hs.iter().map(|h| h.mount.display().to_string()).collect();
                    let ns = match hs.iter().find(|h| cgroupns::outside_namespace(&h.root)) {
                        Some(h) => format!(
                            "; {} shows the hierarchy from {}, outside the agent's cgroup namespace: {}",
                            h.mount.display(),
                            h.root,
                            cgroupns::CONSEQUENCE
                        ),
                        None => String::new(),
                    };
                    return Err(DriverError::Refused(format!(
                        "cgroup {path} does not exist in any cgroup hierarchy (looked under {}){ns}",
                        where_.join(", ")
                    )));
                }
                let mut pids: Vec<u32> = dirs.iter().flat_map(|d| cgroup::procs(&d.dir)).collect();
                pids.sort_unstable();
                pids.dedup();
                Ok(Resolved {
                    description: format!("cgroup {path}"),
                    pids,
                    cgroups: dirs,
                    netns: None,
                })
            }
            Target::Pid(pid) => {
                let st = self.proc.stat(*pid).map_err(|_| {
                    DriverError::Refused(format!("pid {pid} does not exist on this host"))
                })?;
                if let Some(why) = Checker::new(self).why(*pid, Some(&st)) {
                    return Err(DriverError::Refused(why));
                }
                let lines = self.lines(*pid);
                if let Some(l) = lines.iter().find(|l| cgroupns::outside_namespace(&l.path)) {
                    return Err(DriverError::Refused(cgroupns::refusal(*pid, l)));
                }
                Ok(Resolved {
                    description: format!("pid {pid} ({})", st.comm),
                    pids: vec![*pid],
                    cgroups: cgroup::dirs_for_lines(&hs, &lines),
                    netns: Some(self.proc.path(*pid, "ns/net")),
                })
            }
            Target::Container(c) => self.resolve_container(&hs, c),
        }
    }

    fn lines(&self, pid: u32) -> Vec<CgroupLine> {
        self.proc
            .cgroup_text(pid)
            .map(|t| cgroup::parse_proc_cgroup(&t))
            .unwrap_or_default()
    }

    /// Processes of a container or pod, oldest first, with their cgroup lines.
    pub fn container_members(&self, c: &ContainerRef) -> Vec<(Stat, Vec<CgroupLine>)> {
        let mut out = Vec::new();
        for pid in self.proc.pids().unwrap_or_default() {
            let lines = self.lines(pid);
            if lines.iter().any(|l| in_container(c, &l.path)) {
                if let Ok(st) = self.proc.stat(pid) {
                    out.push((st, lines));
                }
            }
        }
        out.sort_by_key(|(st, _)| (st.start, st.pid));
        out
    }

    fn resolve_container(
        &self,
        hs: &[Hierarchy],
        c: &ContainerRef,
    ) -> Result<Resolved, DriverError> {
        let description = if c.container_id.is_empty() {
            format!("pod {}", c.pod_uid)
        } else {
            format!("container {}", c.container_id)
        };
        let members = self.container_members(c);
        let Some((first, first_lines)) = members.first() else {
            return Err(DriverError::Refused(format!(
                "{description}: no process on this host is in its cgroup (searched {}/*/cgroup)",
                self.proc.root().display()
            )));
        };
        let checker = Checker::new(self);
        for (st, lines) in &members {
            if let Some(l) = lines.iter().find(|l| cgroupns::outside_namespace(&l.path)) {
                return Err(DriverError::Refused(format!(
                    "{description}: {}",
                    cgroupns::refusal(st.pid, l)
                )));
            }
            if let Some(why) = checker.why(st.pid, Some(st)) {
                return Err(DriverError::Refused(format!("{description}: {why}")));
            }
        }
        let cgroups = if c.container_id.is_empty() {
            // The pod's own cgroup in each hierarchy.
            let mut per: BTreeMap<String, CgroupDir> = BTreeMap::new();
            for (_, lines) in &members {
                for l in lines {
                    let Some(path) = pod_cgroup(&l.path, &c.pod_uid) else {
                        continue;
                    };
                    let line = CgroupLine { path, ..l.clone() };
                    for d in cgroup::dirs_for_lines(hs, std::slice::from_ref(&line)) {
                        per.entry(d.hierarchy.label()).or_insert(d);
                    }
                }
            }
            per.into_values().collect()
        } else {
            // Only the hierarchies where the container has its own cgroup: on a v1 node the
            // v2 line names the runtime's cgroup (`/system.slice/containerd.service`), which
            // holds every container of the node.
            let own: Vec<CgroupLine> = first_lines
                .iter()
                .filter(|l| in_container(c, &l.path))
                .cloned()
                .collect();
            cgroup::dirs_for_lines(hs, &own)
        };
        Ok(Resolved {
            description,
            pids: members.iter().map(|(st, _)| st.pid).collect(),
            cgroups,
            netns: Some(self.proc.path(first.pid, "ns/net")),
        })
    }
}

/// Protection checks with the agent's ancestry read once.
pub struct Checker<'a> {
    r: &'a Resolver,
    ancestors: Vec<u32>,
}

impl<'a> Checker<'a> {
    pub fn new(r: &'a Resolver) -> Self {
        Checker {
            r,
            ancestors: r.proc.ancestors(r.self_pid),
        }
    }

    /// Why `pid` (whose stat is given when known) may not be targeted.
    pub fn why(&self, pid: u32, st: Option<&Stat>) -> Option<String> {
        let r = self.r;
        if pid == 1 {
            return Some("pid 1 is the host's init process and is never targetable".into());
        }
        if pid == r.self_pid {
            return Some(format!("pid {pid} is the agent itself"));
        }
        if self.ancestors.contains(&pid) {
            return Some(format!(
                "pid {pid} is an ancestor of the agent (pid {})",
                r.self_pid
            ));
        }
        if r.protection.pids.contains(&pid) {
            return Some(format!(
                "pid {pid} is in the agent's protected pids (agent config)"
            ));
        }
        if let Some(st) = st {
            if let Some(re) = r.protection.names.iter().find(|re| re.is_match(&st.comm)) {
                return Some(format!(
                    "pid {pid} ({}) matches the protected name pattern {:?} (agent config)",
                    st.comm,
                    re.as_str()
                ));
            }
        }
        if !r.protection.cgroups.is_empty() {
            for l in r.lines(pid) {
                if cgroupns::outside_namespace(&l.path) {
                    return Some(format!(
                        "cannot tell whether pid {pid} is in a protected cgroup: {}",
                        cgroupns::refusal(pid, &l)
                    ));
                }
                if let Some(p) = r.protection.cgroup_of(&l.path) {
                    return Some(format!(
                        "pid {pid} is in the protected cgroup {p} ({}) (agent config)",
                        l.path
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
