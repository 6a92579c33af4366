//! Helpers for the engine tests: an engine over fake drivers on a temporary journal, and wire
//! requests built from fault documents.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_agent::engine::fake::{FakeCall, FakeDriver, FakeWorld};
use faultline_agent::engine::{Driver, Engine, EngineConfig, Limits};
use faultline_core::fault::doc::parse_fault;
use faultline_core::fault::FaultKind;
use faultline_proto::convert::spec_to_pb;
use faultline_proto::pb;
use tokio::sync::mpsc;

pub const STRESS: &[FaultKind] = &[FaultKind::Cpu, FaultKind::Memory, FaultKind::Io];
pub const PROCESS: &[FaultKind] = &[FaultKind::Process];

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// An apply request for the fault document `doc`, due `secs` from now.
pub fn apply(id: &str, doc: &str, secs: u64) -> pb::ApplyFault {
    let spec = parse_fault(doc).unwrap_or_else(|e| panic!("test document {doc}: {e}"));
    pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "exp-1".into(),
        spec: Some(spec_to_pb(&spec)),
        deadline_unix_ms: now_ms() + (secs * 1000) as i64,
        remaining_ms: secs * 1000,
        telemetry_sequence: 0,
    }
}

pub fn cpu(id: &str, secs: u64) -> pb::ApplyFault {
    apply(id, "{kind: cpu, load: 50, workers: 1}", secs)
}

/// An engine with one fake stress driver and one fake process driver sharing `world`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub world: Arc<FakeWorld>,
    pub stress: Arc<FakeDriver>,
    pub process: Arc<FakeDriver>,
    pub engine: Engine,
    pub events: mpsc::Receiver<pb::FaultStatus>,
}

pub fn journal_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("journal")
}

impl Setup {
    pub fn new(limits: Limits) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = FakeWorld::new();
        Self::open(dir, world, limits)
    }

    /// An engine over fresh fake drivers on an existing journal and world (a restart).
    pub fn open(dir: tempfile::TempDir, world: Arc<FakeWorld>, limits: Limits) -> Setup {
        let stress = Arc::new(FakeDriver::new(world.clone(), STRESS, 3));
        let process = Arc::new(FakeDriver::new(world.clone(), PROCESS, 2));
        let drivers: Vec<Arc<dyn Driver>> = vec![stress.clone(), process.clone()];
        let engine = Engine::open(EngineConfig::new(journal_dir(&dir), limits), drivers)
            .expect("open the engine");
        use faultline_agent::FaultManager;
        let events = engine.take_events().expect("events");
        Setup {
            dir,
            world,
            stress,
            process,
            engine,
            events,
        }
    }

    /// Drops the engine (as a restart would) and opens a new one on the same journal and world.
    pub async fn restart(self) -> Setup {
        let Setup {
            dir, world, engine, ..
        } = self;
        let limits = engine.limits().clone();
        engine.close().await;
        Self::open(dir, world, limits)
    }

    /// The next unsolicited status, within `secs` (virtual time under a paused clock).
    pub async fn event(&mut self, secs: u64) -> pb::FaultStatus {
        tokio::time::timeout(Duration::from_secs(secs), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no unsolicited status within {secs} s"))
            .expect("event channel closed")
    }

    /// Plan and apply calls the fake drivers received.
    pub fn changes(&self) -> Vec<FakeCall> {
        self.world
            .calls()
            .into_iter()
            .filter(|c| matches!(c, FakeCall::Plan(_) | FakeCall::Apply(_)))
            .collect()
    }
}

pub fn state(s: &pb::FaultStatus) -> pb::FaultState {
    pb::FaultState::try_from(s.state).expect("a known state")
}
