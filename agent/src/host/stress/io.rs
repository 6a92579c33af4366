//! Where an io fault writes: `path` in the TARGET's filesystem, reached through
//! `/proc/<pid>/root` of one of its processes (see [`rootfs`](crate::host::rootfs)), so that the
//! bytes land on the container's disk, not in the agent's own `/tmp`.
//!
//! - pid, container and pod targets: the oldest process of the target (not one of our own
//!   workers or guards) whose filesystem has the directory; a pod's sandbox (`pause`) process
//!   usually has none, so its app's filesystem is used. A cgroup target: the oldest process
//!   of the cgroup, or the host when it has none.
//! - the host: the root of PID 1 (the node's filesystem even when the agent runs in a
//!   container with hostPID), or of `kthreadd` (PID 2, always in the initial root) when PID 1's
//!   cannot be opened.
//!
//! Files are named `.faultline-io-<fault-id>-<n>` and created with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! (0600) by the agent, which hands each to its worker. The recipe keeps the root's process and
//! the directory's device and inode, so a revert finds the directory again through any process
//! that still sees it; the sweep looks into every io path of every process's filesystem.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use faultline_core::fault::{IoFault, Target};
use serde::{Deserialize, Serialize};

use super::{StressDriver, StressRecipe};
use crate::engine::driver::{DriverError, FaultCtx};
use crate::host::proc::{Identity, ProcTable};
use crate::host::rootfs::{Dir, DirId, Root, RootError};
use crate::host::scan;
use crate::host::target::Resolved;

/// The journaled place of an io fault's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoTarget {
    /// The process whose root the directory was found through.
    pub root: Identity,
    /// The directory as the target sees it (`/tmp`).
    pub dir: PathBuf,
    /// The directory's device and inode when planned.
    pub dev: u64,
    pub ino: u64,
    /// File names in `dir`, one per worker.
    pub names: Vec<String>,
}

impl IoTarget {
    fn dir_id(&self) -> DirId {
        DirId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// `/proc/<pid>/root/tmp`.
    pub fn shown(&self, proc: &ProcTable) -> PathBuf {
        let mut p = proc.path(self.root.pid, "root");
        p.extend(self.dir.components().skip(1));
        p
    }
}

fn refused(e: RootError) -> DriverError {
    DriverError::Refused(format!("path: {e}"))
}

impl StressDriver {
    /// Checks the io directory and decides the files: changes nothing.
    pub(super) fn plan_io(
        &self,
        ctx: &FaultCtx,
        io: &IoFault,
        target: &Target,
        resolved: &Resolved,
    ) -> Result<(IoTarget, Vec<Vec<String>>), DriverError> {
        let dir = self.allowed_io_dir(&io.path)?;
        let (root, found) = self.io_root(target, resolved, &dir)?;
        let names: Vec<String> = (0..io.workers)
            .map(|n| scan::io_file_name(&ctx.fault_id, n))
            .collect();
        let rate = if io.rate_bytes_per_second == 0 {
            0
        } else {
            io.rate_bytes_per_second.div_ceil(u64::from(io.workers))
        };
        let workers = names
            .iter()
            .map(|name| {
                vec![
                    "--dir".into(),
                    found.shown().display().to_string(),
                    "--file".into(),
                    name.clone(),
                    "--size".into(),
                    io.size_bytes.to_string(),
                    "--rate".into(),
                    rate.to_string(),
                ]
            })
            .collect();
        let t = IoTarget {
            root,
            dir,
            dev: found.id.dev,
            ino: found.id.ino,
            names,
        };
        Ok((t, workers))
    }

    /// The io directory if it is one of the configured io paths.
    pub(super) fn allowed_io_dir(&self, path: &str) -> Result<PathBuf, DriverError> {
        let want = Path::new(path.trim_end_matches('/'));
        if !self.host.io_paths.iter().any(|p| p == want) {
            let allowed: Vec<String> = self
                .host
                .io_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return Err(DriverError::Refused(format!(
                "path {path} is not one of the agent's io_paths ({}) (agent config)",
                allowed.join(", ")
            )));
        }
        Ok(want.to_path_buf())
    }

