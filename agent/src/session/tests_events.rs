//! Unsolicited fault statuses (deadline reverts from the fault engine) reach the coordinator:
//! at once while connected, after the next Welcome when they happened while disconnected.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_core::fault::FaultKind;
use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::coordinator_message::Msg as In;
use tokio::time::Instant;

use super::fake::*;
use crate::engine::fake::{FakeDriver, FakeWorld};
use crate::engine::{Driver, Engine, EngineConfig, Limits};
use crate::faults::RevertReason;

fn engine(dir: &std::path::Path) -> (Arc<Engine>, Arc<FakeWorld>) {
    let world = FakeWorld::new();
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(FakeDriver::new(
        world.clone(),
        &[FaultKind::Cpu],
        2,
    ))];
    let engine = Engine::open(
        EngineConfig::new(dir.join("journal"), Limits::default()),
        drivers,
    )
    .expect("engine");
    (Arc::new(engine), world)
}

fn cpu(id: &str, secs: u64) -> pb::ApplyFault {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "e1".into(),
        spec: Some(pb::FaultSpec {
            target: None,
            kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
                load_percent: 50,
                workers: 1,
            })),
        }),
        deadline_unix_ms: now + (secs * 1000) as i64,
        remaining_ms: secs * 1000,
        telemetry_sequence: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_reverts_are_sent_while_connected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, world) = engine(dir.path());
    let mut h = start_with(engine, vec![]).await;
    let mut conn = h.conn().await;
    assert_eq!(conn.hello().await.capabilities, ["cpu"]);
    conn.welcome("s1", LEASE).await;
    conn.send(In::Apply(cpu("f-1", 3))).await;
    let applied = conn.fault_status().await;
    assert_eq!(
        applied.state,
        pb::FaultState::Applied as i32,
        "{}",
        applied.error
    );
    assert_eq!(world.artifacts().len(), 2);
    let t0 = Instant::now();
    conn.renew(1).await;
    let s = conn.fault_status().await;
    assert_eq!(
        (s.fault_id.as_str(), s.state, s.reason),
        (
            "f-1",
            pb::FaultState::Reverted as i32,
            RevertReason::Deadline as i32
        )
    );
    assert!(t0.elapsed() <= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(world.artifacts().is_empty());
    h.agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn statuses_from_a_disconnected_time_are_sent_after_the_next_welcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, world) = engine(dir.path());
    let mut h = start_with(engine, vec![]).await;
    let mut conn = h.conn().await;
    conn.hello().await;
    conn.welcome("s1", LEASE).await;
    conn.send(In::Apply(cpu("f-1", 2))).await;
    assert_eq!(
        conn.fault_status().await.state,
        pb::FaultState::Applied as i32
    );
    conn.renew(1).await;
    drop(conn);
    // The agent reconnects; the coordinator answers only after the deadline passed (inside the
    // lease, so the revert is the deadline's).
    let mut conn = h.conn().await;
    conn.hello().await;
    tokio::time::sleep_until(Instant::now() + Duration::from_secs(2)).await;
    assert!(
        world.artifacts().is_empty(),
        "reverted at the deadline while disconnected"
    );
    conn.welcome("s2", LEASE).await;
    // The queued status is the first message after Welcome.
    let s = match conn.next().await {
        Out::FaultStatus(s) => s,
        other => panic!("expected the queued FaultStatus first, got {other:?}"),
    };
    assert_eq!(
        (s.fault_id.as_str(), s.state, s.reason),
        (
            "f-1",
            pb::FaultState::Reverted as i32,
            RevertReason::Deadline as i32
        )
    );
    h.agent.shutdown().await;
}
