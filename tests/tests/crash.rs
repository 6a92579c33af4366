//! Crash safety of the agent's fault engine with the real binary (needs root: cgroups, signals
//! to other processes). SIGKILL the agent while cpu + memory + io + pause faults are active:
//! within 1 s no worker remains and the paused process runs again; the next start recovers the
//! journal and finds nothing left. Then SIGKILL at random points of apply and revert.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faultline_tests::procs::run;
use faultline_tests::*;

/// A `sleep` the test owns, killed by PID on drop.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn state(&self) -> char {
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

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Tests in this file run one at a time (they measure how fast helpers disappear).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Live helpers of one agent run: its stress workers (their command line carries
/// `--parent-pid <agent>`) and the guard holding `paused` (its `--pids` names `<pid>:<start>`).
/// Other agents on the machine (other tests, a real agent) are never counted.
fn helpers_of(agent_pid: u32, paused: u32) -> Vec<(u32, String)> {
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

fn workers(helpers: &[(u32, String)]) -> Vec<&(u32, String)> {
    helpers
        .iter()
        .filter(|(_, c)| c.contains("__worker"))
        .collect()
}

fn io_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".faultline-io-"))
                .collect()
        })
        .unwrap_or_default()
}

struct RunningAgent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl RunningAgent {
    fn start(fault_file: &Path, state: &Path, config: &Path, duration: &str) -> Self {
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
    fn wait_applied(&mut self, n: usize, timeout: Duration) -> BTreeSet<String> {
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

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn write_config(dir: &Path, io_dir: &Path) -> std::path::PathBuf {
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

fn recover(state: &Path, config: &Path) -> String {
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
    assert!(ok, "faultline-agent recover failed:\n{out}");
    out
}

fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "crash-safety tests need root (run make test as root)"
    );
}

#[test]
fn sigkill_with_cpu_memory_io_and_pause_active_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let state = dir.path().join("state");
    let config = write_config(dir.path(), &io_dir);
    let paused = Sleeper::spawn();
    let bystander = Sleeper::spawn();
    let faults = dir.path().join("faults.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: cpu\nload: 30\nworkers: 1\n---\nkind: memory\nsize: 64Mi\n---\nkind: io\npath: {}\nworkers: 1\nsize: 4Mi\nrate: 2Mi\n---\nkind: process\naction: pause\nselector: {{pid: {}}}\n",
            io_dir.display(),
            paused.pid()
        ),
    )
    .expect("faults");

    let mut agent = RunningAgent::start(&faults, &state, &config, "60s");
    agent.wait_applied(4, Duration::from_secs(20));
    let agent_pid = agent.pid();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(paused.state(), 'T', "the paused process is stopped");
    let during = helpers_of(agent_pid, paused.pid());
    assert_eq!(
        workers(&during).len(),
        3,
        "cpu, memory and io workers run while applied: {during:?}"
    );
    assert!(
        during.iter().any(|(_, c)| c.contains("__guard")),
        "a guard holds the pause: {during:?}"
    );
    assert!(
        !io_files(&io_dir).is_empty(),
        "io files exist while applied"
    );

