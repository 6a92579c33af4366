//! io-limit on the real kernel (as root), on a loop device and a cgroup of the test's own (v1
//! blkio here; v2 io.max where the node has it): a process in the target cgroup writes 6 MiB
//! with `dd oflag=direct` in about 6 s under `writeBytesPerSecond: 1Mi` and at full speed
//! after revert; the limit that was there before comes back EXACTLY after revert, after an
//! agent SIGKILL (the guard restores it), after an agent SIGKILL with its guard killed too
//! (recovery restores it from the journal), and at the deadline of an agent that is stopped
//! (the guard does it without the agent), and while renewals keep a short lease going the guard
//! holds the limit past that lease's first end. Every loop device, cgroup and process is removed by
//! a Drop guard.
//!
//! Its own test binary, one test at a time: `run` and `recover` sweep away the helpers of
//! every other user of the same agent binary.

mod host_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::{scan, Protected};
use faultline_agent::lease::KernelLease;
use faultline_core::fault::{Fault, FaultKind, FaultSpec, IoLimitFault, Target};
use host_support::standalone::*;
use host_support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loop device over a 16 MiB file, detached when dropped.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new() -> Loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 * MIB))
            .expect("backing file");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .expect("run losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup failed (this test needs root and loop device support): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Loop { dev, _dir: dir }
    }

    /// `MAJ:MIN`.
    fn num(&self) -> String {
        let rdev =
            std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&self.dev).expect("stat"));
        format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

const WRITE_BPS: &str = "blkio.throttle.write_bps_device";
const READ_IOPS: &str = "blkio.throttle.read_iops_device";

/// Seconds a process in `cg` takes to write 6 MiB to `dev` with O_DIRECT.
fn dd_seconds(cg: &TestCgroup, dev: &Path) -> f64 {
    let start = Instant::now();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$0" && exec dd if=/dev/zero of="$1" bs=1M count=6 oflag=direct"#)
        .arg(cg.dir.join("cgroup.procs"))
        .arg(dev)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh + dd (coreutils)");
    let mut guard = KillOnDrop(child);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = guard.0.try_wait().expect("wait dd") {
            assert!(st.success(), "dd failed: {st}");
            return start.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < end, "dd did not finish within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn limit_spec(cg: &TestCgroup, dev: &Path) -> FaultSpec {
    FaultSpec {
        target: Target::Cgroup(cg.path()),
        fault: Fault::IoLimit(IoLimitFault {
            device: dev.display().to_string(),
            read_bytes_per_second: 0,
            write_bytes_per_second: MIB,
            read_iops: 0,
            write_iops: 0,
        }),
    }
}

fn io_limit_driver() -> Arc<dyn Driver> {
    let cfg = config(&[], Protected::default());
    faultline_agent::drivers::all(&cfg, None, &KernelLease::new())
        .into_iter()
        .find(|d| d.kinds().contains(&FaultKind::IoLimit))
        .expect("an io-limit driver")
}

fn guards_of(id: &str) -> Vec<u32> {
    scan::owned(&ProcTable::new("/proc"), Path::new(EXE))
        .into_iter()
        .filter(|o| o.role == "__io-guard" && o.fault_id == id)
        .map(|o| o.stat.pid)
        .collect()
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_writer_is_held_to_1mib_per_second_and_runs_free_after_revert() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let free = dd_seconds(&cg, &disk.dev);
    println!("6 MiB without a limit: {free:.3} s");
    let driver = io_limit_driver();
    assert_eq!(
        driver.available(),
        Ok(()),
        "this host has the v1 blkio controller"
    );
    let id = unique("limit");
    let mut f = Applied::new(&driver, &ctx(&id, 120), &limit_spec(&cg, &disk.dev));
    assert_eq!(guards_of(&id).len(), 1, "the guard runs during the fault");
    assert_eq!(
        cg.read(WRITE_BPS).trim(),
        format!("{} 1048576", disk.num()),
        "the v1 throttle file holds the limit"
    );
    let limited = dd_seconds(&cg, &disk.dev);
    println!("6 MiB under writeBytesPerSecond 1Mi: {limited:.3} s");
    assert!(
        (5.1..=6.9).contains(&limited),
        "6 MiB at 1 MiB/s takes about 6 s (+-15%), took {limited:.3} s"
    );
    assert_eq!(counter(&f.health(), "limits_in_effect"), Some(1));
    assert_eq!(f.revert(), RevertOutcome::Reverted);
    assert_eq!(cg.read(WRITE_BPS).trim(), "", "no rule left after revert");
    let after = dd_seconds(&cg, &disk.dev);
    println!("6 MiB after revert: {after:.3} s");
    assert!(after < 1.0, "full speed after revert: {after:.3} s");
    assert_eq!(
        driver.revert(&f.recipe).expect("again"),
        RevertOutcome::AlreadyGone
    );
    assert!(guards_of(&id).is_empty(), "revert ends the guard");
}

#[test]
fn a_stricter_limit_already_there_is_kept_and_a_second_fault_on_the_same_device_is_refused() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    cg.set(WRITE_BPS, &format!("{} 65536", disk.num()));
    let driver = io_limit_driver();
    let mut f = Applied::new(
        &driver,
        &ctx(&unique("strict"), 60),
        &limit_spec(&cg, &disk.dev),
    );
    assert_eq!(cg.read(WRITE_BPS).trim(), format!("{} 65536", disk.num()));
    let why = refusal(driver.plan(&ctx(&unique("second"), 60), &limit_spec(&cg, &disk.dev)));
    assert!(why.contains("already limits"), "{why}");
    f.revert();
    assert_eq!(cg.read(WRITE_BPS).trim(), format!("{} 65536", disk.num()));
    let spec = FaultSpec {
        target: Target::Cgroup(cg.path()),
        fault: Fault::IoLimit(IoLimitFault {
            device: "/dev/shm".into(),
            read_bytes_per_second: 0,
            write_bytes_per_second: MIB,
            read_iops: 0,
            write_iops: 0,
        }),
    };
    let why = refusal(driver.plan(&ctx(&unique("tmpfs"), 60), &spec));
    assert!(why.contains("which is not a block device"), "{why}");
}

