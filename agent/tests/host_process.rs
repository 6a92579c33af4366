//! Process kill and pause on the real kernel (as root), the guard that resumes paused processes
//! when the agent dies, and the never-targetable refusals.

mod host_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Health, RevertOutcome};
use faultline_agent::host::Protected;
use faultline_core::fault::{ContainerRef, ProcessAction, ProcessSelector, Target};
use host_support::*;

const SIGKILL: ProcessAction = ProcessAction::Kill { signal: 9 };

#[test]
fn kill_by_pid_ends_the_target_and_leaves_others_alone() {
    require_root();
    let mut target = Sleeper::new("60");
    let other = Sleeper::new("60");
    let (_, process) = drivers(&config(&[], Protected::default()));
    let mut fault = Applied::new(
        &process,
        &ctx(&unique("kill"), 30),
        &process_fault(SIGKILL, ProcessSelector::Pid(target.pid()), 0),
    );
    assert_eq!(
        target.ended_by_signal(),
        Some(9),
        "the target died of SIGKILL"
    );
    assert_eq!(other.state(), 'S', "the other sleep is untouched");
    assert_eq!(counter(&fault.health(), "signalled"), Some(1));
    let killed = fault.recipe.data["signalled"]
        .as_array()
        .expect("signalled")
        .len();
    assert_eq!(killed, 1, "the recipe records what was killed");
    assert_eq!(fault.revert(), RevertOutcome::AlreadyGone);
}

