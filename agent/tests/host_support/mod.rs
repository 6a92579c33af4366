//! Helpers for the host adapter tests on the real kernel: drivers pointed at the built agent
//! binary, specs, and Drop guards that remove every process, cgroup and fault a test made even
//! when it fails.
#![allow(dead_code)]

pub mod standalone;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe};
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::{self, HostConfig, Protected};
use faultline_core::fault::{
    CpuFault, Fault, FaultSpec, IoFault, MemoryAmount, MemoryFault, ProcessAction, ProcessFault,
    ProcessSelector, Target,
};

pub const EXE: &str = env!("CARGO_BIN_EXE_faultline-agent");
pub const MIB: u64 = 1 << 20;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "host adapter tests need root (cgroups, signals to other processes): run them as root"
    );
}

pub fn config(io_paths: &[&Path], protected: Protected) -> HostConfig {
    HostConfig {
        protected,
        io_paths: io_paths.iter().map(|p| p.to_path_buf()).collect(),
        agent_exe: Some(PathBuf::from(EXE)),
        ..HostConfig::default()
    }
}

/// (stress driver, process driver).
pub fn drivers(cfg: &HostConfig) -> (Arc<dyn Driver>, Arc<dyn Driver>) {
    let mut d = host::drivers(cfg);
    assert_eq!(d.len(), 2, "host::drivers gives stress and process");
    let process = d.pop().expect("process driver");
    let stress = d.pop().expect("stress driver");
    (stress, process)
}

pub fn ctx(id: &str, secs: u64) -> FaultCtx {
    FaultCtx {
        fault_id: id.to_string(),
        deadline: SystemTime::now() + Duration::from_secs(secs),
    }
}

/// A fault id no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", rand::random::<u32>())
}

pub fn cpu(target: Target, load: u32, workers: u32) -> FaultSpec {
    FaultSpec {
        target,
        fault: Fault::Cpu(CpuFault {
            load_percent: load,
            workers,
        }),
    }
}

pub fn memory(target: Target, amount: MemoryAmount) -> FaultSpec {
    FaultSpec {
        target,
        fault: Fault::Memory(MemoryFault { amount }),
    }
}

pub fn io(path: &Path, workers: u32, size: u64, rate: u64) -> FaultSpec {
    FaultSpec {
        target: Target::Host,
        fault: Fault::Io(IoFault {
            path: path.display().to_string(),
            workers,
            size_bytes: size,
            rate_bytes_per_second: rate,
        }),
    }
}

pub fn process_fault(action: ProcessAction, selector: ProcessSelector, count: u32) -> FaultSpec {
    FaultSpec {
        target: Target::Host,
        fault: Fault::Process(ProcessFault {
            action,
            selector,
            count,
        }),
    }
}

pub fn refusal(r: Result<Recipe, DriverError>) -> String {
    match r {
        Err(DriverError::Refused(m)) => m,
        Err(other) => panic!("expected Refused, got error {other}"),
        Ok(rec) => panic!("expected Refused, got a recipe {rec:?}"),
    }
}

pub fn counter(h: &Health, name: &str) -> Option<u64> {
    let c = match h {
        Health::Ok(c) => c,
        Health::Failed { counters, .. } => counters,
    };
    c.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// PIDs recorded in a recipe (`pids`: [{pid, start}]).
pub fn recipe_pids(r: &Recipe) -> Vec<u32> {
    r.data["pids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["pid"].as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// An applied fault, reverted when dropped (so a failing test leaves nothing behind).
pub struct Applied {
    pub driver: Arc<dyn Driver>,
    pub recipe: Recipe,
    reverted: bool,
}

impl Applied {
    pub fn new(driver: &Arc<dyn Driver>, ctx: &FaultCtx, spec: &FaultSpec) -> Applied {
        let planned = driver.plan(ctx, spec).expect("plan");
        let recipe = match driver.apply(ctx, spec, &planned) {
            Ok(r) => r,
            Err(e) => {
                let _ = driver.revert(&planned);
                panic!("apply failed: {e}");
            }
        };
        Applied {
            driver: driver.clone(),
            recipe,
            reverted: false,
        }
    }

    pub fn health(&self) -> Health {
        self.driver.health(&self.recipe)
    }

    pub fn revert(&mut self) -> faultline_agent::engine::driver::RevertOutcome {
        self.reverted = true;
        self.driver.revert(&self.recipe).expect("revert")
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if !self.reverted {
            let _ = self.driver.revert(&self.recipe);
        }
    }
}

/// A `sleep` child, continued and killed when dropped.
pub struct Sleeper {
    pub child: Child,
}

impl Sleeper {
    pub fn new(arg: &str) -> Sleeper {
        let child = Command::new("sleep")
            .arg(arg)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep (coreutils)");
        let s = Sleeper { child };
        // Wait until it runs `sleep` (not still the forked test binary).
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if ProcTable::new("/proc")
                .stat(s.pid())
                .is_ok_and(|st| st.comm == "sleep")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn state(&self) -> char {
        state(self.pid())
    }

    /// How it ended (signal number), waiting up to 5 s.
    pub fn ended_by_signal(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.signal();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The state letter of a process (`?` when it is gone).
pub fn state(pid: u32) -> char {
    ProcTable::new("/proc").stat(pid).map_or('?', |s| s.state)
}

/// A cgroup made by the test in one v1 controller hierarchy; removed (after killing whatever
/// is left in it) when dropped.
pub struct TestCgroup {
    pub name: String,
    pub dir: PathBuf,
}

impl TestCgroup {
    pub fn new(controller: &str) -> TestCgroup {
        Self::named(
            controller,
            &format!("faultline-test-{}", rand::random::<u32>()),
        )
    }

    /// A cgroup with a given name, so that one path can exist in several hierarchies.
    pub fn named(controller: &str, name: &str) -> TestCgroup {
        let top = Path::new("/sys/fs/cgroup").join(controller);
        assert!(
            top.join("cgroup.procs").exists(),
            "this test needs the cgroup v1 {controller} controller mounted at {}",
            top.display()
        );
        let dir = top.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup {
            name: name.to_string(),
            dir,
        }
    }

    /// The path as a fault target (`/faultline-test-N`).
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn set(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("write {value} to {file}: {e}"));
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
    }
}

impl TestCgroup {
    /// Makes a child cgroup (removed with this one).
    pub fn child(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }
}

/// Kills what is in a cgroup and removes it, children first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in faultline_agent::host::cgroup::procs(dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::fs::remove_dir(dir).is_ok() || Instant::now() > end {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process started by the test whose stdin it holds; killed when dropped.
pub struct Held {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
}

impl Held {
    pub fn spawn(args: &[String]) -> Held {
        let mut child = Command::new(EXE)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the agent binary");
        let stdin = child.stdin.take();
        Held { child, stdin }
    }

    pub fn say(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{line}").expect("write");
        s.flush().expect("flush");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Busy and total clock ticks of all CPUs from /proc/stat.
pub fn host_busy_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let f: Vec<u64> = text
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().expect("number"))
        .collect();
    let total: u64 = f.iter().sum();
    (total - f[3] - f[4], total)
}

/// Polls `f` every 10 ms until it gives `Some`, up to `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