/// The previous limits of the test cgroup: 50 MiB/s writes and 1000 read IOPS on the disk.
fn previous(cg: &TestCgroup, disk: &Loop) -> (String, String) {
    cg.set(WRITE_BPS, &format!("{} 52428800", disk.num()));
    cg.set(READ_IOPS, &format!("{} 1000", disk.num()));
    (cg.read(WRITE_BPS), cg.read(READ_IOPS))
}

struct Setup {
    work: tempfile::TempDir,
    faults: PathBuf,
    state: PathBuf,
}

fn setup(cg: &TestCgroup, disk: &Loop) -> Setup {
    let work = tempfile::tempdir().expect("tempdir");
    let faults = work.path().join("limit.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: io-limit\ndevice: {}\nwriteBytesPerSecond: 1Mi\nreadIops: 10\ntarget: {{cgroup: {}}}\n",
            disk.dev.display(),
            cg.path()
        ),
    )
    .expect("write faults");
    let state = work.path().join("state");
    Setup {
        work,
        faults,
        state,
    }
}

#[test]
fn after_an_agent_sigkill_the_guard_restores_the_old_limits_at_once() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let before = previous(&cg, &disk);
    let s = setup(&cg, &disk);
    let mut agent = AgentRun::start(&s.faults, "60s", &s.state, &[], None);
    let id = agent.applied("io-limit");
    assert_eq!(cg.read(WRITE_BPS).trim(), format!("{} 1048576", disk.num()));
    assert_eq!(cg.read(READ_IOPS).trim(), format!("{} 10", disk.num()));
    assert_eq!(guards_of(&id).len(), 1, "one guard");
    let killed = Instant::now();
    agent.child.kill().expect("SIGKILL the agent");
    let _ = agent.child.wait();
    let back = wait_for(Duration::from_secs(5), || {
        ((cg.read(WRITE_BPS), cg.read(READ_IOPS)) == before).then(Instant::now)
    })
    .expect("the guard restores the old limits after the agent's SIGKILL");
    println!(
        "old limits back {} ms after the agent's SIGKILL",
        (back - killed).as_millis()
    );
    assert!(back - killed < Duration::from_secs(1));
    assert!(wait_for(Duration::from_secs(2), || guards_of(&id)
        .is_empty()
        .then_some(()))
    .is_some());
    // The restart: recovery finds the journaled fault already undone and leaves them exact.
    let (code, out) = recover(&s.state, &[]);
    println!("recover: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("fault {id} (io-limit)")), "{out}");
    assert_eq!((cg.read(WRITE_BPS), cg.read(READ_IOPS)), before);
    let t = dd_seconds(&cg, &disk.dev);
    println!("6 MiB under the old 50 MiB/s limit: {t:.3} s");
    assert!(t < 1.0, "{t:.3} s");
    drop(s.work);
}

