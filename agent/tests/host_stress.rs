//! Stress faults on the real kernel (as root): measured CPU load per worker, in the host's and
//! a cgroup's accounting; memory reach time, release and OOM kill; io writes, fsyncs and
//! cleanup. CPU-measuring tests hold one lock so they never overlap.

mod host_support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Health, RevertOutcome};
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::Protected;
use faultline_core::fault::{MemoryAmount, Target};
use host_support::*;

/// Serializes the tests that measure CPU or need the machine's memory.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn cpuacct_usage_ns(cg: &TestCgroup) -> u64 {
    cg.read("cpuacct.usage")
        .trim()
        .parse()
        .expect("cpuacct.usage")
}

#[test]
fn cpu_half_a_core_for_ten_seconds_shows_in_worker_host_and_cgroup_accounting() {
    require_root();
    let _g = heavy();
    let cg = TestCgroup::new("cpuacct");
    // The same path in the cpu hierarchy with a high weight, so the compiles that share this
    // machine cannot starve the worker of the half core it asks for.
    let weight = TestCgroup::named("cpu", &cg.name);
    weight.set("cpu.shares", "10240");
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let proc = ProcTable::new("/proc");
    let id = unique("cpu-half");
    let spec = cpu(Target::Cgroup(cg.path()), 50, 1);

    let cg0 = cpuacct_usage_ns(&cg);
    let (busy0, total0) = host_busy_ticks();
    let t0 = Instant::now();
    let mut fault = Applied::new(&stress, &ctx(&id, 60), &spec);
    let pids = recipe_pids(&fault.recipe);
    assert_eq!(pids.len(), 1, "one worker asked");
    let worker = pids[0];
    let procs = faultline_agent::host::cgroup::procs(&cg.dir);
    assert_eq!(
        procs,
        vec![worker],
        "the worker is in the test's cpuacct cgroup"
    );
    let procs = faultline_agent::host::cgroup::procs(&weight.dir);
    assert_eq!(
        procs,
        vec![worker],
        "and in the same path of the cpu hierarchy"
    );

    std::thread::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed()));
    let worker_cpu = proc.cpu_time(worker).expect("worker still running");
    let wall = t0.elapsed().as_secs_f64();
    let cg1 = cpuacct_usage_ns(&cg);
    let (busy1, total1) = host_busy_ticks();
    assert!(
        matches!(fault.health(), Health::Ok(_)),
        "{:?}",
        fault.health()
    );
    assert_eq!(fault.revert(), RevertOutcome::Reverted);
    assert!(
        !proc.stat(worker).is_ok_and(|s| s.state != 'Z'),
        "worker gone after revert"
    );

    let hz = procfs::ticks_per_second() as f64;
    let ncpu = faultline_agent::host::cgroup::online_cpus() as f64;
    let worker_core = worker_cpu.as_secs_f64() / wall;
    let host_busy_core = (busy1 - busy0) as f64 / hz / wall;
    let host_total_core = (total1 - total0) as f64 / hz / wall;
    let cg_core = (cg1 - cg0) as f64 / 1e9 / wall;
    println!(
        "cpu 50% x 1 for {wall:.2} s: worker {:.3} s CPU ({worker_core:.3} core); host busy \
         {host_busy_core:.3} core of {host_total_core:.2} ({ncpu} online); cgroup cpuacct \
         {cg_core:.3} core",
        worker_cpu.as_secs_f64()
    );
    assert!(
        (worker_cpu.as_secs_f64() - 5.0).abs() <= 1.0,
        "worker CPU time {:.3} s is not 5.0 s ± 1.0",
        worker_cpu.as_secs_f64()
    );
    // /proc/stat busy time is sampled per tick, so it is compared with the bound
    // (0.5 core ± 0.1); other load on a shared machine can only add to it.
    assert!(
        host_busy_core >= 0.4,
        "host busy rose by {host_busy_core:.3} core, below 0.5 - 0.1 (worker {worker_core:.3} core)"
    );
    assert!(
        (cg_core - 0.5).abs() <= 0.1,
        "cgroup cpuacct shows {cg_core:.3} core, not 0.5 ± 0.1"
    );
}

