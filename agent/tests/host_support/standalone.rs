//! The real `faultline-agent run` and `recover` for the host tests, and the cgroup2 groups and
//! mount namespaces they put things in; every one is removed by a Drop guard.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{wait_for, EXE};

/// Where cgroup2 is mounted: `/sys/fs/cgroup/unified` on a hybrid host, else `/sys/fs/cgroup`.
pub fn cgroup2_mount() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
        .unwrap_or_else(|| {
            panic!(
                "this test needs cgroup2 mounted at /sys/fs/cgroup/unified or /sys/fs/cgroup \
                 (mount -t cgroup2 none /sys/fs/cgroup/unified)"
            )
        })
}

/// A cgroup2 group of the test's own; whatever is left in it is killed and the group removed
/// when dropped.
pub struct V2Group {
    pub dir: PathBuf,
}

impl V2Group {
    pub fn new() -> V2Group {
        Self::named(&format!("faultline-test-{}", rand::random::<u32>()))
    }

    /// A group with a given name, so that one path can exist in v1 hierarchies and in v2.
    pub fn named(name: &str) -> V2Group {
        let dir = cgroup2_mount().join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        V2Group { dir }
    }

    /// The path as `/proc/<pid>/cgroup` shows it in the `0::` line.
    pub fn path(&self) -> String {
        let mount = cgroup2_mount();
        format!(
            "/{}",
            self.dir.strip_prefix(&mount).expect("below").display()
        )
    }

    pub fn procs(&self) -> Vec<u32> {
        faultline_agent::host::cgroup::procs(&self.dir)
    }

    /// Kills every process in the group at once: `cgroup.kill` (Linux 5.14+), or SIGKILL to
    /// each PID in `cgroup.procs` until it is empty where the kernel has no `cgroup.kill`.
    /// Returns how it was done.
    pub fn kill_all(&self) -> &'static str {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            std::fs::write(&kill, "1").expect("write 1 to cgroup.kill");
            return "cgroup.kill";
        }
        let end = Instant::now() + Duration::from_secs(5);
        while !self.procs().is_empty() && Instant::now() < end {
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        "SIGKILL of every pid in cgroup.procs"
    }
}

impl Drop for V2Group {
    fn drop(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if std::fs::remove_dir(&self.dir).is_ok() || Instant::now() > end {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The v2 cgroup of a process (`0::` line of `/proc/<pid>/cgroup`).
pub fn v2_cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("?")
        .to_string()
}

/// `faultline-agent run` started by the test (optionally through `sh -c` so it starts inside a
/// cgroup), its stdout lines arriving on a channel; killed by PID when dropped.
pub struct AgentRun {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl AgentRun {
    /// `run -f <faults> --duration <duration> --state-dir <state> [extra...]`, inside `group`
    /// from its first instruction when given.
    pub fn start(
        faults: &Path,
        duration: &str,
        state: &Path,
        extra: &[&str],
        group: Option<&V2Group>,
    ) -> AgentRun {
        let mut argv: Vec<String> = vec![
            EXE.into(),
            "run".into(),
            "-f".into(),
            faults.display().to_string(),
            "--duration".into(),
            duration.into(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match group {
            Some(g) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(r#"echo $$ > "$0" && exec "$@""#)
                    .arg(g.dir.join("cgroup.procs"))
                    .args(&argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let mut child = cmd
            .env_remove("FAULTLINE_STATE_DIR")
            .env_remove("FAULTLINE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn faultline-agent run");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        AgentRun {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 20 s) for a line starting with `prefix` and returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        while let Ok(l) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l.clone());
            if l.starts_with(prefix) {
                return l;
            }
        }
        panic!(
            "no line starting with {prefix:?} from faultline-agent run: {:#?}",
            self.seen
        );
    }

    /// The fault id of the first `applied <id> <kind>` line.
    pub fn applied(&mut self, kind: &str) -> String {
        let line = self.wait_line("applied ");
        let mut w = line.split_whitespace().skip(1);
        let id = w.next().expect("id").to_string();
        assert_eq!(w.next(), Some(kind), "{line}");
        id
    }

    /// Waits for the run to end (up to 30 s); its remaining lines and exit code.
    pub fn finish(&mut self) -> (Option<i32>, Vec<String>) {
        let end = Instant::now() + Duration::from_secs(30);
        while let Ok(l) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        let st = wait_for(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        (st.and_then(|s| s.code()), self.seen.clone())
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `faultline-agent recover --state-dir <state> [extra...]`: (exit code, stdout).
pub fn recover(state: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out: Output = Command::new(EXE)
        .args(["recover", "--state-dir"])
        .arg(state)
        .args(extra)
        .env_remove("FAULTLINE_STATE_DIR")
        .env_remove("FAULTLINE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run faultline-agent recover");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A process in a mount namespace of its own (`unshare -m`, private propagation) with a tmpfs
/// mounted over `dir`, sleeping; killed when dropped, which also ends the namespace and its
/// tmpfs. Needs util-linux (unshare) and root.
pub struct PrivateMount {
    pub child: Child,
}

impl PrivateMount {
    pub fn over(dir: &Path) -> PrivateMount {
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=64m,mode=1777 faultline-test "$0" && echo ready && exec sleep 300"#)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = lines.next().and_then(Result::ok);
        let m = PrivateMount { child };
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "unshare -m + mount tmpfs failed (this test needs root and util-linux)"
        );
        let pid = m.pid();
        let running = wait_for(Duration::from_secs(5), || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "sleep").then_some(())
        });
        assert!(running.is_some(), "the namespace's process runs sleep");
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path inside the namespace, as the host reaches it.
    pub fn inside(&self, path: &Path) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/{}/root", self.pid()));
        p.extend(path.components().skip(1));
        p
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
