//! The crash tests' helpers: the agent run under test (`faultline-agent run`, SIGKILLed at
//! will), its helper processes found in /proc, a process to pause, and `faultline-agent
//! recover` with what it found.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faultline_tests::binary;
use faultline_tests::procs::run;

/// A `sleep` the test owns, killed by PID on drop.
pub(crate) struct Sleeper(Child);

impl Sleeper {
    pub(crate) fn spawn() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
    pub(crate) fn state(&self) -> char {
        proc_state(self.pid()).expect("sleeper alive")
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Live helpers of one agent run: its stress workers (their command line carries
/// `--parent-pid <agent>`) and the guard holding `paused` (its `--pids` names `<pid>:<start>`).
/// Other agents on the machine (other tests, a real agent) are never counted.
pub(crate) fn helpers_of(agent_pid: u32, paused: u32) -> Vec<(u32, String)> {
    let worker_mark = format!("--parent-pid {agent_pid} ");
    let guard_mark = format!("{paused}:");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let ours = (cmd.contains("__worker") && cmd.contains(&worker_mark))
            || (cmd.contains("__guard") && cmd.contains(&guard_mark));
        // A zombie is gone for our purposes: it holds no CPU, memory or files.
        if ours && proc_state(pid) != Some('Z') {
            out.push((pid, cmd));
        }
    }
    out
}

pub(crate) fn workers(helpers: &[(u32, String)]) -> Vec<&(u32, String)> {
    helpers
        .iter()
        .filter(|(_, c)| c.contains("__worker"))
        .collect()
}

pub(crate) fn io_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".faultline-io-"))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) struct RunningAgent {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl RunningAgent {
    pub(crate) fn start(fault_file: &Path, state: &Path, config: &Path, duration: &str) -> Self {
        let mut child = Command::new(binary("faultline-agent"))
            .args(["run", "-f"])
            .arg(fault_file)
            .args(["--duration", duration, "--state-dir"])
            .arg(state)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn faultline-agent run");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        RunningAgent {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for `n` lines starting with `applied `; returns the fault ids.
    pub(crate) fn wait_applied(&mut self, n: usize, timeout: Duration) -> BTreeSet<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids: BTreeSet<String> = self
                .seen
                .iter()
                .filter_map(|l| l.strip_prefix("applied "))
                .filter_map(|rest| rest.split_whitespace().next())
                .map(str::to_string)
                .collect();
            if ids.len() >= n {
                return ids;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.seen.push(line),
                Err(_) if Instant::now() >= deadline => panic!(
                    "{n} faults not applied within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => {}
            }
        }
    }

    pub(crate) fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.sigkill();
    }
}

pub(crate) fn write_config(dir: &Path, io_dir: &Path) -> std::path::PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "[limits]\nmax_duration = \"10m\"\nio_paths = [\"{}\"]\n",
            io_dir.display()
        ),
    )
    .expect("config");
    p
}

/// What a recovery's output says it found of this test's faults: every line, unless it found
/// nothing, except the network drivers' sweep lines ([`network_sweep`]).
pub(crate) fn found_by_recovery(out: &str) -> Vec<&str> {
    if out.contains("recovery: nothing found") {
        return Vec::new();
    }
    out.lines()
        .filter(|l| !l.trim().is_empty() && !network_sweep(l))
        .collect()
}

/// A line of the network drivers' sweep: qdisc trees, IFB devices, steering filters and
/// named network namespaces, and eBPF programs. The tests here apply no network fault, so such
/// an artifact is never theirs. The sweep is host-wide, though, and on a shared host it meets
/// other tests' namespaces and programs. It acts on them too (see docs/benchmarks.md,
/// "The agent SIGKILLed anywhere").
pub(crate) fn network_sweep(line: &str) -> bool {
    const MARKS: [&str; 6] = [
        "eBPF program",
        "steering filter",
        "ingress device",
        "qdisc tree",
        "cannot enter netns",
        "cannot check the qdiscs",
    ];
    line.contains("sweep:") && MARKS.iter().any(|m| line.contains(m))
}

/// Runs `faultline-agent recover` on `state`; panics with its output, `context` and, when the
/// state dir was locked, every process that has its lock file open.
pub(crate) fn recover(state: &Path, config: &Path, context: &str) -> String {
    let (ok, out) = run(
        &binary("faultline-agent"),
        &[
            "recover",
            "--state-dir",
            &state.display().to_string(),
            "--config",
            &config.display().to_string(),
        ],
    );
    if !ok {
        let holders = lock_holders(&state.join("agent.lock"));
        panic!(
            "{context}: faultline-agent recover failed:\n{out}\nprocesses with {}/agent.lock open: {holders:#?}",
            state.display()
        );
    }
    out
}

/// Every process with `file` open: (pid, state, parent pid, command line).
pub(crate) fn lock_holders(file: &Path) -> Vec<(u32, char, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let open = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == file));
        if !open {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let mut rest = stat.rsplit_once(')').map_or("", |r| r.1).split_whitespace();
        let st = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().unwrap_or("?").to_string();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, st, ppid, cmd));
    }
    out
}