#[test]
fn cpu_workers_default_to_the_cpus_the_target_may_use() {
    require_root();
    let cg = TestCgroup::new("cpu");
    cg.set("cpu.cfs_period_us", "100000");
    cg.set("cpu.cfs_quota_us", "100000");
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let planned = stress
        .plan(
            &ctx("cpu-default", 30),
            &cpu(Target::Cgroup(cg.path()), 40, 0),
        )
        .expect("plan");
    let workers = planned.data["workers"].as_array().expect("workers").len();
    assert_eq!(workers, 1, "a 1-CPU quota gives one worker");
    let planned = stress
        .plan(&ctx("cpu-default", 30), &cpu(Target::Host, 40, 0))
        .expect("plan");
    let workers = planned.data["workers"].as_array().expect("workers").len() as u32;
    assert_eq!(workers, faultline_agent::host::cgroup::online_cpus());
    assert!(recipe_pids(&planned).is_empty(), "plan starts nothing");
}

/// One target path in a v1 hierarchy and in cgroup2: the worker moves itself into the v1
/// cgroup (writing `0` to `tasks`, no grace period) and the agent moves it into the v2 one
/// (`cgroup.procs`); both are where it runs, read back from the kernel.
#[test]
fn a_worker_is_placed_in_the_targets_v1_and_v2_cgroups_before_it_works() {
    require_root();
    let v1 = TestCgroup::new("cpuacct");
    let v2 = host_support::standalone::V2Group::named(&v1.name);
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let id = unique("cpu-placed");
    let mut fault = Applied::new(
        &stress,
        &ctx(&id, 60),
        &cpu(Target::Cgroup(v1.path()), 5, 1),
    );
    let pids = recipe_pids(&fault.recipe);
    assert_eq!(pids.len(), 1, "one worker asked");
    assert_eq!(
        faultline_agent::host::cgroup::procs(&v1.dir),
        pids,
        "in the v1 cgroup"
    );
    assert_eq!(v2.procs(), pids, "in the v2 cgroup");
    let lines = std::fs::read_to_string(format!("/proc/{}/cgroup", pids[0])).expect("cgroup");
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&v1.path())),
        "/proc/{}/cgroup shows the v2 group: {lines}",
        pids[0]
    );
    assert_eq!(fault.revert(), RevertOutcome::Reverted);
}

