//! The worker side of stress faults: `faultline-agent __worker <cpu|memory|io> --fault-id ID
//! --deadline-unix-ms N --parent-pid P ...`. A worker dies with the agent (PR_SET_PDEATHSIG,
//! EOF on stdin), moves itself into the target's v1 cgroups when told (`join [...]`, answered
//! `joined`), waits for "go" (sent once it is in all of them), works until its own
//! deadline, and reports counters as JSON lines on stdout.
//!
//! An io worker opens nothing by path: the agent creates its file in the target's filesystem
//! (see [`rootfs`](super::rootfs)) and hands it over as descriptor 3, with the directory as
//! descriptor 4 so that the worker can remove the file (by name, never following a link) when
//! it ends.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use super::os;
use super::rootfs::Dir;

pub const WORKER_ARG: &str = "__worker";
/// The worker kind of `disk-fill` (see [`fill`](super::fill)).
pub const DISK_FILL: &str = "disk-fill";
pub const GUARD_ARG: &str = "__guard";
/// The line that asks a new worker to join cgroups itself, and its answer.
pub const JOIN: &str = "join";
pub const JOINED: &str = "joined";
/// The io-limit guard (see [`iolimit::guard`](super::iolimit::guard)).
pub const IO_GUARD_ARG: &str = "__io-guard";

/// The descriptors an io worker gets: its file, and the directory the file is in.
pub const IO_FILE_FD: RawFd = os::FIRST_PASSED_FD;
pub const IO_DIR_FD: RawFd = os::FIRST_PASSED_FD + 1;

/// The highest descriptor a child started with `args` was handed (2 = none beyond stdio).
pub fn passed_fds_through(args: &[String]) -> RawFd {
    match (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    ) {
        (Some(WORKER_ARG), Some("io")) => IO_DIR_FD,
        (Some(WORKER_ARG), Some(DISK_FILL)) => super::fill::FILL_DIR_FD,
        _ => 2,
    }
}

/// Exit codes of a worker that did not run.
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_ORPHAN: i32 = 3;
pub const EXIT_FAILED: i32 = 4;

const SLICE: Duration = Duration::from_millis(10);
/// Most CPU time a cpu worker catches up on after being starved.
const MAX_DEFICIT: f64 = 0.1;
const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

/// `--key value` pairs after the role (and kind).
pub fn parse_opts(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {k:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        out.insert(key.to_string(), v.clone());
    }
    Ok(out)
}

pub fn opt<T: std::str::FromStr>(o: &BTreeMap<String, String>, key: &str) -> Result<T, String> {
    let v = o.get(key).ok_or_else(|| format!("--{key} is missing"))?;
    v.parse()
        .map_err(|_| format!("--{key} {v:?} is not a valid value"))
}

/// A unix-ms deadline as an `Instant` (now when it has passed).
pub fn deadline_instant(unix_ms: u64) -> Instant {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// Writes one JSON line to stdout; the agent keeps the latest of each counter.
fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the agent is gone; stdin EOF ends us right after.
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

/// Writes one plain text line (an answer such as [`JOINED`]) to stdout.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// `join ["/sys/fs/cgroup/cpu/...", ...]`: this worker moves itself into those v1 cgroups by
/// writing `0` to each `tasks` file. It is single-threaded until "go" (the stdin watcher starts
/// after), so moving its one thread moves the process. The list may be empty: the answer also
/// tells the agent that the death signal is armed.
fn join_self(list: &str) -> Result<(), String> {
    let files: Vec<PathBuf> =
        serde_json::from_str(list).map_err(|e| format!("unreadable join list {list:?}: {e}"))?;
    // Writing 0 moves only the calling thread: with another thread alive, the process would
    // be split across cgroups.
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if !files.is_empty() && threads != 1 {
        return Err(format!(
            "cannot join cgroups by thread: this worker has {threads} threads (expected 1)"
        ));
    }
    for f in &files {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .and_then(|mut t| t.write_all(b"0"))
            .map_err(|e| format!("cannot join {}: {e}", f.display()))?;
    }
    Ok(())
}

/// Entry point for `__worker ...` and `__guard ...` (`args[0]` is the role).
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some(WORKER_ARG) => worker(&args[1..]),
        Some(GUARD_ARG) => super::guard::main(&args[1..]),
        Some(IO_GUARD_ARG) => super::iolimit::guard::main(&args[1..]),
        other => {
            eprintln!("faultline worker: unknown role {other:?}; use __worker or __guard");
            EXIT_USAGE
        }
    }
}