    /// The process whose root holds the target's view of `dir`, and that directory.
    pub(super) fn io_root(
        &self,
        target: &Target,
        resolved: &Resolved,
        dir: &Path,
    ) -> Result<(Identity, Dir), DriverError> {
        let proc = self.host.proc();
        let members = self.members(resolved);
        if !matches!(target, Target::Host) && members.is_empty() && !resolved.pids.is_empty() {
            return Err(DriverError::Refused(format!(
                "path: {} has no process of its own to write through (only our workers)",
                resolved.description
            )));
        }
        // The host, and a cgroup without processes.
        if members.is_empty() {
            let mut last = None;
            for id in host_roots(proc) {
                match Root::of(proc, id) {
                    Ok(root) => return root.dir(dir).map(|d| (id, d)).map_err(refused),
                    Err(e) => last = Some(e),
                }
            }
            return Err(DriverError::Other(format!(
                "cannot open the host's root (of pid 1 or kthreadd): {}",
                last.map_or_else(|| "neither process was found".into(), |e| e.to_string())
            )));
        }
        let mut tried = Vec::new();
        for id in members {
            let root = match Root::of(proc, id) {
                Ok(r) => r,
                Err(RootError::Gone { .. }) => continue,
                Err(e) => return Err(refused(e)),
            };
            match root.dir(dir) {
                Ok(d) => return Ok((id, d)),
                Err(e) if e.is_not_found() => tried.push(root.shown().display().to_string()),
                Err(e) => return Err(refused(e)),
            }
        }
        Err(DriverError::Refused(format!(
            "path: {} does not exist in the filesystem of {} (looked through {})",
            dir.display(),
            resolved.description,
            if tried.is_empty() {
                "no process: they all exited".into()
            } else {
                tried.join(", ")
            }
        )))
    }

    /// The target's processes that are not ours, oldest first.
    fn members(&self, resolved: &Resolved) -> Vec<Identity> {
        let proc = self.host.proc();
        let exe = self.host.exe().ok();
        let mut out: Vec<(u64, Identity)> = resolved
            .pids
            .iter()
            .filter_map(|p| proc.stat(*p).ok())
            .filter(|st| exe.is_none_or(|e| !scan::is_helper(proc, e, st.pid)))
            .map(|st| (st.start, st.identity()))
            .collect();
        out.sort();
        out.into_iter().map(|(_, id)| id).collect()
    }

    /// Opens the planned directory again and creates every file (`O_EXCL`): the descriptors
    /// for the workers. Fails, naming the path, when the directory changed or a name exists.
    pub(super) fn create_io_files(&self, t: &IoTarget) -> Result<(Dir, Vec<OwnedFd>), DriverError> {
        let proc = self.host.proc();
        let dir = Root::of(proc, t.root)
            .and_then(|r| r.dir(&t.dir))
            .map_err(|e| DriverError::Other(format!("io directory: {e}")))?;
        if dir.id != t.dir_id() {
            return Err(DriverError::Other(format!(
                "io directory {} is not the directory planned (it was replaced or remounted)",
                dir.shown().display()
            )));
        }
        let mut files = Vec::new();
        for name in &t.names {
            files.push(
                dir.create(name)
                    .map_err(|e| DriverError::Other(format!("io file: {e}")))?,
            );
        }
        Ok((dir, files))
    }

