//! disk-fill on the real kernel (as root): a 64 MiB tmpfs in a mount namespace of its own (so
//! the tmpfs goes away with the namespace's process, even if this test dies) is filled to 80%
//! through the target's `/proc/<pid>/root`, as `statvfs` and `df` show; a SIGKILL of the agent
//! gives the space back within 2 s (measured) and leaves no worker and no file; `keepFree`
//! stops a fill short; a path outside the agent's io_paths is refused before anything changes.
//!
//! Its own test binary, one test at a time: `run` and `recover` sweep away the workers of
//! every other user of the same agent binary.

mod host_support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::RevertOutcome;
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::{scan, Protected};
use faultline_core::fault::{DiskAmount, DiskFillFault, Fault, FaultSpec, Target};
use host_support::standalone::*;
use host_support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A directory on the host for the namespace to mount its tmpfs over.
fn host_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    d
}

/// (used, available) bytes of the filesystem of `p`, as statvfs (and df) count them.
fn space(p: &Path) -> (u64, u64) {
    let st =
        nix::sys::statvfs::statvfs(p).unwrap_or_else(|e| panic!("statvfs {}: {e}", p.display()));
    let unit = st.fragment_size();
    (
        (st.blocks() - st.blocks_free()) * unit,
        st.blocks_available() * unit,
    )
}

/// `df`'s Use% of `dir` as the process `pid` sees it (run in its mount namespace, since df
/// looks the path up in its own mount table).
fn df_use_percent(pid: u32, dir: &Path) -> u64 {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "df", "--output=pcent"])
        .arg(dir)
        .output()
        .expect("run nsenter + df (util-linux, coreutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("df output: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

fn fill(target: Target, dir: &Path, amount: DiskAmount, keep_free: u64) -> FaultSpec {
    FaultSpec {
        target,
        fault: Fault::DiskFill(DiskFillFault {
            path: dir.display().to_string(),
            amount,
            keep_free_bytes: keep_free,
        }),
    }
}

fn workers_of(id: &str) -> Vec<u32> {
    scan::owned(&ProcTable::new("/proc"), Path::new(EXE))
        .into_iter()
        .filter(|o| o.fault_id == id)
        .map(|o| o.stat.pid)
        .collect()
}

#[test]
fn a_fill_to_80_percent_shows_in_df_and_comes_back_within_2s_of_an_agent_sigkill() {
    require_root();
    let _s = serial();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = host_dir();
    let ns = PrivateMount::over(dir.path());
    let inside = ns.inside(dir.path());
    let (used0, avail0) = space(&inside);
    assert_eq!(used0 + avail0, 64 * MIB, "the namespace's tmpfs is 64 MiB");
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[limits]\nio_paths = [\"{}\"]\n", dir.path().display()),
    )
    .expect("write config");
    let config = config.display().to_string();
    let faults = work.path().join("fill.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: disk-fill\npath: {}\npercent: 80\nkeepFree: 1Mi\ntarget: {{pid: {}}}\n",
            dir.path().display(),
            ns.pid()
        ),
    )
    .expect("write faults");
    let state = work.path().join("state");

    let mut agent = AgentRun::start(&faults, "60s", &state, &["--config", &config], None);
    let id = agent.applied("disk-fill");
    let (used, avail) = space(&inside);
    let pct = df_use_percent(ns.pid(), dir.path());
    println!(
        "filled: used {used} of {} bytes, df Use% {pct}",
        used + avail
    );
    assert_eq!(pct, 80, "df shows the tmpfs 80% full");
    assert!(
        (used as f64 / (64 * MIB) as f64 - 0.80).abs() < 0.005,
        "used {used} is 80% of 64 MiB"
    );
    assert!(
        std::fs::read_dir(&inside).expect("ls").next().is_none(),
        "the space is held by a file without a name"
    );
    let workers = workers_of(&id);
    assert_eq!(workers.len(), 1, "one fill worker: {workers:?}");

    let killed = Instant::now();
    agent.child.kill().expect("SIGKILL the agent");
    let _ = agent.child.wait();
    let back = wait_for(Duration::from_secs(5), || {
        (space(&inside).0 <= used0).then(Instant::now)
    })
    .expect("the space comes back after the agent's SIGKILL");
    let took = back - killed;
    println!(
        "space back {} ms after the agent's SIGKILL",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || workers_of(&id)
            .is_empty()
            .then_some(()))
        .is_some(),
        "no worker of the fault is left"
    );
    assert!(std::fs::read_dir(&inside).expect("ls").next().is_none());

    // The journal still names the fault: recovery finds nothing left to undo.
    let (code, out) = recover(&state, &["--config", &config]);
    println!("recover: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("fault {id} (disk-fill)")), "{out}");
    assert_eq!(space(&inside).0, used0);
}

