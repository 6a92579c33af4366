//! Finds the artifacts the agent owns by their deterministic names: worker and guard processes
//! of our executable (their argv names the fault), io files `.faultline-io-<fault-id>-<n>`, and
//! leaf cgroups `faultline-fault-<fault-id>`.

use std::path::{Path, PathBuf};

use super::proc::{ProcTable, Stat};
use super::worker::{GUARD_ARG, IO_GUARD_ARG, WORKER_ARG};

pub const IO_FILE_PREFIX: &str = ".faultline-io-";
pub const CGROUP_PREFIX: &str = "faultline-fault-";

/// The io file name of worker `n` of a fault.
pub fn io_file_name(fault_id: &str, n: u32) -> String {
    format!("{IO_FILE_PREFIX}{fault_id}-{n}")
}

/// The io file of worker `n` of a fault in `dir`.
pub fn io_file(dir: &Path, fault_id: &str, n: u32) -> PathBuf {
    dir.join(io_file_name(fault_id, n))
}

/// The fault id in an io file name, if it is one of ours.
pub fn io_file_fault(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(IO_FILE_PREFIX)?;
    let (id, n) = rest.rsplit_once('-')?;
    (!id.is_empty() && n.parse::<u32>().is_ok()).then_some(id)
}

/// Our io files in a directory, with their fault ids.
pub fn io_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let id = io_file_fault(name.to_str()?)?.to_string();
            Some((e.path(), id))
        })
        .collect();
    out.sort();
    out
}

/// The leaf cgroup name for a fault.
pub fn cgroup_name(fault_id: &str) -> String {
    format!("{CGROUP_PREFIX}{fault_id}")
}

/// Our leaf cgroups below `top` (at most `depth` levels down), with their fault ids.
pub fn cgroups_below(top: &Path, depth: u32) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(top.to_path_buf(), 0u32)];
    while let Some((dir, d)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(CGROUP_PREFIX) {
                out.push((e.path(), id.to_string()));
            } else if d + 1 < depth {
                stack.push((e.path(), d + 1));
            }
        }
    }
    out.sort();
    out
}

/// A worker or guard process of our executable.
#[derive(Debug, Clone)]
pub struct Owned {
    pub stat: Stat,
    pub argv: Vec<String>,
    /// `__worker`, `__guard` or `__io-guard`.
    pub role: String,
    pub fault_id: String,
}

impl Owned {
    /// True when the process that spawned this helper is another live agent (same executable,
    /// not a helper itself, not us): the helper is that agent's, not an orphan. An agent's
    /// workers die with it (PDEATHSIG) and its guards are re-parented to init or a subreaper,
    /// so an orphan never has a live agent as its parent.
    pub fn held_by_another_agent(&self, proc: &ProcTable, exe: &Path) -> bool {
        let parent = self.stat.ppid;
        if parent <= 1 || parent == std::process::id() {
            return false;
        }
        let parent_is_agent = proc.exe(parent).is_some_and(|p| p == exe);
        let parent_is_helper = argv_of(proc, parent, exe)
            .and_then(|a| a.get(1).cloned())
            .is_some_and(|r| r == WORKER_ARG || r == GUARD_ARG || r == IO_GUARD_ARG);
        parent_is_agent && !parent_is_helper
    }

    /// The value after `--name` in the argv.
    pub fn arg(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.argv
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.argv.get(i + 1))
            .map(String::as_str)
    }

    /// `cpu`, `memory`, `io` for workers.
    pub fn kind(&self) -> &str {
        if self.role == WORKER_ARG {
            self.argv.get(2).map_or("", String::as_str)
        } else {
            "guard"
        }
    }
}

/// The argv of a process. A process that has just exec'd our executable shows an empty
/// cmdline for a moment (the kernel sets it up after the new image is in place): wait for it.
fn argv_of(proc: &ProcTable, pid: u32, exe: &Path) -> Option<Vec<String>> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        let argv = proc.cmdline(pid).ok()?;
        if !argv.is_empty()
            || std::time::Instant::now() >= end
            || proc.exe(pid).is_none_or(|p| p != exe)
        {
            return Some(argv);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Whether `pid` is one of our workers or guards (a process of `exe` in a helper role).
pub fn is_helper(proc: &ProcTable, exe: &Path, pid: u32) -> bool {
    let Ok(argv) = proc.cmdline(pid) else {
        return false;
    };
    let role = matches!(
        argv.get(1).map(String::as_str),
        Some(WORKER_ARG | GUARD_ARG | IO_GUARD_ARG)
    );
    role && (argv.first().is_some_and(|a| Path::new(a) == exe)
        || proc.exe(pid).is_some_and(|p| p == exe))
}

/// Every live worker and guard of `exe`, found by its argv.
pub fn owned(proc: &ProcTable, exe: &Path) -> Vec<Owned> {
    let exe_s = exe.to_string_lossy();
    let mut out = Vec::new();
    for pid in proc.pids().unwrap_or_default() {
        let Some(argv) = argv_of(proc, pid, exe) else {
            continue;
        };
        let role = match argv.get(1).map(String::as_str) {
            Some(r @ (WORKER_ARG | GUARD_ARG | IO_GUARD_ARG)) => r.to_string(),
            _ => continue,
        };
        let ours =
            argv.first().is_some_and(|a0| *a0 == exe_s) || proc.exe(pid).is_some_and(|p| p == exe);
        if !ours {
            continue;
        }
        let Ok(stat) = proc.stat(pid) else { continue };
        if stat.state == 'Z' {
            continue;
        }
        let mut o = Owned {
            stat,
            argv,
            role,
            fault_id: String::new(),
        };
        o.fault_id = o.arg("fault-id").unwrap_or_default().to_string();
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_file_names_carry_the_fault_id() {
        let p = io_file(Path::new("/tmp"), "exp-1-f2", 3);
        assert_eq!(p, PathBuf::from("/tmp/.faultline-io-exp-1-f2-3"));
        assert_eq!(io_file_fault(".faultline-io-exp-1-f2-3"), Some("exp-1-f2"));
        assert_eq!(io_file_fault(".faultline-io-x"), None);
        assert_eq!(io_file_fault(".faultline-io--3"), None);
        assert_eq!(io_file_fault("faultline-io-a-1"), None);
    }

    #[test]
    fn finds_our_files_and_leaf_cgroups() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".faultline-io-a-0"), b"x").expect("write");
        std::fs::write(dir.path().join("other"), b"x").expect("write");
        let found = io_files(dir.path());
        assert_eq!(
            found,
            vec![(dir.path().join(".faultline-io-a-0"), "a".into())]
        );

        let deep = dir.path().join("kubepods/pod1/faultline-fault-f9");
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("faultline-test-1")).expect("mkdir");
        assert_eq!(cgroups_below(dir.path(), 4), vec![(deep, "f9".into())]);
        assert!(cgroups_below(dir.path(), 2).is_empty());
    }
}
