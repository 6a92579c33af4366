//! Randomised coordinator crash trials with the real binaries (root: the agents run real cpu
//! and memory workers). The lease contract says that a fault exists on a node only while the
//! coordinator vouches for it. Each trial runs one experiment on two agents, SIGKILLs the
//! coordinator at a random moment of one point of its life (create, apply, running, abort,
//! revert: see [`kill::Point`]), sometimes wipes its data dir, restarts it after a random
//! 0..2 leases, and checks the invariant (see [`invariant`]) from the restart on: within
//! lease + 1 s of the restart, every live worker belongs to a fault of a running experiment
//! that still wants it, and when no experiment runs no worker exists.
//!
//! `FAULTLINE_TRIALS` (default 20) and `FAULTLINE_TRIAL_SEED` (default: from the clock, printed)
//! repeat a run; `FAULTLINE_TRIAL_POINTS=running,revert` keeps to some kill points, and
//! `FAULTLINE_TRIAL_VERBOSE=1` prints each experiment's log and targets as the coordinator has
//! them. A violation does not stop the run: every one is printed with its seed, trial,
//! kill point and what was left running, and the test fails at the end.

#[path = "coordinator_crash/invariant.rs"]
mod invariant;
#[path = "coordinator_crash/kill.rs"]
mod kill;
#[path = "coordinator_crash/report.rs"]
mod report;

use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_tests::now_unix_ms;
use faultline_tests::procs::require_root;
use faultline_tests::stack::{agents_connected, Stack};
use faultline_tests::trials::{Rng, TrialPlan};
use kill::Point;
use report::{line, ms, summary, violation, Trial};

/// Short, so a trial takes seconds: the agents' lease, and the coordinator's silence limit.
const LEASE: Duration = Duration::from_secs(2);
const AGENTS: [&str; 2] = ["tr-a", "tr-b"];
/// Longest a trial observes the restarted coordinator: its experiment (a few seconds long)
/// must be over by then.
const LIMIT: Duration = Duration::from_secs(25);
/// Two faults per agent, each with one worker.
const FAULTS: &str = "    - {kind: cpu, load: 5, workers: 1}\n    - {kind: memory, size: 8Mi}\n";
const FAULTS_PER_AGENT: usize = 2;

fn doc(name: &str, duration: Duration) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {}ms\n  targets:\n    mode: all\n  faults:\n{FAULTS}",
        duration.as_millis()
    )
}

/// The tests here start real workers and time how fast they go: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_anywhere_leaves_no_fault_running_unvouched() {
    let _serial = SERIAL.lock().await;
    require_root("coordinator crash trials (real cpu and memory workers)");
    let plan = TrialPlan::from_env("FAULTLINE_TRIALS", "FAULTLINE_TRIAL_SEED", 20, None);
    let mut rng = plan.rng();
    let only = kill_points();
    let bound = LEASE + Duration::from_secs(1);
    let mut stack = Stack::start(&AGENTS, LEASE);
    for a in AGENTS {
        stack.spawn_agent(a, "");
    }
    let started = Instant::now();
    let mut trials: Vec<Trial> = Vec::new();
    let mut points = Vec::new();
    for i in 0..plan.trials {
        // Every kill point equally often, in a random order.
        if points.is_empty() {
            points = only.clone();
            shuffle(&mut points, &mut rng);
        }
        let point = points.pop().expect("refilled");
        let t = trial(&mut stack, &mut rng, i, point, bound).await;
        eprintln!("{}", line(i, &t, bound));
        if !t.obs.violations.is_empty() {
            eprintln!("{}", violation(plan.seed, i, &t, &stack));
        }
        trials.push(t);
    }
    eprintln!(
        "{} trials (FAULTLINE_TRIAL_SEED={:#x}) in {:.1} s",
        plan.trials,
        plan.seed,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{}", summary(&trials, bound));
    let bad: Vec<String> = trials
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.obs.violations.is_empty())
        .map(|(i, t)| violation(plan.seed, i as u64, t, &stack))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} trials broke the lease contract:\n{}",
        bad.len(),
        plan.trials,
        bad.join("\n")
    );
}

