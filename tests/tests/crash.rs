//! Crash safety of the agent's fault engine with the real binary (needs root: cgroups, signals
//! to other processes). SIGKILL the agent while cpu + memory + io + pause faults are active:
//! within 1 s no worker remains and the paused process runs again; the next start recovers the
//! journal and finds nothing left. Then SIGKILL at random points of apply and revert:
//! `FAULTLINE_CRASH_ITERATIONS` trials (default 20) from `FAULTLINE_CRASH_SEED` (default a fixed
//! seed), each checked for leftovers; the run prints where the time of a trial goes.

#[path = "crash/support.rs"]
mod support;

use std::time::{Duration, Instant};

use faultline_tests::procs::require_root;
use faultline_tests::trials::TrialPlan;
use support::*;

/// Tests in this file run one at a time (they measure how fast helpers disappear).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn sigkill_with_cpu_memory_io_and_pause_active_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root("crash-safety tests");
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
    let first = recover(&state, &config, "first recovery");
    eprintln!("first recovery:\n{first}");
    assert!(
        io_files(&io_dir).is_empty(),
        "io files removed by recovery: {:?}",
        io_files(&io_dir)
    );
    let left = helpers_of(agent_pid, paused.pid());
    assert!(left.is_empty(), "no guard or worker left: {left:?}");
    let second = recover(&state, &config, "second recovery");
    assert!(
        found_by_recovery(&second).is_empty(),
        "second recovery must find nothing:\n{second}"
    );
}

/// Where the time of one random-SIGKILL trial goes (summed over the trials).
#[derive(Default)]
struct Costs {
    alive: Duration,
    cleanup: Duration,
    recover: Duration,
    slowest: Duration,
}

#[test]
fn sigkill_at_random_points_of_apply_and_revert() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root("crash-safety tests");
    // 20 trials in CI, from a fixed seed; FAULTLINE_CRASH_ITERATIONS=1000 for a long run.
    let plan = TrialPlan::from_env(
        "FAULTLINE_CRASH_ITERATIONS",
        "FAULTLINE_CRASH_SEED",
        20,
        Some(0x9e37_79b9_7f4a_7c15),
    );
    let iterations = plan.trials;
    let mut rng = plan.rng();
    let dir = tempfile::tempdir().expect("tmp");
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let state = dir.path().join("state");
    let config = write_config(dir.path(), &io_dir);
    let faults = dir.path().join("faults.yaml");
    let started = Instant::now();
    let mut costs = Costs::default();
    let mut foreign: Vec<String> = Vec::new();
    for i in 0..iterations {
        let trial = Instant::now();
        let paused = Sleeper::spawn();
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
        let delay = rng.between(Duration::ZERO, Duration::from_millis(1599));
        let mut agent = RunningAgent::start(&faults, &state, &config, "1s");
        let agent_pid = agent.pid();
        std::thread::sleep(delay);
        agent.sigkill();
        agent.drain();
        let killed = Instant::now();
        costs.alive += killed - trial;
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
                "iteration {i} of seed {:#x} (SIGKILL after {delay:?}): workers {workers:?}, paused process stopped: {stopped}; output:\n{}",
                plan.seed,
                agent.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let clean = Instant::now();
        costs.cleanup += clean - killed;
        let context = format!(
            "iteration {i} of seed {:#x} (SIGKILL after {delay:?})",
            plan.seed
        );
        recover(&state, &config, &context);
        assert!(
            io_files(&io_dir).is_empty(),
            "{context}: io files left: {:?}",
            io_files(&io_dir)
        );
        let out = recover(&state, &config, &context);
        assert!(
            found_by_recovery(&out).is_empty(),
            "{context}: second recovery found something:\n{out}"
        );
        for l in out
            .lines()
            .filter(|l| network_sweep(l) && !l.contains(" WARN "))
        {
            foreign.push(format!("iteration {i}: {l}"));
        }
        assert_ne!(
            paused.state(),
            'T',
            "iteration {i} of seed {:#x}: process left paused",
            plan.seed
        );
        costs.recover += clean.elapsed();
        costs.slowest = costs.slowest.max(trial.elapsed());
        if (i + 1) % 50 == 0 && i + 1 < iterations {
            eprintln!(
                "{} of {iterations} SIGKILLs, 0 leftovers, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let wall = started.elapsed();
    let per = |d: Duration| d.as_millis() as f64 / iterations as f64;
    eprintln!(
        "{iterations} random SIGKILLs (seed {:#x}), 0 leftovers, in {:.1} s: per trial {:.0} ms \
         = agent alive {:.0} ms (random kill point 0..1.6 s) + workers gone and pause lifted \
         {:.0} ms + two recoveries {:.0} ms; slowest trial {} ms",
        plan.seed,
        wall.as_secs_f64(),
        per(wall),
        per(costs.alive),
        per(costs.cleanup),
        per(costs.recover),
        costs.slowest.as_millis()
    );
    if !foreign.is_empty() {
        eprintln!(
            "{} line(s) of second recoveries were the network sweep meeting other tests' \
             namespaces or eBPF programs on this host (not this test's: it applies no network \
             fault):\n{}",
            foreign.len(),
            foreign.join("\n")
        );
    }
}

#[test]
fn recovery_of_one_agent_leaves_another_live_agents_helpers_alone() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root("crash-safety tests");
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
    let out = recover(
        &dir.path().join("state-b"),
        &config,
        "the other agent's recovery",
    );
    assert!(
        found_by_recovery(&out).is_empty(),
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
