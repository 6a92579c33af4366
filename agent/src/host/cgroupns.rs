//! Joins the host's cgroup namespace at start, so that `/proc/<pid>/cgroup` of every process
//! reads as an absolute path from the hierarchy root (a container on cgroup v2 gets a private
//! cgroup namespace, where pods outside it read as `/../..`-relative paths), and recognises
//! such relative paths so that target resolution refuses them instead of guessing.
//!
//! A namespace change affects only the calling thread and the threads it creates afterwards,
//! so [`join_host`] must run on the main thread before any other thread exists (before the
//! async runtime is built).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::cgroup::CgroupLine;

/// What the agent loses when it stays in a private cgroup namespace, and the fix.
pub const CONSEQUENCE: &str =
    "container and pod targets whose cgroups lie outside the agent's own \
     cgroup namespace are refused (their /proc/<pid>/cgroup paths start with /..); run the agent \
     with hostPID and CAP_SYS_ADMIN so that it joins the host's cgroup namespace at start";

/// `flags` bit of `/proc/<pid>/stat` (field 9) marking a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The process whose cgroup namespace counts as the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub pid: u32,
    /// `init` or `kthreadd`.
    pub what: &'static str,
    /// Inode of its `ns/cgroup` (`cgroup:[<inode>]`).
    pub inode: u64,
}

/// What [`join_host`] / [`join_of`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The calling thread already was in the reference's cgroup namespace.
    AlreadyShared(Reference),
    /// The calling thread left its private cgroup namespace (`from`) for the reference's.
    Joined { reference: Reference, from: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupNsError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no host process to take the cgroup namespace from: {0}")]
    NoReference(String),
    #[error(
        "the agent is in a private cgroup namespace (cgroup:[{own}]) and may not join pid {pid}'s \
         (cgroup:[{host}]): setns needs CAP_SYS_ADMIN"
    )]
    NotAllowed { own: u64, pid: u32, host: u64 },
    #[error("setns into pid {pid}'s cgroup namespace (cgroup:[{host}]): {source}")]
    Setns {
        pid: u32,
        host: u64,
        #[source]
        source: nix::Error,
    },
    #[error("after setns the agent is in cgroup:[{now}], not in pid {pid}'s cgroup:[{host}]")]
    Unchanged { now: u64, pid: u32, host: u64 },
}

