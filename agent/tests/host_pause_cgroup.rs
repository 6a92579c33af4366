//! The pause guard is out of the agent's cgroup, on the real kernel (as root): a cgroup-wide
//! kill of a `faultline-agent run` holding a pause resumes the paused process within a second;
//! a kill of the target's own cgroup takes the guard with it and is not reported as a failure;
//! a revert whose SIGCONT cannot take effect (the process is ptrace-stopped, state `t`) fails
//! and keeps the journal entry until `recover` succeeds.
//!
//! Its own test binary, one test at a time: `run` and `recover` sweep away the guards of every
//! other user of the same agent binary.

mod host_support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::Health;
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::{scan, Protected};
use faultline_core::fault::{ProcessAction, ProcessSelector};
use host_support::standalone::*;
use host_support::*;
use nix::sys::{ptrace, wait};
use nix::unistd::Pid;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn pause_file(dir: &std::path::Path, pid: u32) -> std::path::PathBuf {
    let f = dir.join("pause.yaml");
    std::fs::write(
        &f,
        format!("kind: process\naction: pause\nselector: {{pid: {pid}}}\n"),
    )
    .expect("write the fault file");
    f
}

/// The live guard processes of a fault.
fn guards_of(fault_id: &str) -> Vec<u32> {
    let proc = ProcTable::new("/proc");
    scan::owned(&proc, std::path::Path::new(EXE))
        .into_iter()
        .filter(|o| o.role == "__guard" && o.fault_id == fault_id)
        .map(|o| o.stat.pid)
        .collect()
}

#[test]
fn a_cgroup_wide_kill_of_the_agent_resumes_the_paused_target_within_a_second() {
    require_root();
    let _s = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Sleeper::new("300");
    let group = V2Group::new();
    let faults = pause_file(dir.path(), target.pid());
    let state = dir.path().join("state");
    let mut agent = AgentRun::start(&faults, "60s", &state, &[], Some(&group));
    let id = agent.applied("process");
    assert_eq!(target.state(), 'T', "paused");
    let agent_pid = agent.child.id();
    assert!(
        group.procs().contains(&agent_pid),
        "the agent runs in {}: {:?}",
        group.path(),
        group.procs()
    );
    let guards = guards_of(&id);
    assert_eq!(guards.len(), 1, "one guard for one process: {guards:?}");
    let guard = guards[0];
    assert!(
        !group.procs().contains(&guard),
        "the guard left the agent's cgroup {}",
        group.path()
    );
    assert_eq!(
        v2_cgroup_of(guard),
        v2_cgroup_of(target.pid()),
        "the guard lives in the target's cgroup"
    );

    let t0 = Instant::now();
    let how = group.kill_all();
    // Polled every millisecond, for the measurement.
    let resumed = loop {
        if !matches!(target.state(), 'T' | 't') {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(3) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    println!(
        "killed the agent's whole cgroup {} ({how}): the paused target (pid {}) runs again \
         after {resumed:?} (state {})",
        group.path(),
        target.pid(),
        target.state()
    );
    let resumed = resumed.expect("the target stayed stopped after the agent's cgroup was killed");
    assert!(resumed <= Duration::from_secs(1), "took {resumed:?}");
    let (code, _) = agent.finish();
    assert_eq!(code, None, "the agent died of SIGKILL");
    assert!(
        wait_for(Duration::from_secs(2), || guards_of(&id)
            .is_empty()
            .then_some(()))
        .is_some(),
        "the guard exits once it has resumed the target"
    );

    // The journal still names the fault; recovery finds the process running and is done.
    let (code, out) = recover(&state, &[]);
    println!("recover: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&id),
        "recovery reverts the journaled pause: {out}"
    );
    assert!(matches!(target.state(), 'S' | 'R'));
}

#[test]
fn a_kill_of_the_targets_cgroup_takes_its_guard_and_is_no_failure() {
    require_root();
    let _s = serial();
    let mut target = Sleeper::new("300");
    let group = V2Group::new();
    faultline_agent::host::cgroup::join(&group.dir, target.pid()).expect("move the target");
    let (_, process) = drivers(&config(&[], Protected::default()));
    let mut fault = Applied::new(
        &process,
        &ctx(&unique("pause-tgt"), 60),
        &process_fault(ProcessAction::Pause, ProcessSelector::Pid(target.pid()), 0),
    );
    assert_eq!(target.state(), 'T');
    let guard = fault.recipe.data["guards"][0]["pid"]
        .as_u64()
        .expect("guard pid") as u32;
    let mut procs = group.procs();
    procs.sort_unstable();
    let mut want = vec![target.pid(), guard];
    want.sort_unstable();
    assert_eq!(procs, want, "the guard joined the target's cgroup");

    group.kill_all();
    assert_eq!(
        target.ended_by_signal(),
        Some(9),
        "the target died with its cgroup"
    );
    assert!(
        wait_for(Duration::from_secs(2), || matches!(state(guard), '?' | 'Z')
            .then_some(()))
        .is_some(),
        "the guard died with the target's cgroup"
    );
    match fault.health() {
        Health::Ok(c) => assert!(c.contains(&("exited".to_string(), 1)), "{c:?}"),
        h => panic!("nothing is left paused, so nothing is wrong: {h:?}"),
    }
    fault.revert();
}

/// Holds a process ptrace-stopped (state `t`: SIGCONT does not resume it) until dropped.
struct Traced(Pid);

impl Traced {
    fn attach(pid: u32) -> Traced {
        let pid = Pid::from_raw(pid as i32);
        ptrace::attach(pid).expect("PTRACE_ATTACH");
        let t = Traced(pid);
        let st = wait::waitpid(pid, Some(wait::WaitPidFlag::__WALL)).expect("waitpid the tracee");
        assert!(
            matches!(st, wait::WaitStatus::Stopped(..)),
            "the tracee stops: {st:?}"
        );
        t
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = ptrace::detach(self.0, None);
    }
}

#[test]
fn a_revert_that_cannot_resume_the_process_keeps_the_journal_entry() {
    require_root();
    let _s = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Sleeper::new("300");
    let faults = pause_file(dir.path(), target.pid());
    let state = dir.path().join("state");
    let mut agent = AgentRun::start(&faults, "3s", &state, &[], None);
    let id = agent.applied("process");
    assert_eq!(target.state(), 'T');
    let traced = Traced::attach(target.pid());
    assert_eq!(target.state(), 't', "ptrace-stopped");

    let (code, lines) = agent.finish();
    println!("run: {lines:#?}");
    assert_eq!(code, Some(1), "exit code {code:?}: {lines:#?}");
    let failed = format!(
        "revert-failed {id} process: revert failed: pid {} (sleep) is still stopped (state t) \
         after SIGCONT",
        target.pid()
    );
    assert!(lines.iter().any(|l| l.starts_with(&failed)), "{lines:#?}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("1 could not be reverted and stay journaled")),
        "{lines:#?}"
    );
    let (code, out) = recover(&state, &[]);
    println!("recover while traced: {out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stay journaled"), "{out}");

    drop(traced);
    let (code, out) = recover(&state, &[]);
    println!("recover after the tracer let go: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&id), "{out}");
    assert!(
        matches!(target.state(), 'S' | 'R'),
        "resumed: {}",
        target.state()
    );
    let (code, out) = recover(&state, &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing found"), "the journal is empty: {out}");
}