#[test]
fn kill_count_one_by_name_kills_exactly_the_oldest() {
    require_root();
    let arg = format!("61.{}", rand::random::<u32>());
    let mut sleeps: Vec<Sleeper> = (0..3).map(|_| Sleeper::new(&arg)).collect();
    let (_, process) = drivers(&config(&[], Protected::default()));
    let pattern = format!("^sleep {}$", regex_escape(&arg));
    let _fault = Applied::new(
        &process,
        &ctx(&unique("kill-one"), 30),
        &process_fault(SIGKILL, ProcessSelector::Name(pattern), 1),
    );
    assert_eq!(sleeps[0].ended_by_signal(), Some(9), "the oldest is killed");
    std::thread::sleep(Duration::from_millis(100));
    for s in &sleeps[1..] {
        assert_eq!(s.state(), 'S', "pid {} is untouched", s.pid());
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

#[test]
fn pause_stops_the_target_and_revert_resumes_it() {
    require_root();
    let target = Sleeper::new("60");
    let (_, process) = drivers(&config(&[], Protected::default()));
    let mut fault = Applied::new(
        &process,
        &ctx(&unique("pause"), 30),
        &process_fault(ProcessAction::Pause, ProcessSelector::Pid(target.pid()), 0),
    );
    assert_eq!(target.state(), 'T', "paused");
    match fault.health() {
        Health::Ok(c) => assert!(c.contains(&("stopped".to_string(), 1)), "{c:?}"),
        h => panic!("unhealthy pause: {h:?}"),
    }
    let guard = fault.recipe.data["guards"][0]["pid"]
        .as_u64()
        .expect("guard pid") as u32;
    assert_ne!(state(guard), '?', "the guard runs during the pause");
    assert_eq!(fault.revert(), RevertOutcome::Reverted);
    assert!(
        matches!(target.state(), 'S' | 'R'),
        "resumed: {}",
        target.state()
    );
    let gone = wait_for(Duration::from_secs(2), || {
        matches!(state(guard), '?' | 'Z').then_some(())
    });
    assert!(gone.is_some(), "the guard exits after revert");
}

#[test]
fn a_resumed_pause_is_unhealthy() {
    require_root();
    let target = Sleeper::new("60");
    let (_, process) = drivers(&config(&[], Protected::default()));
    let fault = Applied::new(
        &process,
        &ctx(&unique("pause-cont"), 30),
        &process_fault(ProcessAction::Pause, ProcessSelector::Pid(target.pid()), 0),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(target.pid() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    let h = wait_for(Duration::from_secs(2), || match fault.health() {
        h @ Health::Failed { .. } => Some(h),
        _ => None,
    });
    match h {
        Some(Health::Failed { error, .. }) => assert!(error.contains("running again"), "{error}"),
        other => panic!("expected a failed health, got {other:?}"),
    }
}

/// Runs in a child process of the test (see `pause_survives_the_agent_dying`): pauses the pid
/// in $FAULTLINE_TEST_PAUSE_PID, says "PAUSED", then waits to be killed.
#[test]
#[ignore = "helper run by pause_survives_the_agent_dying in its own process"]
fn pause_holder() {
    let Ok(pid) = std::env::var("FAULTLINE_TEST_PAUSE_PID") else {
        return;
    };
    let pid: u32 = pid.parse().expect("pid");
    let (_, process) = drivers(&config(&[], Protected::default()));
    let c = ctx(&unique("pause-holder"), 60);
    let spec = process_fault(ProcessAction::Pause, ProcessSelector::Pid(pid), 0);
    let planned = process.plan(&c, &spec).expect("plan");
    process.apply(&c, &spec, &planned).expect("apply");
    println!("PAUSED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn pause_survives_the_agent_dying() {
    require_root();
    let target = Sleeper::new("60");
    let me = std::env::current_exe().expect("test exe");
    let holder = Command::new(me)
        .args([
            "--exact",
            "pause_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FAULTLINE_TEST_PAUSE_PID", target.pid().to_string())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the pause holder");
    let mut holder = KillOnDrop(holder);
    let out = holder.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let paused = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("PAUSED"));
    // Keep draining so the holder never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(paused, "the holder did not pause the target");
    assert_eq!(target.state(), 'T', "paused by the holder");
    let t0 = Instant::now();
    holder
        .0
        .kill()
        .expect("SIGKILL the holder (the agent side)");
    let _ = holder.0.wait();
    let resumed = wait_for(Duration::from_secs(3), || {
        matches!(target.state(), 'S' | 'R').then(|| t0.elapsed())
    });
    println!("pause guard resumed the target {resumed:?} after the agent side died");
    let resumed = resumed.expect("the target was never resumed");
    assert!(resumed <= Duration::from_secs(1), "took {resumed:?}");
}

#[test]
fn never_targetable_processes_are_refused_and_not_signalled() {
    require_root();
    let sleep = Sleeper::new("60");
    let (stress, process) = drivers(&config(
        &[],
        Protected {
            names: vec!["^sleep$".into()],
            ..Protected::default()
        },
    ));
    let me = std::process::id();
    let parent = nix::unistd::getppid().as_raw() as u32;
    let cases = [
        (1, "pid 1 is the host's init process"),
        (me, "is the agent itself"),
        (parent, "is an ancestor of the agent"),
        (
            sleep.pid(),
            "matches the protected name pattern \"^sleep$\"",
        ),
    ];
    for (pid, want) in cases {
        let msg = refusal(process.plan(
            &ctx("refuse", 30),
            &process_fault(SIGKILL, ProcessSelector::Pid(pid), 0),
        ));
        assert!(msg.contains(want), "kill pid {pid}: {msg}");
        let msg = refusal(stress.plan(&ctx("refuse", 30), &cpu(Target::Pid(pid), 10, 1)));
        assert!(msg.contains(want), "cpu on pid {pid}: {msg}");
    }
    let msg = refusal(process.plan(
        &ctx("refuse", 30),
        &process_fault(
            ProcessAction::Pause,
            ProcessSelector::Name("^sleep$".into()),
            0,
        ),
    ));
    assert!(msg.contains("no targetable process matches"), "{msg}");
    assert!(msg.contains("protected name pattern"), "{msg}");
    assert_eq!(sleep.state(), 'S', "nothing was signalled");
    assert_ne!(state(parent), '?');
}

#[test]
fn a_container_id_selects_the_processes_of_its_cgroup() {
    require_root();
    // A cgroup named like a runtime's container scope, on the real kernel.
    let cid = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let parent = TestCgroup::new("pids");
    let scope = parent.child(&format!("docker-{cid}.scope"));
    let mut inside = Sleeper::new("60");
    let outside = Sleeper::new("60");
    faultline_agent::host::cgroup::join(&scope, inside.pid()).expect("move sleep into the scope");
    let container = ContainerRef {
        container_id: format!("docker://{cid}"),
        ..ContainerRef::default()
    };
    let (stress, process) = drivers(&config(&[], Protected::default()));

    // A stress worker on the container joins its cgroup.
    let fault = Applied::new(
        &stress,
        &ctx(&unique("cpu-ctr"), 30),
        &cpu(Target::Container(container.clone()), 5, 1),
    );
    let worker = recipe_pids(&fault.recipe)[0];
    let mut procs = faultline_agent::host::cgroup::procs(&scope);
    procs.sort_unstable();
    let mut want = vec![inside.pid(), worker];
    want.sort_unstable();
    assert_eq!(
        procs, want,
        "the worker is placed in the container's cgroup"
    );
    drop(fault);

    let _kill = Applied::new(
        &process,
        &ctx(&unique("kill-ctr"), 30),
        &process_fault(SIGKILL, ProcessSelector::Container(container), 0),
    );
    assert_eq!(
        inside.ended_by_signal(),
        Some(9),
        "the container's process is killed"
    );
    assert_eq!(
        outside.state(),
        'S',
        "a process outside the container is untouched"
    );
}
