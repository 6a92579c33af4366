//! Node telemetry from procfs: CPU busy ratio, memory, load, interface counters and PSI.
//!
//! Parsing lives in [`parse`] as pure functions; [`Sampler`] reads the files (under a procfs
//! root, `/proc` in production, a directory of sample files in tests) and keeps the previous CPU
//! sample so each report covers the time since the last one.

pub mod parse;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use faultline_proto::pb;

use parse::{CpuTimes, ParseError};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Reads telemetry samples from a procfs root.
#[derive(Debug)]
pub struct Sampler {
    root: PathBuf,
    prev_cpu: Option<CpuTimes>,
}

impl Sampler {
    /// A sampler over `/proc`. Takes a first CPU sample right away, so the first report covers
    /// the time since the sampler was created.
    pub fn new() -> Self {
        Self::with_root("/proc")
    }

    /// A sampler over another procfs root (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let mut s = Sampler {
            root: root.into(),
            prev_cpu: None,
        };
        s.prev_cpu = s.read_cpu().ok();
        s
    }

    fn read(&self, rel: &str) -> Result<String, TelemetryError> {
        let path = self.root.join(rel);
        std::fs::read_to_string(&path).map_err(|source| TelemetryError::Read { path, source })
    }

    fn read_cpu(&self) -> Result<CpuTimes, TelemetryError> {
        Ok(parse::parse_cpu_times(&self.read("stat")?)?)
    }

    /// One report. `active_faults` is what the fault manager holds right now.
    pub fn sample(&mut self, active_faults: u32) -> Result<pb::Telemetry, TelemetryError> {
        let cpu = self.read_cpu()?;
        let cpu_busy_ratio = match self.prev_cpu {
            Some(prev) => parse::busy_ratio(prev, cpu),
            None => 0.0,
        };
        self.prev_cpu = Some(cpu);
        let mem = parse::parse_meminfo(&self.read("meminfo")?)?;
        let [load1, load5, load15] = parse::parse_loadavg(&self.read("loadavg")?)?;
        let interfaces = parse::parse_net_dev(&self.read("net/dev")?)?;
        Ok(pb::Telemetry {
            timestamp_unix_ms: unix_ms(SystemTime::now()),
            cpu_busy_ratio,
            memory_total_bytes: mem.total,
            memory_available_bytes: mem.available,
            memory_used_bytes: mem.used,
            load1,
            load5,
            load15,
            interfaces,
            pressure: self.pressure()?,
            active_faults,
            // Numbered by the session as it goes out.
            sequence: 0,
        })
    }

    /// PSI, or `None` when the kernel has none (no `/proc/pressure`).
    fn pressure(&self) -> Result<Option<pb::Pressure>, TelemetryError> {
        let dir = self.root.join("pressure");
        if !dir.is_dir() {
            return Ok(None);
        }
        let read = |name: &'static str, file: &'static str| -> Result<_, TelemetryError> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Ok(parse::parse_pressure(file, &text)?),
                // PSI can be compiled in but disabled at boot (psi=0): the files refuse reads.
                Err(e) if is_unsupported(&e) => Ok(parse::PressureFile::default()),
                Err(source) => Err(TelemetryError::Read {
                    path: dir.join(name),
                    source,
                }),
            }
        };
        let cpu = read("cpu", "/proc/pressure/cpu")?;
        let memory = read("memory", "/proc/pressure/memory")?;
        let io = read("io", "/proc/pressure/io")?;
        if cpu.some.is_none() && memory.some.is_none() && io.some.is_none() {
            return Ok(None);
        }
        Ok(Some(pb::Pressure {
            cpu_some: cpu.some,
            memory_some: memory.some,
            memory_full: memory.full,
            io_some: io.some,
            io_full: io.full,
        }))
    }

    /// The procfs root this sampler reads.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::Unsupported
    ) || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Milliseconds since the Unix epoch (0 for clocks before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(stat: &str, with_pressure: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("stat", stat);
        w("meminfo", "MemTotal: 2000 kB\nMemAvailable: 500 kB\n");
        w("loadavg", "0.10 0.20 0.30 1/100 42\n");
        w(
            "net/dev",
            "h1\nh2\n  lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n",
        );
        if with_pressure {
            w(
                "pressure/cpu",
                "some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n",
            );
            w("pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n");
            w("pressure/io", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=9\n");
        }
        dir
    }

    #[test]
    fn sample_from_fake_procfs() {
        let dir = fake_proc("cpu 10 0 10 80 0 0 0 0\n", true);
        let mut s = Sampler::with_root(dir.path());
        std::fs::write(dir.path().join("stat"), "cpu 40 0 20 140 0 0 0 0\n").expect("write");
        let t = s.sample(3).expect("sample");
        assert_eq!(t.cpu_busy_ratio, 40.0 / 100.0);
        assert_eq!(t.memory_total_bytes, 2000 * 1024);
        assert_eq!(t.memory_available_bytes, 500 * 1024);
        assert_eq!(t.memory_used_bytes, 1500 * 1024);
        assert_eq!((t.load1, t.load5, t.load15), (0.1, 0.2, 0.3));
        assert_eq!(t.interfaces.len(), 1);
        assert_eq!(t.interfaces[0].name, "lo");
        assert_eq!(t.active_faults, 3);
        let p = t.pressure.expect("pressure present");
        assert_eq!(p.cpu_some.expect("cpu some").total_us, 5);
        assert_eq!(p.memory_full.expect("memory full").total_us, 7);
        assert_eq!(p.io_full.expect("io full").total_us, 9);
        assert!(t.timestamp_unix_ms > 1_600_000_000_000);
        // No CPU time passed since the last sample.
        assert_eq!(s.sample(0).expect("sample").cpu_busy_ratio, 0.0);
    }

    #[test]
    fn no_pressure_directory_means_no_pressure() {
        let dir = fake_proc("cpu 1 0 1 8\n", false);
        let t = Sampler::with_root(dir.path()).sample(0).expect("sample");
        assert_eq!(t.pressure, None);
    }

    #[test]
    fn missing_file_is_named() {
        let dir = fake_proc("cpu 1 0 1 8\n", false);
        std::fs::remove_file(dir.path().join("meminfo")).expect("rm");
        let e = Sampler::with_root(dir.path())
            .sample(0)
            .expect_err("no meminfo");
        assert!(e.to_string().contains("meminfo"), "{e}");
    }

    #[test]
    fn live_sample_of_this_machine() {
        assert!(
            Path::new("/proc/stat").exists(),
            "this test reads the live procfs: mount /proc (mount -t proc proc /proc)"
        );
        let mut s = Sampler::new();
        // Burn a little CPU so the ratio has something to measure.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let t = s.sample(0).expect("live sample");
        assert!(
            t.cpu_busy_ratio > 0.0 && t.cpu_busy_ratio <= 1.0,
            "{}",
            t.cpu_busy_ratio
        );
        assert!(t.memory_total_bytes > 64 << 20, "{t:?}");
        assert!(t.memory_available_bytes <= t.memory_total_bytes);
        assert_eq!(
            t.memory_used_bytes,
            t.memory_total_bytes - t.memory_available_bytes
        );
        assert!(t.load1 >= 0.0 && t.load15 >= 0.0);
        assert!(
            t.interfaces.iter().any(|i| i.name == "lo"),
            "loopback missing: {:?}",
            t.interfaces
        );
        if Path::new("/proc/pressure/cpu").exists() {
            let p = t.pressure.expect("this kernel has PSI");
            assert!(p.cpu_some.is_some(), "{p:?}");
        }
    }
}