#[test]
fn keep_free_stops_a_fill_short_and_revert_gives_the_space_back() {
    require_root();
    let _s = serial();
    let dir = host_dir();
    let ns = PrivateMount::over(dir.path());
    let inside = ns.inside(dir.path());
    let (used0, _) = space(&inside);
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let target = Target::Pid(ns.pid());

    let spec = fill(
        target.clone(),
        dir.path(),
        DiskAmount::Percent(99),
        32 * MIB,
    );
    let mut f = Applied::new(&stress, &ctx(&unique("keep"), 60), &spec);
    let (used, avail) = space(&inside);
    println!("99% asked, keepFree 32Mi: used {used}, available {avail}");
    assert!(
        (32 * MIB..32 * MIB + 64 * 1024).contains(&avail),
        "keepFree left 32 MiB available: {avail}"
    );
    assert_eq!(counter(&f.health(), "capped_by_keep_free"), Some(1));
    assert_eq!(
        counter(&f.health(), "filled_bytes"),
        Some(64 * MIB - 32 * MIB - used0)
    );
    assert_eq!(f.revert(), RevertOutcome::Reverted);
    assert_eq!(space(&inside).0, used0, "revert gives the space back");
    assert_eq!(
        stress.revert(&f.recipe).expect("again"),
        RevertOutcome::AlreadyGone
    );

    // A size is taken as asked while keepFree allows it.
    let spec = fill(target.clone(), dir.path(), DiskAmount::Bytes(10 * MIB), 0);
    let mut f = Applied::new(&stress, &ctx(&unique("size"), 60), &spec);
    assert_eq!(space(&inside).0, used0 + 10 * MIB);
    assert_eq!(counter(&f.health(), "capped_by_keep_free"), Some(0));
    f.revert();

    // Nothing could be filled without breaking keepFree: refused before anything changes.
    let spec = fill(target, dir.path(), DiskAmount::Bytes(MIB), 64 * MIB);
    let why = refusal(stress.plan(&ctx(&unique("none"), 60), &spec));
    assert!(why.starts_with("keepFree: "), "{why}");
    assert!(why.contains("leaves nothing to fill"), "{why}");
    assert_eq!(space(&inside).0, used0);
}

#[test]
fn a_path_outside_the_io_paths_is_refused() {
    require_root();
    let _s = serial();
    let allowed = tempfile::tempdir().expect("tempdir");
    let (stress, _) = drivers(&config(&[allowed.path()], Protected::default()));
    for path in ["/etc", "/", "/proc"] {
        let spec = fill(Target::Host, Path::new(path), DiskAmount::Percent(50), 0);
        let why = refusal(stress.plan(&ctx(&unique("out"), 60), &spec));
        assert!(
            why.contains(&format!("path {path} is not one of the agent's io_paths")),
            "{why}"
        );
    }
    // Below an allowed path is not the allowed path either (the sweep scans only those).
    let sub = allowed.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let spec = fill(Target::Host, &sub, DiskAmount::Percent(50), 0);
    let why = refusal(stress.plan(&ctx(&unique("sub"), 60), &spec));
    assert!(why.contains("is not one of the agent's io_paths"), "{why}");
}
