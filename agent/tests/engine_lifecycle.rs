//! The fault engine over fake drivers with paused time: apply/revert contracts, deadlines,
//! health failures, retried reverts, and start-up recovery.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use faultline_agent::engine::fake::{FakeCall, FakeOp};
use faultline_agent::engine::{EntryState, Health, Limits};
use faultline_agent::{FaultManager, RevertReason};
use faultline_proto::pb;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn deadline_reverts_at_the_deadline_and_reports_it() {
    let mut s = Setup::new(Limits::default());
    let t0 = Instant::now();
    let st = s.engine.apply(cpu("f-1", 10)).await;
    assert_eq!(state(&st), pb::FaultState::Applied, "{}", st.error);
    assert_eq!(
        s.world.artifacts().len(),
        3,
        "the fake cpu fault made 3 artifacts"
    );
    assert_eq!(s.engine.held().len(), 1);
    let ev = s.event(60).await;
    let took = t0.elapsed();
    assert_eq!(
        (ev.fault_id.as_str(), state(&ev), ev.reason),
        (
            "f-1",
            pb::FaultState::Reverted,
            RevertReason::Deadline as i32
        )
    );
    assert_eq!(ev.experiment_id, "exp-1");
    assert!(
        took > Duration::from_millis(9_900) && took <= Duration::from_secs(10),
        "reverted after {took:?}, the deadline was 10 s"
    );
    assert!(s.world.artifacts().is_empty(), "{:?}", s.world.artifacts());
    assert!(s.engine.faults().is_empty(), "the journal is empty");
    assert!(s.engine.held().is_empty());
    assert_eq!(
        ev.counters.get("artifacts"),
        Some(&3),
        "the last health counters come with the status"
    );
}