    /// Removes a fault's io files wherever its directory can still be reached: `(removed
    /// something, errors)`.
    pub(super) fn remove_io_files(&self, r: &StressRecipe) -> (bool, Vec<String>) {
        let mut did = false;
        let mut errors = Vec::new();
        if let Some(t) = &r.io {
            if let Some(dir) = self.find_io_dir(t) {
                let mut names: Vec<String> = t.names.clone();
                names.extend(
                    dir.names()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|n| scan::io_file_fault(n) == Some(r.fault_id.as_str())),
                );
                names.sort();
                names.dedup();
                for n in names {
                    match dir.remove(&n) {
                        Ok(removed) => did |= removed,
                        Err(e) => errors.push(format!("remove {e}")),
                    }
                }
            } else {
                tracing::info!(
                    fault_id = %r.fault_id,
                    dir = %t.dir.display(),
                    "no process sees the io directory any more; its files went with the target's filesystem"
                );
            }
        }
        // Recipes journaled by earlier agents named host paths.
        let mut legacy: HashSet<PathBuf> = r.files.iter().cloned().collect();
        if let Some(dir) = &r.io_dir {
            legacy.extend(
                scan::io_files(dir)
                    .into_iter()
                    .filter(|(_, id)| *id == r.fault_id)
                    .map(|(p, _)| p),
            );
        }
        for f in legacy {
            match std::fs::remove_file(&f) {
                Ok(()) => did = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove {}: {e}", f.display())),
            }
        }
        (did, errors)
    }

    /// The planned directory through its root process, or through any process that shows the
    /// same directory (device and inode) when that one is gone.
    fn find_io_dir(&self, t: &IoTarget) -> Option<Dir> {
        let proc = self.host.proc();
        let same = |d: Dir| (d.id == t.dir_id()).then_some(d);
        if let Some(d) = Root::of(proc, t.root)
            .and_then(|r| r.dir(&t.dir))
            .ok()
            .and_then(same)
        {
            return Some(d);
        }
        views(proc).into_iter().find_map(|id| {
            Root::of(proc, id)
                .and_then(|r| r.dir(&t.dir))
                .ok()
                .and_then(same)
        })
    }

    /// Removes io files of faults not in `known` from every io path of every filesystem view
    /// on the host; one line per file.
    pub(super) fn sweep_io_files(&self, known: &HashSet<String>) -> Vec<String> {
        let proc = self.host.proc();
        let mut seen: HashSet<DirId> = HashSet::new();
        let mut lines = Vec::new();
        for view in views(proc) {
            let Ok(root) = Root::of(proc, view) else {
                continue;
            };
            for p in &self.host.io_paths {
                let Ok(dir) = root.dir(p) else { continue };
                if !seen.insert(dir.id) {
                    continue;
                }
                for name in dir.names().unwrap_or_default() {
                    let Some(id) = scan::io_file_fault(&name) else {
                        continue;
                    };
                    if known.contains(id) {
                        continue;
                    }
                    let path = dir.path_of(&name);
                    match dir.remove(&name) {
                        Ok(true) => lines.push(format!(
                            "removed orphan io file {} (fault {id})",
                            path.display()
                        )),
                        Ok(false) => {}
                        Err(e) => lines.push(format!("could not remove orphan io file {e}")),
                    }
                }
            }
        }
        lines
    }
}

/// PID 1, then kthreadd: whose root is the host's.
fn host_roots(proc: &ProcTable) -> Vec<Identity> {
    [1u32, 2]
        .into_iter()
        .filter_map(|pid| proc.stat(pid).ok())
        .filter(|st| st.pid == 1 || (st.comm == "kthreadd" && st.ppid == 0))
        .map(|st| st.identity())
        .collect()
}

/// One process per distinct view of the filesystem on the host: processes that share their
/// mount namespace and root directory see the same tree, so one of them is enough.
fn views(proc: &ProcTable) -> Vec<Identity> {
    let mut seen: HashSet<(String, DirId)> = HashSet::new();
    let mut out = Vec::new();
    for pid in proc.pids().unwrap_or_default() {
        let Some(id) = proc.identity(pid) else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(proc.path(pid, "ns/mnt")) else {
            continue;
        };
        let Ok(root) = Root::of(proc, id) else {
            continue;
        };
        if seen.insert((ns.display().to_string(), root.id)) {
            out.push(id);
        }
    }
    out
}