/// Whether a path read from `/proc/<pid>/cgroup` climbs above the reader's cgroup namespace
/// root (`/../../kubepods.slice/...`): the process lies outside the agent's cgroup namespace and
/// the path names no directory the agent can find.
pub fn outside_namespace(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// Why a process's cgroup cannot be located: its `line` is relative to the agent's private
/// cgroup namespace.
pub fn refusal(pid: u32, line: &CgroupLine) -> String {
    let hierarchy = if line.controllers.is_empty() {
        "cgroup2".to_string()
    } else {
        line.controllers.join(",")
    };
    format!(
        "pid {pid} reads as cgroup {hierarchy}:{}, a path relative to the agent's own cgroup \
         namespace: the agent runs in a private cgroup namespace (on cgroup v2 Kubernetes gives \
         every container one) and did not join the host's, so {}",
        line.path, CONSEQUENCE
    )
}

fn open(path: PathBuf) -> Result<(File, u64), CgroupNsError> {
    let file = File::open(&path).map_err(|source| CgroupNsError::Open {
        path: path.clone(),
        source,
    })?;
    let inode = file
        .metadata()
        .map_err(|source| CgroupNsError::Open { path, source })?
        .ino();
    Ok((file, inode))
}

/// The `flags` field of a `/proc/<pid>/stat` text (counted after the `)` that ends the name).
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// Whether `pid` is a kernel thread: those always live in the initial namespaces.
fn is_kernel_thread(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|s| stat_flags(&s))
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// Moves the calling thread into the cgroup namespace of `pid` unless it is there already.
/// Needs CAP_SYS_ADMIN when a move is needed.
pub fn join_of(proc_root: &Path, pid: u32, what: &'static str) -> Result<Joined, CgroupNsError> {
    let (file, inode) = open(proc_root.join(pid.to_string()).join("ns/cgroup"))?;
    join_file(proc_root, &file, Reference { pid, what, inode })
}

fn join_file(proc_root: &Path, file: &File, reference: Reference) -> Result<Joined, CgroupNsError> {
    let own = || open(proc_root.join("thread-self/ns/cgroup")).map(|(_, i)| i);
    let from = own()?;
    if from == reference.inode {
        return Ok(Joined::AlreadyShared(reference));
    }
    setns(file, CloneFlags::CLONE_NEWCGROUP).map_err(|source| match source {
        nix::Error::EPERM => CgroupNsError::NotAllowed {
            own: from,
            pid: reference.pid,
            host: reference.inode,
        },
        source => CgroupNsError::Setns {
            pid: reference.pid,
            host: reference.inode,
            source,
        },
    })?;
    let now = own()?;
    if now != reference.inode {
        return Err(CgroupNsError::Unchanged {
            now,
            pid: reference.pid,
            host: reference.inode,
        });
    }
    Ok(Joined::Joined { reference, from })
}

/// Moves the calling thread into the host's cgroup namespace: the one of PID 1 (init), or,
/// where PID 1's namespaces cannot be read (a hardened init), of the kernel thread `kthreadd`
/// (PID 2), which is always in the initial cgroup namespace. Call it before any thread starts.
pub fn join_host(proc_root: &Path) -> Result<Joined, CgroupNsError> {
    let init = match join_of(proc_root, 1, "init") {
        Err(CgroupNsError::Open { path, source }) => format!("{}: {source}", path.display()),
        other => return other,
    };
    if !is_kernel_thread(proc_root, 2) {
        return Err(CgroupNsError::NoReference(format!(
            "{init}; pid 2 is not the kernel thread kthreadd (the agent is not in the host's PID namespace: set hostPID)"
        )));
    }
    join_of(proc_root, 2, "kthreadd").map_err(|e| match e {
        CgroupNsError::Open { path, source } => {
            CgroupNsError::NoReference(format!("{init}; {}: {source}", path.display()))
        }
        other => other,
    })
}

/// Logs what [`join_host`] did: info when the agent shares or joined the host's namespace, a
/// warning naming the consequence otherwise.
pub fn log(outcome: &Result<Joined, CgroupNsError>) {
    match outcome {
        Ok(Joined::AlreadyShared(r)) => tracing::debug!(
            reference_pid = r.pid,
            reference = r.what,
            cgroupns = r.inode,
            "the agent shares the host's cgroup namespace"
        ),
        Ok(Joined::Joined { reference: r, from }) => tracing::info!(
            reference_pid = r.pid,
            reference = r.what,
            cgroupns = r.inode,
            private_cgroupns = from,
            "joined the host's cgroup namespace (that of pid {} {}): cgroup paths of pods read from the hierarchy root",
            r.pid,
            r.what
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot join the host's cgroup namespace; where the agent's own is private, {CONSEQUENCE}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_by_the_stat_flags() {
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0";
        assert_eq!(stat_flags(kthreadd), Some(2_129_984));
        assert_ne!(2_129_984 & PF_KTHREAD, 0);
        let bash = "77 (ba) sh) S 1 77 77 34816 77 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9 1 1";
        assert_eq!(stat_flags(bash), Some(4_194_560));
        assert_eq!(4_194_560 & PF_KTHREAD, 0);
        assert_eq!(stat_flags("garbage"), None);
    }

    /// A fake proc root whose `1/ns/cgroup` and `thread-self/ns/cgroup` are links to this
    /// thread's real namespace file: PID 1 "shares" it, nothing changes.
    #[test]
    fn a_shared_namespace_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = Path::new("/proc/thread-self/ns/cgroup");
        for p in ["1/ns", "thread-self/ns"] {
            std::fs::create_dir_all(dir.path().join(p)).expect("mkdir");
            std::os::unix::fs::symlink(real, dir.path().join(p).join("cgroup")).expect("link");
        }
        let inode = std::fs::metadata(real).expect("own cgroupns").ino();
        let got = join_host(dir.path()).expect("shared");
        assert_eq!(
            got,
            Joined::AlreadyShared(Reference {
                pid: 1,
                what: "init",
                inode
            })
        );
    }

    #[test]
    fn without_init_or_kthreadd_the_error_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("2")).expect("mkdir");
        std::fs::write(
            dir.path().join("2/stat"),
            "2 (bash) S 1 2 2 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
        )
        .expect("stat");
        let e = join_host(dir.path()).expect_err("no reference").to_string();
        assert!(
            e.starts_with("no host process to take the cgroup namespace from: "),
            "{e}"
        );
        assert!(e.contains("1/ns/cgroup"), "{e}");
        assert!(
            e.contains("pid 2 is not the kernel thread kthreadd") && e.contains("set hostPID"),
            "{e}"
        );
    }
}