/// The check can fail: an agent stopped (SIGSTOP) while it holds its faults cannot revert
/// them, so after a restart with a wiped store its workers run with nothing vouching for them,
/// and the observation reports each by fault id. Continued, the agent reverts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_reports_workers_nothing_vouches_for() {
    let _serial = SERIAL.lock().await;
    require_root("coordinator crash trials (real cpu and memory workers)");
    let bound = LEASE + Duration::from_secs(1);
    let mut stack = Stack::start(&["tr-c"], LEASE);
    stack.spawn_agent("tr-c", "");
    let name = "control";
    stack
        .run_experiment(&doc(name, Duration::from_secs(60)))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while kill::faults_up(&stack, name) < FAULTS_PER_AGENT {
        assert!(Instant::now() < deadline, "the faults did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frozen = kill::Frozen::stop(stack.agents[0].proc.pid());
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    std::fs::remove_dir_all(stack.coordinator_data()).expect("wipe the coordinator's data");
    let restart = Instant::now();
    let restart_unix_ms = now_unix_ms();
    stack.spawn_coordinator();
    let limit = bound + Duration::from_secs(1);
    let obs = invariant::observe(&stack, name, restart, restart_unix_ms, bound, limit).await;
    let continued = Instant::now();
    drop(frozen);
    let (at, strays) = obs
        .violations
        .first()
        .unwrap_or_else(|| panic!("the stopped agent's workers went unreported: {obs:?}"));
    let mut faults: Vec<&str> = strays.iter().map(|s| s.fault.as_str()).collect();
    faults.sort();
    assert_eq!(faults, ["control-tr-c-0", "control-tr-c-1"], "{strays:?}");
    assert!(
        strays.iter().all(|s| s.why.contains("no experiment")),
        "{strays:?}"
    );
    assert!(*at > bound, "reported at {at:?}, before the bound");
    assert_eq!(obs.held_after, None, "the invariant never held: {obs:?}");
    while kill::faults_up(&stack, name) > 0 {
        assert!(
            continued.elapsed() < bound,
            "the continued agent did not revert within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "control: {} stray workers reported {} after the restart; once continued, the agent reverted them in {}",
        strays.len(),
        ms(*at),
        ms(continued.elapsed())
    );
}

async fn trial(stack: &mut Stack, rng: &mut Rng, i: u64, point: Point, bound: Duration) -> Trial {
    let name = format!("trial-{i}");
    let duration = rng.between(Duration::from_secs(2), Duration::from_secs(4));
    let document = doc(&name, duration);
    fleet_free(stack, &document).await;
    let e = kill::Experiment {
        name: &name,
        document: &document,
        duration,
        faults: AGENTS.len() * FAULTS_PER_AGENT,
    };
    let kill::Killed { what, frozen } = kill::at(point, stack, rng, &e).await;
    let killed = Instant::now();
    let wiped = rng.one_in(4);
    if wiped {
        std::fs::remove_dir_all(stack.coordinator_data()).expect("wipe the coordinator's data");
    }
    let down = rng.between(Duration::ZERO, LEASE * 2);
    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
    let workers_at_restart = invariant::workers(stack).len();
    let restart = Instant::now();
    let restart_unix_ms = now_unix_ms();
    stack.spawn_coordinator();
    drop(frozen);
    let obs = invariant::observe(stack, &name, restart, restart_unix_ms, bound, LIMIT).await;
    if std::env::var_os("FAULTLINE_TRIAL_VERBOSE").is_some() {
        eprintln!("{}", report::record(stack, &name).await);
    }
    let kept = kept_through_restart(stack, &name).await;
    Trial {
        point,
        what,
        wiped,
        down,
        workers_at_restart,
        obs,
        kept,
    }
}

/// Waits until both agents are connected and the coordinator would accept `document` (no run
/// of an earlier trial holds the agents any more).
async fn fleet_free(stack: &Stack, document: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while agents_connected(stack.coord_metrics) < AGENTS.len() as f64 {
        assert!(Instant::now() < deadline, "the agents did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = stack.experiments("operator").await;
    loop {
        let dry = client
            .create(pb::CreateExperimentRequest {
                document: document.to_string(),
                dry_run: true,
                start: false,
            })
            .await;
        match dry {
            Ok(_) => return,
            Err(s) => assert!(
                Instant::now() < deadline,
                "the coordinator still refuses the next trial: {s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For a resumed experiment: its faults that lasted through the restart (neither reverted by
/// their agent's lease nor failed), and all its faults.
async fn kept_through_restart(stack: &Stack, name: &str) -> Option<(usize, usize)> {
    let mut client = stack.experiments("viewer").await;
    let e = client
        .get(pb::GetExperimentRequest { name: name.into() })
        .await
        .ok()?
        .into_inner();
    if !e.log.iter().any(|l| l.message.starts_with("resumed:")) {
        return None;
    }
    let kept = e
        .targets
        .iter()
        .filter(|t| {
            t.revert_reason != pb::RevertReason::Lease as i32
                && t.state != pb::FaultState::Failed as i32
        })
        .count();
    Some((kept, e.targets.len()))
}

/// Every kill point, or those named in FAULTLINE_TRIAL_POINTS (e.g. `running,revert`).
fn kill_points() -> Vec<Point> {
    let Ok(names) = std::env::var("FAULTLINE_TRIAL_POINTS") else {
        return Point::ALL.to_vec();
    };
    names
        .split(',')
        .map(|n| {
            Point::ALL
                .into_iter()
                .find(|p| p.name() == n.trim())
                .unwrap_or_else(|| {
                    panic!("FAULTLINE_TRIAL_POINTS: {n:?} is not one of create, apply, running, abort, revert")
                })
        })
        .collect()
}

fn shuffle(v: &mut [Point], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