fn worker(args: &[String]) -> i32 {
    let Some((kind, rest)) = args.split_first() else {
        eprintln!("faultline worker: missing kind (cpu, memory or io)");
        return EXIT_USAGE;
    };
    let o = match parse_opts(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("faultline worker: {e}");
            return EXIT_USAGE;
        }
    };
    match run(kind, &o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultline worker {kind}: {e}");
            emit(serde_json::json!({ "error": e }));
            EXIT_FAILED
        }
    }
}

fn run(kind: &str, o: &BTreeMap<String, String>) -> Result<i32, String> {
    let parent: u32 = opt(o, "parent-pid")?;
    let end = deadline_instant(opt(o, "deadline-unix-ms")?);
    // Die with the spawner thread, then make sure it had not already gone before this point.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
        return Ok(EXIT_ORPHAN);
    }
    let io_file = if kind == "io" {
        Some(IoFile::take(o)?)
    } else {
        None
    };
    let fill_dir = if kind == DISK_FILL {
        let shown = PathBuf::from(o.get("dir").map_or("the fill directory", String::as_str));
        let fd = os::take_passed_fd(super::fill::FILL_DIR_FD)
            .map_err(|e| format!("{}: {e}", shown.display()))?;
        Some(Dir::from_fd(fd, shown).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let stdin = std::io::stdin();
    let go = loop {
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        let Some(files) = line.trim().strip_prefix(JOIN).map(str::trim_start) else {
            break line.trim() == "go";
        };
        if let Err(e) = join_self(files) {
            if let Some(f) = &io_file {
                f.remove();
            }
            return Err(e);
        }
        say(JOINED);
    };
    if !go {
        if let Some(f) = &io_file {
            f.remove();
        }
        return Ok(0);
    }
    let cleanup = io_file.as_ref().map(IoFile::remover);
    // Any more input is ignored; EOF means the agent is gone.
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    if let Some((dir, name)) = &cleanup {
                        let _ = dir.remove(name);
                    }
                    std::process::exit(0);
                }
                Ok(_) => {}
            }
        }
    });
    match kind {
        "cpu" => cpu(opt(o, "load")?, end),
        "memory" => memory(opt(o, "bytes")?, end)?,
        "io" => {
            let mut f = io_file.ok_or("no io file")?;
            let r = io(&mut f, opt(o, "size")?, opt(o, "rate")?, end);
            f.remove();
            r?;
        }
        DISK_FILL => super::fill::run(o, fill_dir.as_ref().ok_or("no fill directory")?, end)?,
        other => {
            return Err(format!(
                "unknown kind {other:?}; use cpu, memory, io or {DISK_FILL}"
            ))
        }
    }
    Ok(0)
}

/// The file an io worker writes, handed over by the agent, and where it is.
struct IoFile {
    file: File,
    dir: Arc<Dir>,
    name: String,
    /// `/proc/<pid>/root/tmp/.faultline-io-...`, for messages.
    shown: PathBuf,
}

impl IoFile {
    fn take(o: &BTreeMap<String, String>) -> Result<IoFile, String> {
        let name: String = opt(o, "file")?;
        let dir_shown = PathBuf::from(o.get("dir").map_or("the io directory", String::as_str));
        let shown = dir_shown.join(&name);
        let file =
            os::take_passed_fd(IO_FILE_FD).map_err(|e| format!("{}: {e}", shown.display()))?;
        let dir = os::take_passed_fd(IO_DIR_FD)
            .map_err(|e| format!("{}: {e}", dir_shown.display()))
            .and_then(|fd| Dir::from_fd(fd, dir_shown).map_err(|e| e.to_string()))?;
        let file = File::from(file);
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", shown.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", shown.display()));
        }
        Ok(IoFile {
            file,
            dir: Arc::new(dir),
            name,
            shown,
        })
    }

    fn remover(&self) -> (Arc<Dir>, String) {
        (self.dir.clone(), self.name.clone())
    }

    fn remove(&self) {
        let _ = self.dir.remove(&self.name);
    }
}