#[tokio::test(start_paused = true)]
async fn apply_twice_is_one_fault() {
    let s = Setup::new(Limits::default());
    let first = s.engine.apply(cpu("f-1", 60)).await;
    let second = s.engine.apply(cpu("f-1", 60)).await;
    assert_eq!(state(&first), pb::FaultState::Applied);
    assert_eq!(state(&second), pb::FaultState::Applied);
    assert_eq!(
        first.at_unix_ms, second.at_unix_ms,
        "the same fault, applied once"
    );
    assert_eq!(
        s.changes(),
        vec![FakeCall::Plan("f-1".into()), FakeCall::Apply("f-1".into())]
    );
    assert_eq!(s.engine.faults().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reverting_an_unknown_fault_is_already_gone() {
    let s = Setup::new(Limits::default());
    let st = s.engine.revert("nope".into(), RevertReason::Abort).await;
    assert_eq!(state(&st), pb::FaultState::Reverted);
    assert_eq!(st.reason, RevertReason::Abort as i32);
    assert_eq!(st.error, "already gone");
    assert!(
        s.world.calls().is_empty(),
        "nothing was asked of any driver"
    );
}

#[tokio::test(start_paused = true)]
async fn revert_reports_reason_and_removes_everything() {
    let s = Setup::new(Limits::default());
    s.engine.apply(cpu("f-1", 60)).await;
    s.engine
        .apply(apply(
            "f-2",
            "{kind: process, action: pause, selector: {pid: 4242}}",
            60,
        ))
        .await;
    assert_eq!(s.world.artifacts().len(), 5);
    let st = s.engine.revert("f-2".into(), RevertReason::Abort).await;
    assert_eq!(
        (state(&st), st.reason, st.error.as_str()),
        (pb::FaultState::Reverted, RevertReason::Abort as i32, "")
    );
    assert_eq!(
        s.world.fault_ids(),
        ["f-1".to_string()].into_iter().collect()
    );
    let all = s.engine.revert_all(RevertReason::Lease).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].fault_id.as_str(), all[0].reason),
        ("f-1", RevertReason::Lease as i32)
    );
    assert!(s.world.artifacts().is_empty());
    assert!(s.engine.faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_revert_stays_journaled_and_is_retried() {
    let mut s = Setup::new(Limits::default());
    s.engine.apply(cpu("f-1", 600)).await;
    s.stress.fail_reverts(2, 1);
    let st = s.engine.revert("f-1".into(), RevertReason::Abort).await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    assert!(
        st.error
            .starts_with("revert failed: revert failed at step 1; the fault stays in the journal"),
        "{}",
        st.error
    );
    let f = s.engine.faults();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].state, EntryState::RevertFailed);
    assert_eq!(
        s.engine.held().len(),
        1,
        "a fault whose revert failed is still held"
    );
    assert_eq!(
        s.world.artifacts().len(),
        2,
        "step 0 was undone, the rest is still there"
    );
    // The retry timer tries again after 5 s (fails once more), then succeeds after 10 s.
    let t0 = Instant::now();
    let ev = s.event(60).await;
    assert_eq!(
        (ev.fault_id.as_str(), state(&ev), ev.reason),
        ("f-1", pb::FaultState::Reverted, RevertReason::Abort as i32),
        "the retried revert reports the first reason"
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    assert!(s.world.artifacts().is_empty());
    assert!(s.engine.faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn revert_all_retries_failed_reverts_too() {
    let s = Setup::new(Limits::default());
    s.engine.apply(cpu("f-1", 600)).await;
    s.stress.fail_reverts(1, 0);
    let st = s.engine.revert("f-1".into(), RevertReason::Abort).await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    let all = s.engine.revert_all(RevertReason::Shutdown).await;
    assert_eq!(all.len(), 1);
    assert_eq!(state(&all[0]), pb::FaultState::Reverted);
    assert!(s.world.artifacts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_health_check_reports_failed_and_reverts() {
    let mut s = Setup::new(Limits::default());
    s.engine
        .apply(apply("f-1", "{kind: memory, size: 512Mi}", 600))
        .await;
    s.engine.apply(cpu("f-2", 600)).await;
    s.stress.set_health(
        "f-1",
        Health::Failed {
            error: "oom_killed".into(),
            counters: vec![("oom_killed".into(), 1)],
        },
    );
    let t0 = Instant::now();
    let ev = s.event(5).await;
    assert!(
        t0.elapsed() <= Duration::from_millis(250),
        "polled every 250 ms"
    );
    assert_eq!(
        (ev.fault_id.as_str(), state(&ev), ev.error.as_str()),
        ("f-1", pb::FaultState::Failed, "oom_killed")
    );
    assert_eq!(ev.counters.get("oom_killed"), Some(&1));
    assert_eq!(
        s.world.fault_ids(),
        ["f-2".to_string()].into_iter().collect()
    );
    assert_eq!(s.engine.faults().len(), 1, "only f-2 is left");
}

#[tokio::test(start_paused = true)]
async fn a_half_applied_fault_is_reverted_and_failed() {
    let s = Setup::new(Limits::default());
    s.stress.fail_apply_at(2);
    let st = s.engine.apply(cpu("f-1", 60)).await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    assert_eq!(st.error, "apply failed at step 2");
    assert!(
        s.world.artifacts().is_empty(),
        "the 2 artifacts made were removed"
    );
    assert!(s.engine.faults().is_empty());

    let s = Setup::new(Limits::default());
    s.stress.panic_apply_at(1);
    let st = s.engine.apply(cpu("f-2", 60)).await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    assert!(st.error.contains("panicked"), "{}", st.error);
    assert!(s.world.artifacts().is_empty());
    assert!(s.engine.faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_driver_refusal_changes_nothing() {
    let s = Setup::new(Limits::default());
    s.process
        .refuse_plan("pid 4242 is protected (limits.protected_pids)");
    let st = s
        .engine
        .apply(apply(
            "f-1",
            "{kind: process, action: kill, selector: {pid: 4242}}",
            60,
        ))
        .await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    assert_eq!(st.error, "pid 4242 is protected (limits.protected_pids)");
    assert_eq!(s.changes(), vec![FakeCall::Plan("f-1".into())]);
    assert!(s.engine.faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn capabilities_are_available_and_allowed_kinds() {
    let s = Setup::new(Limits::default());
    assert_eq!(s.engine.capabilities(), ["cpu", "memory", "io", "process"]);
    let mut limits = Limits::default();
    limits
        .allowed_kinds
        .remove(&faultline_core::fault::FaultKind::Memory);
    let dir = tempfile::tempdir().expect("tempdir");
    let world = faultline_agent::engine::fake::FakeWorld::new();
    let stress = std::sync::Arc::new(faultline_agent::engine::fake::FakeDriver::new(
        world.clone(),
        STRESS,
        1,
    ));
    let process = std::sync::Arc::new(faultline_agent::engine::fake::FakeDriver::new(
        world, PROCESS, 1,
    ));
    process.set_unavailable("no /proc");
    let drivers: Vec<std::sync::Arc<dyn faultline_agent::engine::Driver>> = vec![stress, process];
    let e = faultline_agent::engine::Engine::open(
        faultline_agent::engine::EngineConfig::new(dir.path().join("j"), limits),
        drivers,
    )
    .expect("open");
    assert_eq!(e.capabilities(), ["cpu", "io"]);
    let st = e
        .apply(apply(
            "f-1",
            "{kind: process, action: pause, selector: {pid: 9}}",
            60,
        ))
        .await;
    assert_eq!(
        st.error,
        "fault kind process is unavailable on this host: no /proc"
    );
    let st = e
        .apply(apply("f-2", "{kind: network, delay: 10ms}", 60))
        .await;
    assert!(
        st.error
            .starts_with("fault kind network is not in the agent's allowed_kinds")
            || st.error.contains("not supported"),
        "{}",
        st.error
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_reverts_the_journal_then_sweeps() {
    let s = Setup::new(Limits::default());
    s.engine.apply(cpu("f-1", 600)).await;
    // A crash in the middle of the next apply: the journal holds a planned entry and one artifact.
    s.stress.crash_at(FakeOp::Apply, 1);
    let engine = &s.engine;
    tokio::select! {
        _ = engine.apply(cpu("f-2", 600)) => panic!("the crashed apply returned"),
        _ = s.world.crashed() => {}
    }
    s.world.release();
    s.world.add_orphan("lost-1/0");
    assert_eq!(s.world.fault_ids().len(), 3);
    let mut s = s.restart().await;
    let held = s.engine.faults();
    assert_eq!(
        held.iter()
            .map(|f| (f.fault_id.as_str(), f.state))
            .collect::<Vec<_>>(),
        vec![("f-1", EntryState::Applied), ("f-2", EntryState::Planned)],
        "the new engine starts from the journal"
    );
    let rec = s.engine.recover().await;
    assert_eq!(
        rec.lines,
        vec![
            "recovery: reverted fault f-1 (cpu)".to_string(),
            "recovery: reverted fault f-2 (cpu)".to_string(),
            "sweep: removed orphan artifact lost-1/0".to_string(),
        ]
    );
    assert!(rec
        .statuses
        .iter()
        .all(|st| st.reason == RevertReason::Recovery as i32
            && state(st) == pb::FaultState::Reverted));
    assert!(s.world.artifacts().is_empty());
    assert!(s.engine.faults().is_empty());
    let again = s.engine.recover().await;
    assert!(again.found_nothing(), "{:?}", again.lines);
    assert!(
        s.events.try_recv().is_err(),
        "recovery answers directly, not as events"
    );
}
