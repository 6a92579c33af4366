//! A kubelet-shaped pod for the composition test's container-kill (root): a pause process and
//! an `app` container, each a `sleep` in a cgroup2 directory named as the kubelet's cgroupfs
//! driver names it (`kubepods/burstable/pod<uid>/<container id>`), the kubelet's pod log
//! directory (`shop_checkout-1_<uid>`) and the container log link
//! (`checkout-1_shop_app-<id>.log`; none for the sandbox). The test plays the runtime:
//! [`KubePod::restart_app`] starts `app` again with a new ID and link. Drop kills every process
//! by PID, then removes the cgroups and directories.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NAMESPACE: &str = "shop";
pub const POD: &str = "checkout-1";
const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// `n` random hex digits.
fn hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(s.len());
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s.truncate(n);
    s
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

fn place(dir: &Path, pid: u32) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("place {pid} in {}: {e}", dir.display()));
}

pub struct KubePod {
    pub pause: Child,
    /// Every `app` process started, the current one last.
    pub apps: Vec<Child>,
    pub uid: String,
    /// The test's top cgroup2 directory; the pod's is below it.
    top: PathBuf,
    pod_dir: PathBuf,
    /// `pods/` and `containers/`.
    pub logs: tempfile::TempDir,
}

impl KubePod {
    pub fn new() -> KubePod {
        assert!(
            Path::new(CGROUP2).join("cgroup.procs").exists(),
            "the composition test needs cgroup2 at {CGROUP2}"
        );
        let uid = format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12));
        let top = Path::new(CGROUP2).join(format!("faultline-compose-{}", std::process::id()));
        let pod_dir = top.join(format!("kubepods/burstable/pod{uid}"));
        let logs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(
            logs.path()
                .join("pods")
                .join(format!("{NAMESPACE}_{POD}_{uid}")),
        )
        .expect("pod log dir");
        std::fs::create_dir_all(logs.path().join("containers")).expect("links dir");
        let pause = sleeper();
        let mut pod = KubePod {
            pause,
            apps: Vec::new(),
            uid,
            top,
            pod_dir,
            logs,
        };
        place(&pod.pod_dir.join(hex(64)), pod.pause.id());
        // The pause process is the pod's oldest; the app starts after it.
        std::thread::sleep(Duration::from_millis(20));
        pod.restart_app();
        pod
    }

    /// Starts `app` (again): a new ID, cgroup, process, log file and link; returns its PID.
    pub fn restart_app(&mut self) -> u32 {
        let id = hex(64);
        let child = sleeper();
        let pid = child.id();
        self.apps.push(child);
        place(&self.pod_dir.join(&id), pid);
        let dir = self
            .logs
            .path()
            .join("pods")
            .join(format!("{NAMESPACE}_{POD}_{}", self.uid))
            .join("app");
        std::fs::create_dir_all(&dir).expect("container log dir");
        let log = dir.join(format!("{}.log", self.apps.len() - 1));
        std::fs::write(&log, "").expect("log file");
        std::os::unix::fs::symlink(
            &log,
            self.links_dir()
                .join(format!("{POD}_{NAMESPACE}_app-{id}.log")),
        )
        .expect("container log link");
        pid
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.logs.path().join("pods")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.logs.path().join("containers")
    }

    /// Whether the latest `app` ended (was killed) within `limit`.
    pub fn app_ends_within(&mut self, limit: Duration) -> bool {
        let app = self.apps.last_mut().expect("an app");
        let end = Instant::now() + limit;
        loop {
            if matches!(app.try_wait(), Ok(Some(_))) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pause_running(&mut self) -> bool {
        matches!(self.pause.try_wait(), Ok(None))
    }
}

/// Cgroup directories below `dir`, deepest first, then `dir`.
fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for KubePod {
    fn drop(&mut self) {
        for c in self.apps.iter_mut().chain(std::iter::once(&mut self.pause)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_tree(&self.top);
    }
}