/// Busy for `load`% of every 10 ms slice, measured on this thread's CPU clock so time lost to
/// other processes is made up (up to 100 ms of it).
fn cpu(load: u32, end: Instant) {
    let share = f64::from(load.clamp(1, 100)) / 100.0;
    let start = Instant::now();
    let cpu0 = os::thread_cpu_time();
    let mut forgiven = 0.0f64;
    let mut slice_start = start;
    let mut last_report = start;
    while Instant::now() < end {
        let slice_end = (slice_start + SLICE).min(end);
        let used = (os::thread_cpu_time() - cpu0).as_secs_f64();
        let mut target = (slice_end - start).as_secs_f64() * share - forgiven;
        if target - used > MAX_DEFICIT {
            forgiven += target - used - MAX_DEFICIT;
            target = used + MAX_DEFICIT;
        }
        while Instant::now() < slice_end && (os::thread_cpu_time() - cpu0).as_secs_f64() < target {
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now < slice_end {
            std::thread::sleep(slice_end - now);
        }
        slice_start = slice_end;
        if Instant::now() > slice_start + SLICE {
            slice_start = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let ms = (os::thread_cpu_time() - cpu0).as_millis() as u64;
            emit(serde_json::json!({ "cpu_ms": ms }));
        }
    }
}

fn own_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * procfs::page_size())
}

/// Allocates `bytes`, writes one byte per 4 KiB page as fast as it can, and holds the memory
/// until the deadline.
fn memory(bytes: u64, end: Instant) -> Result<(), String> {
    let n = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit in memory"))?;
    let mut block: Vec<u8> = Vec::new();
    block
        .try_reserve_exact(n)
        .map_err(|e| format!("cannot reserve {bytes} bytes: {e}"))?;
    let pages = block.spare_capacity_mut();
    let step = 64 << 20;
    let mut i = 0;
    while i < n {
        let upto = (i + step).min(n);
        os::populate(&mut pages[i..upto]);
        for page in (i..upto).step_by(PAGE) {
            std::hint::black_box(pages[page].write(1));
        }
        i = upto;
        emit(serde_json::json!({ "rss_bytes": own_rss(), "touched_bytes": i }));
    }
    while Instant::now() < end {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(500)));
        emit(serde_json::json!({ "rss_bytes": own_rss(), "touched_bytes": n }));
    }
    std::hint::black_box(&block);
    Ok(())
}

/// Writes `size` bytes into the file in 1 MiB chunks (smaller under a low rate), fsync after
/// each chunk, starting over when full, at most `rate` bytes/s (0 = as fast as it can).
fn io(io: &mut IoFile, size: u64, rate: u64, end: Instant) -> Result<(), String> {
    let file = io.shown.clone();
    let f = &mut io.file;
    let chunk = if rate > 0 && rate < 4 * CHUNK as u64 {
        ((rate / 4) as usize / PAGE * PAGE).clamp(PAGE, CHUNK)
    } else {
        CHUNK
    };
    let buf: Vec<u8> = (0..chunk)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let start = Instant::now();
    let (mut written, mut fsyncs, mut pos) = (0u64, 0u64, 0u64);
    let mut last_report = start;
    while Instant::now() < end {
        let n = (chunk as u64).min(size - pos) as usize;
        f.write_all(&buf[..n])
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        written += n as u64;
        fsyncs += 1;
        pos += n as u64;
        if pos >= size {
            pos = 0;
            f.seek(SeekFrom::Start(0))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        if last_report.elapsed() >= Duration::from_millis(200) {
            last_report = Instant::now();
            emit(serde_json::json!({ "bytes_written": written, "fsyncs": fsyncs }));
        }
        if rate > 0 {
            let due = start + Duration::from_secs_f64(written as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(end.saturating_duration_since(now)));
            }
        }
    }
    emit(serde_json::json!({ "bytes_written": written, "fsyncs": fsyncs }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_name_what_is_wrong() {
        let o = parse_opts(&strings(&["--fault-id", "f1", "--load", "50"])).expect("parse");
        assert_eq!(opt::<u32>(&o, "load"), Ok(50));
        assert_eq!(opt::<String>(&o, "fault-id").as_deref(), Ok("f1"));
        assert_eq!(
            opt::<u32>(&o, "workers"),
            Err("--workers is missing".to_string())
        );
        assert!(parse_opts(&strings(&["--load"]))
            .expect_err("no value")
            .contains("--load needs a value"));
        assert!(parse_opts(&strings(&["load"]))
            .expect_err("bare")
            .contains("unexpected argument"));
    }

    #[test]
    fn unknown_roles_are_usage_errors() {
        assert_eq!(main(&strings(&["__nope"])), EXIT_USAGE);
        assert_eq!(main(&strings(&["__worker"])), EXIT_USAGE);
        assert_eq!(main(&strings(&["__worker", "cpu", "--load"])), EXIT_USAGE);
    }

    #[test]
    fn a_past_deadline_is_now() {
        let d = deadline_instant(0);
        assert!(d <= Instant::now());
    }
}
