//! A hung driver wedges nothing else: while one fault's apply is stuck in its driver, another
//! fault applies and reverts at once, and revert-all does not wait for the stuck one; the stuck
//! call counts as failed at the driver time limit, and its fault is undone when it returns.

mod engine_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_support::*;
use faultline_agent::engine::fake::{FakeDriver, FakeOp, FakeWorld};
use faultline_agent::engine::{Driver, Engine, EngineConfig, Limits};
use faultline_agent::faults::RevertReason;
use faultline_agent::FaultManager;
use faultline_proto::pb;

const LIMIT: Duration = Duration::from_millis(800);

fn pause(id: &str) -> pb::ApplyFault {
    apply(
        id,
        "{kind: process, action: pause, selector: {pid: 4242}}",
        60,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_apply_delays_no_other_fault_and_fails_at_the_time_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let stress = Arc::new(FakeDriver::new(world.clone(), STRESS, 2));
    let process = Arc::new(FakeDriver::new(world.clone(), PROCESS, 2));
    let drivers: Vec<Arc<dyn Driver>> = vec![stress.clone(), process.clone()];
    let mut config = EngineConfig::new(journal_dir(&dir), Limits::default());
    config.driver_timeout = LIMIT;
    let engine = Arc::new(Engine::open(config, drivers).expect("engine"));

    let s = engine.apply(cpu("fast", 60)).await;
    assert_eq!(state(&s), pb::FaultState::Applied);

    // The process driver hangs in apply, after creating its first artifact (as a netns open
    // on a FIFO would, forever).
    process.hang_at(FakeOp::Apply, 1);
    let hung = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (engine.apply(pause("stuck")).await, t.elapsed())
        })
    };
    tokio::time::timeout(Duration::from_secs(10), world.crashed())
        .await
        .expect("the apply reached the driver and hung");

    // Another fault's revert does not wait for it.
    let t = Instant::now();
    let r = engine.revert("fast".into(), RevertReason::Abort).await;
    let took = t.elapsed();
    assert_eq!(state(&r), pb::FaultState::Reverted);
    eprintln!("revert of another fault while one apply hangs: {took:?}");
    assert!(
        took < Duration::from_millis(200),
        "the revert waited {took:?}"
    );
    // Nor does a new apply.
    let t = Instant::now();
    let s = engine.apply(cpu("fast-2", 60)).await;
    assert_eq!(state(&s), pb::FaultState::Applied);
    assert!(t.elapsed() < Duration::from_millis(200));

    // The stuck apply counts as failed at the time limit, and what it did is undone.
    let (s, took) = hung.await.expect("join");
    assert_eq!(state(&s), pb::FaultState::Failed, "{s:?}");
    assert!(
        s.error.contains("did not return within"),
        "the error says why: {}",
        s.error
    );
    assert!(took >= LIMIT && took < LIMIT * 3, "failed after {took:?}");
    assert!(
        !world.fault_ids().contains("stuck"),
        "the stuck apply's artifact was undone: {:?}",
        world.artifacts()
    );
    // The stuck call returns at last and finishes its apply: what it did is undone again.
    world.release();
    let until = Instant::now() + Duration::from_secs(5);
    while world.fault_ids().contains("stuck") {
        assert!(
            Instant::now() < until,
            "the late apply was not undone: {:?}",
            world.artifacts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let all = engine.revert_all(RevertReason::Shutdown).await;
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(all.len(), 1, "only fast-2 is held: {all:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(world.artifacts().is_empty(), "{:?}", world.artifacts());
}