#[test]
fn after_an_agent_and_guard_sigkill_the_restart_restores_the_old_limits_exactly() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let before = previous(&cg, &disk);
    let s = setup(&cg, &disk);
    let mut agent = AgentRun::start(&s.faults, "60s", &s.state, &[], None);
    let id = agent.applied("io-limit");
    for g in guards_of(&id) {
        sigkill(g);
    }
    agent.child.kill().expect("SIGKILL the agent");
    let _ = agent.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cg.read(WRITE_BPS).trim(),
        format!("{} 1048576", disk.num()),
        "with its guard gone too, the limit outlives the agent until the restart"
    );
    let t = dd_seconds(&cg, &disk.dev);
    println!("6 MiB while the fault is orphaned: {t:.3} s");
    assert!((5.1..=6.9).contains(&t), "{t:.3} s");
    let (code, out) = recover(&s.state, &[]);
    println!("recover: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("reverted fault {id} (io-limit)")),
        "{out}"
    );
    assert_eq!(
        (cg.read(WRITE_BPS), cg.read(READ_IOPS)),
        before,
        "the restart restores the old limits exactly"
    );
    let t = dd_seconds(&cg, &disk.dev);
    println!("6 MiB after the restart: {t:.3} s");
    assert!(t < 1.0, "{t:.3} s");
}

#[test]
fn the_guard_restores_at_the_deadline_of_a_stopped_agent() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let before = previous(&cg, &disk);
    let s = setup(&cg, &disk);
    let mut agent = AgentRun::start(&s.faults, "3s", &s.state, &[], None);
    let id = agent.applied("io-limit");
    let applied = Instant::now();
    let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the agent");
    let back = wait_for(Duration::from_secs(10), || {
        ((cg.read(WRITE_BPS), cg.read(READ_IOPS)) == before).then(Instant::now)
    });
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    let back = back.expect("the guard restores the old limits at the deadline");
    println!(
        "restored {} ms after apply with the agent stopped (deadline 3 s)",
        (back - applied).as_millis()
    );
    assert!(back - applied < Duration::from_secs(4));
    assert!(
        wait_for(Duration::from_secs(2), || guards_of(&id)
            .is_empty()
            .then_some(()))
        .is_some(),
        "the guard ended after restoring"
    );
    let (code, all) = agent.finish();
    println!("agent: {all:#?}");
    assert_eq!(code, Some(0));
    assert_eq!((cg.read(WRITE_BPS), cg.read(READ_IOPS)), before);
}