    let killed_at = Instant::now();
    agent.sigkill();
    let mut last_worker_gone = None;
    let mut resumed = None;
    while killed_at.elapsed() < Duration::from_secs(3) {
        if last_worker_gone.is_none() && workers(&helpers_of(agent_pid, paused.pid())).is_empty() {
            last_worker_gone = Some(killed_at.elapsed());
        }
        if resumed.is_none() && paused.state() != 'T' {
            resumed = Some(killed_at.elapsed());
        }
        if last_worker_gone.is_some() && resumed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = last_worker_gone.unwrap_or_else(|| {
        panic!(
            "workers still running 3 s after SIGKILL: {:?}",
            helpers_of(agent_pid, paused.pid())
        )
    });
    let resumed = resumed.expect("paused process resumed after the agent died");
    eprintln!(
        "after SIGKILL of the agent: last worker gone in {} ms, paused process resumed in {} ms",
        gone.as_millis(),
        resumed.as_millis()
    );
    assert!(
        gone <= Duration::from_secs(1),
        "last worker gone after {gone:?}"
    );
    assert!(
        resumed <= Duration::from_secs(1),
        "resumed after {resumed:?}"
    );
    assert_ne!(bystander.state(), 'T', "an unrelated process is untouched");

    // The next start recovers the journal; a second recovery finds nothing at all.
    let first = recover(&state, &config);
    eprintln!("first recovery:\n{first}");
    assert!(
        io_files(&io_dir).is_empty(),
        "io files removed by recovery: {:?}",
        io_files(&io_dir)
    );
    let left = helpers_of(agent_pid, paused.pid());
    assert!(left.is_empty(), "no guard or worker left: {left:?}");
    let second = recover(&state, &config);
    assert!(
        second.to_lowercase().contains("nothing"),
        "second recovery must find nothing:\n{second}"
    );
}

#[test]
fn sigkill_at_random_points_of_apply_and_revert() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root();
    let iterations: u64 = std::env::var("FAULTLINE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tmp");
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let state = dir.path().join("state");
    let config = write_config(dir.path(), &io_dir);
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for i in 0..iterations {
        let paused = Sleeper::spawn();
        let faults = dir.path().join(format!("faults-{i}.yaml"));
        std::fs::write(
            &faults,
            format!(
                "kind: cpu\nload: 20\nworkers: 1\n---\nkind: memory\nsize: 16Mi\n---\nkind: io\npath: {}\nworkers: 1\nsize: 2Mi\n---\nkind: process\naction: pause\nselector: {{pid: {}}}\n",
                io_dir.display(),
                paused.pid()
            ),
        )
        .expect("faults");
        // A 1 s run: kill points spread over start-up, apply, the run, and the final revert.
        let delay = Duration::from_millis(next() % 1600);
        let mut agent = RunningAgent::start(&faults, &state, &config, "1s");
        let agent_pid = agent.pid();
        std::thread::sleep(delay);
        agent.sigkill();
        agent.drain();
        // Workers die with the agent; the guard resumes the paused process.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let helpers = helpers_of(agent_pid, paused.pid());
            let workers = workers(&helpers);
            let stopped = paused.state() == 'T';
            if workers.is_empty() && !stopped {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "iteration {i} (SIGKILL after {delay:?}): workers {workers:?}, paused process stopped: {stopped}; output:\n{}",
                agent.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        recover(&state, &config);
        assert!(
            io_files(&io_dir).is_empty(),
            "iteration {i}: io files left: {:?}",
            io_files(&io_dir)
        );
        let out = recover(&state, &config);
        assert!(
            out.to_lowercase().contains("nothing"),
            "iteration {i}: second recovery found something:\n{out}"
        );
        assert_ne!(paused.state(), 'T', "iteration {i}: process left paused");
    }
}

#[test]
fn recovery_of_one_agent_leaves_another_live_agents_helpers_alone() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let config = write_config(dir.path(), &io_dir);
    let paused = Sleeper::spawn();
    let faults = dir.path().join("faults.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: cpu\nload: 10\nworkers: 1\n---\nkind: io\npath: {}\nworkers: 1\nsize: 2Mi\nrate: 1Mi\n---\nkind: process\naction: pause\nselector: {{pid: {}}}\n",
            io_dir.display(),
            paused.pid()
        ),
    )
    .expect("faults");
    let mut agent = RunningAgent::start(&faults, &dir.path().join("state-a"), &config, "60s");
    agent.wait_applied(3, Duration::from_secs(20));
    let before = helpers_of(agent.pid(), paused.pid());
    assert_eq!(
        before.len(),
        3,
        "cpu and io workers and a guard: {before:?}"
    );

    // A second agent (another state dir, e.g. the daemon beside a standalone run) starts up and
    // sweeps: what the first agent holds is not an orphan.
    let out = recover(&dir.path().join("state-b"), &config);
    assert!(
        out.to_lowercase().contains("nothing"),
        "the sweep touched a live agent's helpers:\n{out}"
    );
    let after = helpers_of(agent.pid(), paused.pid());
    assert_eq!(
        after.iter().map(|h| h.0).collect::<Vec<_>>(),
        before.iter().map(|h| h.0).collect::<Vec<_>>()
    );
    assert_eq!(paused.state(), 'T', "still paused by the first agent");
    assert!(
        !io_files(&io_dir).is_empty(),
        "the first agent's io file is kept"
    );
    agent.sigkill();
}
