//! The coordinator under measurement: a `faultline-coordinator` child process on loopback with
//! its own certificates, data dir and policy, stopped by PID; and its footprint from /proc.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_identity::tls::CoordinatorUrl;

use crate::SimError;

/// The policy the benchmark runs under: every agent may be a target at once.
const POLICY: &str = "[policy]\n\
max_fleet_percent_under_fault = 100\n\
max_concurrent_experiments = 5\n\
max_duration = \"1h\"\n";

pub struct CoordinatorProc {
    child: Option<Child>,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

fn free_port() -> Result<u16, SimError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl CoordinatorProc {
    /// Starts `bin` with its data, config and log under `dir` and the certificates in `certs`.
    pub fn start(bin: &Path, dir: &Path, certs: &Path) -> Result<Self, SimError> {
        if !bin.is_file() {
            return Err(SimError(format!(
                "{} is missing: build it with `cargo build --release --bins` (make bench does), \
                 or pass --coordinator-bin",
                bin.display()
            )));
        }
        std::fs::create_dir_all(dir)?;
        let config = dir.join("coordinator.toml");
        std::fs::write(&config, POLICY)?;
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.join("coordinator.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("--listen")
            .arg(grpc.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--certs-dir")
            .arg(certs)
            .arg("--config")
            .arg(&config)
            .arg("--lease")
            .arg("5s")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| SimError(format!("starting {}: {e}", bin.display())))?;
        Ok(CoordinatorProc {
            pid: child.id(),
            child: Some(child),
            grpc,
            metrics,
            log,
        })
    }

    pub fn url(&self) -> Result<CoordinatorUrl, SimError> {
        Ok(CoordinatorUrl::parse(&format!("https://{}", self.grpc))?)
    }

    /// Waits for GET /readyz = 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, SimError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(SimError(format!(
                        "the coordinator exited ({status}); its log:\n{}",
                        self.log_tail(30)
                    )));
                }
            }
            let addr = self.metrics;
            let ready = tokio::task::spawn_blocking(move || {
                faultline_tests::procs::http_get(addr, "/readyz")
                    .is_some_and(|(code, _)| code == 200)
            })
            .await
            .unwrap_or(false);
            if ready {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SimError(format!(
            "the coordinator was not ready within {timeout:?}; its log:\n{}",
            self.log_tail(30)
        )))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM by PID, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for CoordinatorProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU time and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    /// Bytes the process has sent to storage (`write_bytes` of /proc/<pid>/io; 0 when
    /// unreadable): its store's writes.
    pub written_bytes: u64,
}

/// Reads /proc/<pid>/stat (fields 14, 15) and /proc/<pid>/status (VmRSS).
pub fn sample(pid: u32) -> Result<ProcSample, SimError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| SimError(format!("/proc/{pid}/stat has no ')'")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime 15 -> index 12.
    let num = |i: usize| -> Result<u64, SimError> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| SimError(format!("/proc/{pid}/stat: field {} unreadable", i + 3)))
    };
    let cpu_ticks = num(11)? + num(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SimError(format!("/proc/{pid}/status has no VmRSS")))?;
    let written_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Ok(ProcSample {
        at: Instant::now(),
        cpu_ticks,
        rss_bytes: rss_kib * 1024,
        written_bytes,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when getconf is absent).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Cores used between two samples.
pub fn cores(a: &ProcSample, b: &ProcSample, ticks_per_s: f64) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_s / secs
}