#[test]
fn the_guard_restores_when_the_forwarded_lease_runs_out() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let before = previous(&cg, &disk);
    let lease = KernelLease::new();
    // A short lease at apply, as a session's (renewed every second for 5 s).
    lease.renew(std::time::SystemTime::now() + Duration::from_secs(1));
    let cfg = config(&[], Protected::default());
    let driver = faultline_agent::drivers::all(&cfg, None, &lease)
        .into_iter()
        .find(|d| d.kinds().contains(&FaultKind::IoLimit))
        .expect("an io-limit driver");
    let id = unique("lease");
    let f = Applied::new(&driver, &ctx(&id, 120), &limit_spec(&cg, &disk.dev));
    assert_eq!(cg.read(WRITE_BPS).trim(), format!("{} 1048576", disk.num()));
    // Renewals carry the guard past the lease it started with (it once ended there).
    let kept = Instant::now();
    while kept.elapsed() < Duration::from_millis(2500) {
        lease.renew(std::time::SystemTime::now() + Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        cg.read(WRITE_BPS).trim(),
        format!("{} 1048576", disk.num()),
        "renewals keep the limit past the first lease's end"
    );
    // The coordinator stops vouching: the last renewal ends the lease a second from now, and
    // the agent (alive, but say wedged) sends nothing more.
    let renewed = Instant::now();
    lease.renew(std::time::SystemTime::now() + Duration::from_secs(1));
    let back = wait_for(Duration::from_secs(5), || {
        ((cg.read(WRITE_BPS), cg.read(READ_IOPS)) == before).then(Instant::now)
    })
    .expect("the guard restores the old limits when the lease runs out");
    println!(
        "restored {} ms after the last renewal (lease end 1 s later)",
        (back - renewed).as_millis()
    );
    assert!(back - renewed >= Duration::from_millis(900));
    assert!(back - renewed < Duration::from_secs(2));
    assert!(
        matches!(
            f.health(),
            faultline_agent::engine::driver::Health::Failed { .. }
        ),
        "the engine sees the fault is no longer in effect"
    );
}

#[test]
fn a_v1_limit_reaches_the_processes_of_child_cgroups_too() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let pod = TestCgroup::new("blkio");
    // A pod's cgroup with its containers' cgroups below it: v1 rules are per cgroup.
    pod.child("app");
    let app = TestCgroup {
        name: format!("{}/app", pod.name),
        dir: pod.dir.join("app"),
    };
    let driver = io_limit_driver();
    let id = unique("pod");
    let mut f = Applied::new(&driver, &ctx(&id, 60), &limit_spec(&pod, &disk.dev));
    assert_eq!(
        app.read(WRITE_BPS).trim(),
        format!("{} 1048576", disk.num())
    );
    let t = dd_seconds(&app, &disk.dev);
    println!("6 MiB from a child cgroup of the target: {t:.3} s");
    assert!((5.1..=6.9).contains(&t), "{t:.3} s");
    assert_eq!(f.revert(), RevertOutcome::Reverted);
    assert_eq!(app.read(WRITE_BPS).trim(), "");
    assert_eq!(pod.read(WRITE_BPS).trim(), "");
    // `app` is removed by `pod`'s guard (children first); forget it here.
    std::mem::forget(app);
}

#[test]
fn the_sweep_restores_the_limits_an_orphan_guard_holds() {
    require_root();
    let _s = serial();
    let disk = Loop::new();
    let cg = TestCgroup::new("blkio");
    let before = previous(&cg, &disk);
    // A fault whose journal is lost: its limit is written and only its guard knows the old
    // value (a guard spawned by the test, whose stdin the test holds, so it waits).
    let (maj, min) = disk
        .num()
        .split_once(':')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("MAJ:MIN");
    let settings = serde_json::json!([{
        "file": cg.dir.join(WRITE_BPS),
        "version": "V1",
        "limit": "WriteBps",
        "dev": {"major": maj.parse::<u32>().expect("major"), "minor": min.parse::<u32>().expect("minor")},
        "old": 52428800u64,
        "new": 1048576u64,
    }]);
    cg.set(WRITE_BPS, &format!("{} 1048576", disk.num()));
    let orphan = unique("orphan");
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let guard = Held::spawn(&[
        "__io-guard".to_string(),
        "--fault-id".into(),
        orphan.clone(),
        "--deadline-unix-ms".into(),
        deadline,
        "--settings".into(),
        settings.to_string(),
    ]);
    assert!(
        wait_for(Duration::from_secs(2), || (guards_of(&orphan).len() == 1)
            .then_some(()))
        .is_some(),
        "the orphan guard runs"
    );
    let driver = io_limit_driver();
    let lines = driver.sweep(&[]);
    println!("sweep: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "stopped orphan io-limit guard pid {} (fault {orphan}) after restoring 1 limit(s)",
            guard.child.id()
        ))),
        "{lines:?}"
    );
    assert_eq!((cg.read(WRITE_BPS), cg.read(READ_IOPS)), before);
    assert!(wait_for(Duration::from_secs(2), || guards_of(&orphan)
        .is_empty()
        .then_some(()))
    .is_some());
}