/// The mechanism itself, without the agent: a raw worker told `join [<v1 tasks>]` moves itself
/// there, answers `joined`, and does no work before `go` (one thread, no CPU time to speak of).
#[test]
fn a_raw_worker_joins_a_v1_cgroup_itself_and_waits_for_go() {
    use std::io::{BufRead, BufReader, Write};
    require_root();
    let cg = TestCgroup::new("cpuacct");
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 60_000;
    let args: Vec<String> = [
        "__worker",
        "cpu",
        "--fault-id",
        "raw-join",
        "--deadline-unix-ms",
        &deadline.to_string(),
        "--parent-pid",
        &std::process::id().to_string(),
        "--index",
        "0",
        "--load",
        "50",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut child = KillOnDrop(
        std::process::Command::new(EXE)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a worker"),
    );
    let pid = child.0.id();
    let tasks = cg.dir.join("tasks");
    let mut stdin = child.0.stdin.take().expect("stdin");
    writeln!(stdin, "join {}", serde_json::json!([tasks])).expect("send join");
    stdin.flush().expect("flush");
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("answer");
    assert_eq!(line.trim(), "joined", "the worker's answer");
    assert_eq!(
        faultline_agent::host::cgroup::procs(&cg.dir),
        vec![pid],
        "the worker moved itself"
    );
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .count();
    assert_eq!(threads, 1, "single-threaded before go");
    std::thread::sleep(Duration::from_millis(200));
    let cpu = ProcTable::new("/proc").cpu_time(pid).expect("cpu time");
    assert!(
        cpu < Duration::from_millis(100),
        "no work before go: {cpu:?} of CPU in 200 ms at load 50"
    );
    drop(stdin);
}

/// A frozen target (a paused container) is refused before any worker starts: one placed
/// there would be frozen too, never answer, and could not be killed until thawed.
#[test]
fn a_frozen_target_is_refused_before_any_worker_starts() {
    require_root();
    let cg = TestCgroup::new("freezer");
    cg.set("freezer.state", "FROZEN");
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let id = unique("cpu-frozen");
    let c = ctx(&id, 60);
    let spec = cpu(Target::Cgroup(cg.path()), 5, 1);
    let planned = stress.plan(&c, &spec).expect("plan");
    let t = Instant::now();
    let err = match stress.apply(&c, &spec, &planned) {
        Ok(r) => {
            cg.set("freezer.state", "THAWED");
            let _ = stress.revert(&r);
            panic!("a worker was started in a frozen cgroup");
        }
        Err(e) => e.to_string(),
    };
    cg.set("freezer.state", "THAWED");
    assert!(
        err.contains("is frozen") && err.contains(&cg.dir.display().to_string()),
        "the refusal names the frozen cgroup: {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "refused at once");
    assert!(faultline_agent::host::cgroup::procs(&cg.dir).is_empty());
    let _ = stress.revert(&planned);
}

/// A v1 cgroup the worker may not enter (a cpuset with no CPUs: the kernel answers ENOSPC):
/// the apply fails naming the cgroup, and no worker is left running.
#[test]
fn a_worker_that_cannot_enter_the_target_cgroup_fails_the_apply_and_is_gone() {
    require_root();
    let cg = TestCgroup::new("cpuset");
    assert_eq!(
        cg.read("cpuset.cpus").trim(),
        "",
        "a new cpuset has no CPUs"
    );
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let id = unique("cpu-nocpus");
    let c = ctx(&id, 60);
    let spec = cpu(Target::Cgroup(cg.path()), 5, 1);
    let planned = stress.plan(&c, &spec).expect("plan");
    let err = match stress.apply(&c, &spec, &planned) {
        Ok(r) => {
            let _ = stress.revert(&r);
            panic!("a worker was placed in a cpuset with no CPUs");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("could not join") && err.contains(&cg.dir.display().to_string()),
        "the error names the cgroup: {err}"
    );
    let pid: u32 = err
        .split("worker pid ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the error names the worker's pid: {err}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "worker pid {pid} was killed and reaped"
    );
    assert!(faultline_agent::host::cgroup::procs(&cg.dir).is_empty());
    let _ = stress.revert(&planned);
}

#[test]
fn memory_512mib_is_resident_within_two_seconds_and_released_on_revert() {
    require_root();
    let _g = heavy();
    let (stress, _) = drivers(&config(&[], Protected::default()));
    let proc = ProcTable::new("/proc");
    let want = 512 * MIB;
    let t0 = Instant::now();
    let mut fault = Applied::new(
        &stress,
        &ctx(&unique("mem-512"), 60),
        &memory(Target::Host, MemoryAmount::Bytes(want)),
    );
    let worker = recipe_pids(&fault.recipe)[0];
    let reached = wait_for(Duration::from_secs(5), || {
        (proc.rss_bytes(worker).ok()? >= want).then(|| t0.elapsed())
    });
    let rss = proc.rss_bytes(worker).unwrap_or(0);
    println!(
        "memory 512 MiB: worker RSS {} MiB after {:?} (apply to resident)",
        rss / MIB,
        reached
    );
    let reached = reached.expect("worker RSS never reached 512 MiB");
    assert!(reached <= Duration::from_secs(2), "took {reached:?}");
    let reported = wait_for(Duration::from_secs(2), || {
        counter(&fault.health(), "rss_bytes").filter(|v| *v >= want)
    });
    assert!(
        reported.is_some(),
        "health reports rss_bytes: {:?}",
        fault.health()
    );
    let id = proc.identity(worker).expect("identity");
    assert_eq!(fault.revert(), RevertOutcome::Reverted);
    assert!(
        !proc.is_alive(id),
        "the worker and its memory are gone after revert"
    );
    assert_eq!(
        stress.revert(&fault.recipe).expect("second revert"),
        RevertOutcome::AlreadyGone
    );
}

#[test]
fn memory_over_a_256mib_cgroup_limit_is_reported_oom_killed() {
    require_root();
    let _g = heavy();
    let cg = TestCgroup::new("memory");
    cg.set("memory.limit_in_bytes", &(256 * MIB).to_string());
    let (stress, _) = drivers(&config(&[], Protected::default()));

    // A percent of this cgroup's limit is a size; a percent of an unlimited one is refused.
    let planned = stress
        .plan(
            &ctx("mem-pct", 30),
            &memory(Target::Cgroup(cg.path()), MemoryAmount::Percent(50.0)),
        )
        .expect("plan percent");
    assert_eq!(planned.data["workers"][0][1], (128 * MIB).to_string());
    let unlimited = TestCgroup::new("memory");
    let msg = refusal(stress.plan(
        &ctx("mem-pct", 30),
        &memory(
            Target::Cgroup(unlimited.path()),
            MemoryAmount::Percent(50.0),
        ),
    ));
    assert!(msg.contains("unlimited"), "{msg}");

    let mut fault = Applied::new(
        &stress,
        &ctx(&unique("mem-oom"), 60),
        &memory(Target::Cgroup(cg.path()), MemoryAmount::Bytes(512 * MIB)),
    );
    let failed = wait_for(Duration::from_secs(10), || match fault.health() {
        h @ Health::Failed { .. } => Some(h),
        Health::Ok(_) => None,
    });
    println!("health over the limit: {failed:?}");
    match failed.expect("the fault never reported a failure") {
        Health::Failed { error, counters } => {
            assert_eq!(error, "oom_killed");
            assert!(
                counters.contains(&("oom_killed".to_string(), 1)),
                "{counters:?}"
            );
        }
        Health::Ok(_) => unreachable!(),
    }
    fault.revert();
}

#[test]
fn io_workers_write_and_fsync_their_files_and_revert_removes_them() {
    require_root();
    let _g = heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let id = unique("io");
    let mut fault = Applied::new(&stress, &ctx(&id, 60), &io(dir.path(), 2, 4 * MIB, 0));
    let files: Vec<_> = (0..2)
        .map(|n| dir.path().join(format!(".faultline-io-{id}-{n}")))
        .collect();
    let first = wait_for(Duration::from_secs(5), || {
        let h = fault.health();
        (counter(&h, "fsyncs")? > 0).then_some(h)
    })
    .expect("no fsync reported within 5 s");
    std::thread::sleep(Duration::from_millis(800));
    let second = fault.health();
    println!("io counters: {first:?} then {second:?}");
    for key in ["bytes_written", "fsyncs"] {
        assert!(
            counter(&second, key) > counter(&first, key),
            "{key} grows: {first:?} -> {second:?}"
        );
    }
    for f in &files {
        assert!(f.exists(), "{} exists during the fault", f.display());
    }
    assert_eq!(fault.revert(), RevertOutcome::Reverted);
    for f in &files {
        assert!(!f.exists(), "{} is gone after revert", f.display());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert!(left.is_empty(), "nothing left in the io dir: {left:?}");
}

#[test]
fn io_rate_limits_the_bytes_written() {
    require_root();
    let _g = heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let mut fault = Applied::new(
        &stress,
        &ctx(&unique("io-rate"), 60),
        &io(dir.path(), 1, 64 * MIB, 2 * MIB),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let written = counter(&fault.health(), "bytes_written").unwrap_or(0);
    println!("io at 2 MiB/s for 2.1 s wrote {} KiB", written / 1024);
    assert!(
        (2 * MIB..=6 * MIB).contains(&written),
        "wrote {written} bytes, expected about 4 MiB"
    );
    fault.revert();
}

#[test]
fn io_outside_the_io_paths_and_netns_targets_are_refused() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let msg = refusal(stress.plan(
        &ctx("io-bad", 30),
        &io(std::path::Path::new("/etc"), 1, MIB, 0),
    ));
    assert!(
        msg.contains("path /etc is not one of the agent's io_paths"),
        "{msg}"
    );
    assert!(
        msg.contains(&dir.path().display().to_string()),
        "names the allowed: {msg}"
    );
    let msg = refusal(stress.plan(
        &ctx("cpu-netns", 30),
        &cpu(Target::Netns("/run/netns/x".into()), 10, 1),
    ));
    assert!(msg.contains("not on network namespace"), "{msg}");
}

/// Runs in a child process of the test (see `workers_die_with_the_agent`): applies cpu, memory
/// and io faults, prints "WORKERS pid,...", then waits to be killed.
#[test]
#[ignore = "helper run by workers_die_with_the_agent in its own process"]
fn stress_holder() {
    let Ok(dir) = std::env::var("FAULTLINE_TEST_IO_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (stress, _) = drivers(&config(&[&dir], Protected::default()));
    let specs = [
        cpu(Target::Host, 20, 2),
        memory(Target::Host, MemoryAmount::Bytes(64 * MIB)),
        io(&dir, 1, 4 * MIB, 0),
    ];
    let mut pids = Vec::new();
    for spec in &specs {
        let c = ctx(&unique("holder"), 60);
        let planned = stress.plan(&c, spec).expect("plan");
        pids.extend(recipe_pids(
            &stress.apply(&c, spec, &planned).expect("apply"),
        ));
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("WORKERS {}", list.join(","));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_die_with_the_agent() {
    require_root();
    let _g = heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let holder = std::process::Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "stress_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FAULTLINE_TEST_IO_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn the stress holder");
    let mut holder = KillOnDrop(holder);
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(holder.0.stdout.take().expect("stdout")).lines();
    let list = lines
        .by_ref()
        .map_while(Result::ok)
        // libtest may print "test stress_holder ... " on the same line first.
        .find_map(|l| l.split_once("WORKERS ").map(|(_, list)| list.to_string()))
        .expect("the holder did not start its workers");
    std::thread::spawn(move || lines.for_each(drop));
    let proc = ProcTable::new("/proc");
    let ids: Vec<_> = list
        .split(',')
        .map(|p| proc.identity(p.parse().expect("pid")).expect("worker runs"))
        .collect();
    assert_eq!(ids.len(), 4, "2 cpu + 1 memory + 1 io workers");
    let t0 = Instant::now();
    holder
        .0
        .kill()
        .expect("SIGKILL the holder (the agent side)");
    let _ = holder.0.wait();
    let gone = wait_for(Duration::from_secs(5), || {
        ids.iter().all(|i| !proc.is_alive(*i)).then(|| t0.elapsed())
    });
    println!(
        "agent side SIGKILLed: last of {} workers gone after {gone:?}",
        ids.len()
    );
    let gone = gone.expect("workers outlived the agent");
    assert!(gone <= Duration::from_secs(1), "took {gone:?}");
    // The io worker removes its file when it sees EOF first; when SIGKILL wins, the file is
    // left for recovery (journal revert or sweep) to remove.
    let left = faultline_agent::host::scan::io_files(dir.path());
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let swept = stress.sweep(&[]);
    println!("left behind: {left:?}; sweep: {swept:?}");
    let removed = swept
        .iter()
        .filter(|l| l.starts_with("removed orphan io file"))
        .count();
    assert_eq!(removed, left.len(), "{swept:?}");
    assert!(std::fs::read_dir(dir.path()).expect("ls").next().is_none());
}
