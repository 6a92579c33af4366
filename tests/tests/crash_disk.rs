//! Crash safety of the disk faults with the real binary (needs root, util-linux, a loop
//! device and the v1 blkio controller): the agent runs a disk-fill (a 64 MiB tmpfs in a mount
//! namespace of its own, filled to 50%) and an io-limit (1 MiB/s writes on a loop device for a
//! cgroup that already had limits of its own) for 1 s and is SIGKILLed at a random point of
//! start-up, apply, the run or the final revert: `FAULTLINE_CRASH_DISK_ITERATIONS` trials
//! (default 10) from `FAULTLINE_CRASH_DISK_SEED` (default a fixed seed). After each kill,
//! within 2 s, no fill worker holds space, the tmpfs is as empty as before and the cgroup's
//! limits are exactly the old ones (the io-limit guard restores them without the agent); a
//! recovery then finds nothing more to do, and a second one nothing at all.

#[allow(dead_code)]
#[path = "crash/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_tests::procs::require_root;
use faultline_tests::trials::TrialPlan;
use support::*;

/// A tmpfs of 64 MiB over `dir` in a mount namespace of its own, held by a `sleep`; killing
/// it (on drop) ends the namespace and its tmpfs.
struct PrivateTmpfs(Child);

impl PrivateTmpfs {
    fn over(dir: &Path) -> PrivateTmpfs {
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=64m faultline-crash "$0" && echo ready && exec sleep 600"#)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let out = child.stdout.take().expect("stdout");
        let ready = BufReader::new(out).lines().next().and_then(Result::ok);
        let t = PrivateTmpfs(child);
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "unshare -m + mount tmpfs failed (needs root and util-linux)"
        );
        t
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Bytes in use on the tmpfs, as the host reaches it.
    fn used(&self, dir: &Path) -> u64 {
        let mut p = PathBuf::from(format!("/proc/{}/root", self.pid()));
        p.extend(dir.components().skip(1));
        // stat -f: total blocks, free blocks, fundamental block size.
        let out = Command::new("stat")
            .args(["-f", "-c", "%b %f %S"])
            .arg(&p)
            .output()
            .expect("run stat (coreutils)");
        let v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(v.len(), 3, "stat -f {}: {out:?}", p.display());
        (v[0] - v[1]) * v[2]
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loop device over a file (kept until then), detached on drop.
struct Loop(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Loop {
    fn new() -> Loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("backing file");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .expect("run losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup failed (needs root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            dir,
        )
    }

    /// `MAJ:MIN`, from sysfs.
    fn num(&self) -> String {
        let name = self
            .0
            .file_name()
            .expect("loopN")
            .to_string_lossy()
            .into_owned();
        std::fs::read_to_string(format!("/sys/block/{name}/dev"))
            .expect("/sys/block/loopN/dev")
            .trim()
            .to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A v1 blkio cgroup of the test's own, removed on drop.
struct Blkio(PathBuf);

impl Blkio {
    fn new() -> Blkio {
        let top = Path::new("/sys/fs/cgroup/blkio");
        assert!(
            top.join("blkio.throttle.write_bps_device").exists(),
            "this test needs the cgroup v1 blkio controller at {}",
            top.display()
        );
        let dir = top.join(format!("faultline-crash-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir blkio cgroup");
        Blkio(dir)
    }

    fn limits(&self) -> (String, String) {
        let r = |f: &str| std::fs::read_to_string(self.0.join(f)).expect("read throttle file");
        (
            r("blkio.throttle.write_bps_device"),
            r("blkio.throttle.read_iops_device"),
        )
    }
}

impl Drop for Blkio {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Live io-limit guards of this test (their settings name its cgroup).
fn io_guards(cg: &Blkio) -> Vec<u32> {
    let mark = cg.0.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw);
        if cmd.contains("__io-guard") && cmd.contains(&mark) && proc_state(pid) != Some('Z') {
            out.push(pid);
        }
    }
    out
}

#[test]
fn sigkill_at_random_points_of_disk_fill_and_io_limit_leaves_nothing() {
    require_root("crash-safety tests");
    let plan = TrialPlan::from_env(
        "FAULTLINE_CRASH_DISK_ITERATIONS",
        "FAULTLINE_CRASH_DISK_SEED",
        10,
        Some(0x5eed_d15c),
    );
    let mut rng = plan.rng();
    let dir = tempfile::tempdir().expect("tmp");
    let fill_dir = dir.path().join("fill");
    std::fs::create_dir(&fill_dir).expect("fill dir");
    let tmpfs = PrivateTmpfs::over(&fill_dir);
    let disk = Loop::new();
    let cg = Blkio::new();
    std::fs::write(
        cg.0.join("blkio.throttle.write_bps_device"),
        format!("{} 52428800", disk.num()),
    )
    .expect("old write limit");
    std::fs::write(
        cg.0.join("blkio.throttle.read_iops_device"),
        format!("{} 1000", disk.num()),
    )
    .expect("old read limit");
    let before = cg.limits();
    let used0 = tmpfs.used(&fill_dir);
    let state = dir.path().join("state");
    let config = write_config(dir.path(), &fill_dir);
    let faults = dir.path().join("faults.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: disk-fill\npath: {}\npercent: 50\nkeepFree: 1Mi\ntarget: {{pid: {}}}\n---\nkind: io-limit\ndevice: {}\nwriteBytesPerSecond: 1Mi\nreadIops: 10\ntarget: {{cgroup: /{}}}\n",
            fill_dir.display(),
            tmpfs.pid(),
            disk.0.display(),
            cg.0.file_name().expect("name").to_string_lossy()
        ),
    )
    .expect("faults");

    // One run to the end first: both faults really apply.
    let mut agent = RunningAgent::start(&faults, &state, &config, "2s");
    agent.wait_applied(2, Duration::from_secs(20));
    assert!(tmpfs.used(&fill_dir) >= 31 << 20, "the tmpfs is half full");
    assert_ne!(cg.limits(), before, "the io limit is in effect");
    drop(agent);
    recover(&state, &config, "after the first run");

    let mut slowest = Duration::ZERO;
    for i in 0..plan.trials {
        let delay = rng.between(Duration::ZERO, Duration::from_millis(1599));
        let context = format!(
            "iteration {i} of seed {:#x} (SIGKILL after {delay:?})",
            plan.seed
        );
        let mut agent = RunningAgent::start(&faults, &state, &config, "1s");
        let agent_pid = agent.pid();
        std::thread::sleep(delay);
        agent.sigkill();
        agent.drain();
        let killed = Instant::now();
        let end = killed + Duration::from_secs(2);
        loop {
            let workers = workers(&helpers_of(agent_pid, 0)).len();
            let used = tmpfs.used(&fill_dir);
            let limits = cg.limits();
            if workers == 0 && used <= used0 && limits == before {
                break;
            }
            assert!(
                Instant::now() < end,
                "{context}: 2 s after the SIGKILL: {workers} worker(s), {used} bytes used on the \
                 tmpfs (before: {used0}), limits {limits:?} (before: {before:?}); output:\n{}",
                agent.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        slowest = slowest.max(killed.elapsed());
        recover(&state, &config, &context);
        let out = recover(&state, &config, &context);
        assert!(
            found_by_recovery(&out).is_empty(),
            "{context}: second recovery found something:\n{out}"
        );
        assert_eq!(cg.limits(), before, "{context}: old limits exactly");
        assert!(
            io_guards(&cg).is_empty(),
            "{context}: an io-limit guard is left"
        );
    }
    eprintln!(
        "{} random SIGKILLs of disk-fill + io-limit (seed {:#x}): 0 leftovers; space and old \
         limits back within {} ms at the slowest",
        plan.trials,
        plan.seed,
        slowest.as_millis()
    );
}
