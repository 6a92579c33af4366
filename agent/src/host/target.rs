//! Resolves a fault's target (host, network namespace, cgroup path, PID, container or pod) to
//! processes, cgroups and network namespace through `/proc`, the cgroup mounts and the
//! kubelet's pod log directories alone, and refuses what may never be targeted (the rules are
//! in [`super::protect`]): every target form is checked in canonical form, a cgroup path
//! also as the filesystem resolves it, a network namespace by its nsfs inode.

use std::collections::BTreeMap;
use std::path::PathBuf;

use faultline_core::fault::{ContainerRef, Target};

use super::cgroup::{self, CgroupDir, CgroupFs, CgroupLine, Hierarchy};
use super::cgroupns;
use super::nsfile;
use super::proc::{ProcTable, Stat};
use super::HostConfig;
use crate::engine::driver::DriverError;

pub use super::pods::{bare_container_id, path_has_container, pod_cgroup};
pub use super::protect::{Checker, Protection};

/// The field a netns target's refusals name (the wire name; `target.netns` in documents).
pub const NETNS_FIELD: &str = "spec.target.netns_path";

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
    /// The kubelet's pod log directories (`<namespace>_<name>_<uid>`).
    pub pods_dir: PathBuf,
    /// The agent's PID (a fake one in tests of fake trees).
    pub self_pid: u32,
}

impl Resolver {
    pub fn new(cfg: &HostConfig) -> Self {
        Resolver {
            proc: ProcTable::new(&cfg.proc_root),
            cgroups: CgroupFs::new(&cfg.proc_root, &cfg.cgroup_root),
            protection: Protection::new(&cfg.protected),
            pods_dir: cfg.pod_logs_dir.clone(),
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
            Target::Netns(p) => self.resolve_netns(p),
            Target::Cgroup(path) => self.resolve_cgroup(&hs, path),
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

    /// A network namespace path: it must open as a network namespace (nsfs, type net; checked
    /// before any open that could block) that no protected process lives in.
    fn resolve_netns(&self, p: &str) -> Result<Resolved, DriverError> {
        let refuse = |what: String| DriverError::Refused(format!("{NETNS_FIELD}: {p} {what}"));
        let ns = nsfile::open_netns(std::path::Path::new(p)).map_err(|e| {
            let hint = match e {
                nsfile::NsFileError::Open(_) => "",
                _ => "; a netns target is a network namespace file such as /run/netns/NAME or /proc/PID/ns/net",
            };
            refuse(format!("{}{hint}", e.sentence()))
        })?;
        if let Some(why) = Checker::new(self).why_netns(ns.dev, ns.ino) {
            return Err(refuse(format!("is {why}")));
        }
        Ok(Resolved {
            description: format!("netns {p}"),
            pids: Vec::new(),
            cgroups: Vec::new(),
            netns: Some(PathBuf::from(p)),
        })
    }

    /// A cgroup path, canonical (`..` refused), in every hierarchy where it exists; checked as
    /// written and as each directory resolves on the filesystem.
    fn resolve_cgroup(&self, hs: &[Hierarchy], given: &str) -> Result<Resolved, DriverError> {
        let path = super::protect::canonical_cgroup(given)
            .map_err(|e| DriverError::Refused(format!("spec.target.cgroup: {e}")))?;
        let checker = Checker::new(self);
        if let Some(why) = checker.why_cgroup(&path, &[]) {
            return Err(DriverError::Refused(why));
        }
        let dirs = cgroup::dirs_for_path(hs, &path);
        if dirs.is_empty() {
            let where_: Vec<String> = hs.iter().map(|h| h.mount.display().to_string()).collect();
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
        for d in &dirs {
            let real = super::protect::real_path(d)
                .map_err(|e| DriverError::Refused(format!("cgroup {path}: {e}")))?;
            let why = checker.why_cgroup(&real, std::slice::from_ref(d));
            if let Some(why) = why {
                return Err(DriverError::Refused(why));
            }
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

    pub(crate) fn lines(&self, pid: u32) -> Vec<CgroupLine> {
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
        let checker = Checker::new(self);
        if let Some(why) = checker.why_namespace(&c.pod_namespace) {
            return Err(DriverError::Refused(format!("{description}: {why}")));
        }
        let members = self.container_members(c);
        let Some((first, first_lines)) = members.first() else {
            return Err(DriverError::Refused(format!(
                "{description}: no process on this host is in its cgroup (searched {}/*/cgroup)",
                self.proc.root().display()
            )));
        };
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

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
