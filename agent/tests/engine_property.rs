//! Property test of the engine's crash safety with a fake driver: random sequences (seeded) of
//! apply, revert, revert-all, failing drivers, crashes at random steps of apply and revert
//! (the "process" stops dead and a new engine opens the same journal), and recoveries. After
//! every step, every artifact that exists is named by the journal; after a final recovery,
//! nothing is left: no artifact, no journal entry, and the sweep had nothing to do.
//!
//! `FAULTLINE_PROPERTY_CASES` (default 500) and `FAULTLINE_PROPERTY_SEED` change the run.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_agent::engine::fake::{FakeDriver, FakeOp, FakeWorld};
use faultline_agent::engine::{Driver, Engine, EngineConfig, Journal, Limits};
use faultline_agent::{FaultManager, RevertReason};
use faultline_core::fault::doc::parse_fault;
use faultline_core::fault::FaultKind;
use faultline_proto::convert::spec_to_pb;
use faultline_proto::pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KINDS: &[FaultKind] = &[
    FaultKind::Cpu,
    FaultKind::Memory,
    FaultKind::Io,
    FaultKind::Process,
];
const ARTIFACTS: usize = 3;

/// One life of the agent process: a runtime, a driver, an engine.
struct Incarnation {
    rt: tokio::runtime::Runtime,
    driver: Arc<FakeDriver>,
    engine: Option<Engine>,
}

struct Crashed;

impl Incarnation {
    fn start(journal: &Path, world: &Arc<FakeWorld>) -> Incarnation {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let driver = Arc::new(FakeDriver::new(world.clone(), KINDS, ARTIFACTS));
        let drivers: Vec<Arc<dyn Driver>> = vec![driver.clone()];
        let mut config = EngineConfig::new(
            journal.to_path_buf(),
            Limits {
                max_concurrent_faults: 1000,
                ..Limits::default()
            },
        );
        // No timer may act on its own: every change comes from the sequence.
        config.health_every = Duration::from_secs(3600);
        config.retry_every = Duration::from_secs(3600);
        let engine = rt
            .block_on(async { Engine::open(config, drivers) })
            .unwrap_or_else(|e| panic!("reopen the journal: {e}"));
        Incarnation {
            rt,
            driver,
            engine: Some(engine),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine alive")
    }

    /// Runs one engine call; `Err(Crashed)` when the driver "died" during it.
    fn call<T>(&self, world: &FakeWorld, fut: impl Future<Output = T>) -> Result<T, Crashed> {
        self.rt.block_on(async {
            tokio::select! {
                out = fut => Ok(out),
                _ = world.crashed() => Err(Crashed),
            }
        })
    }

    /// The process dies: nothing of it runs any more (blocked driver calls return without
    /// effect once released), and its journal is closed as a kill would close it.
    fn die(mut self, world: &FakeWorld) {
        world.release();
        drop(self.engine.take());
        drop(self.rt);
    }

    fn journaled(&self) -> BTreeSet<String> {
        self.engine()
            .faults()
            .into_iter()
            .map(|f| f.fault_id)
            .collect()
    }
}

fn spec(rng: &mut StdRng) -> pb::FaultSpec {
    let doc = match rng.random_range(0..4) {
        0 => "{kind: cpu, load: 50, workers: 2}",
        1 => "{kind: memory, size: 64Mi}",
        2 => "{kind: io, path: /tmp, workers: 1, size: 1Mi}",
        _ => "{kind: process, action: pause, selector: {pid: 4242}}",
    };
    spec_to_pb(&parse_fault(doc).expect("test document"))
}

fn deadline() -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    now + 600_000
}

/// Every artifact that exists belongs to a journaled fault (journal before change).
fn check_covered(inc: &Incarnation, world: &FakeWorld, log: &[String]) -> Result<(), String> {
    let journaled = inc.journaled();
    let loose: Vec<String> = world
        .fault_ids()
        .into_iter()
        .filter(|id| !journaled.contains(id))
        .collect();
    if loose.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "artifacts of {loose:?} exist but the journal ({journaled:?}) does not name them; steps:\n{}",
            log.join("\n")
        ))
    }
}

fn run_case(seed: u64) -> Result<usize, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // On tmpfs when there is one: the journal's fsyncs are what this test spends its time on.
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let journal = dir.path().join("journal");
    let world = FakeWorld::new();
    let mut inc = Incarnation::start(&journal, &world);
    let mut log: Vec<String> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut crashes = 0;
    let steps = rng.random_range(4..24);
    for step in 0..steps {
        let roll = rng.random_range(0..100);
        // Sometimes the next driver call misbehaves.
        let trouble = rng.random_range(0..100);
        let at = rng.random_range(0..=ARTIFACTS);
        let result: Result<(), Crashed> = match roll {
            0..=34 => {
                let id = format!("f-{step}");
                ids.push(id.clone());
                let what = match trouble {
                    0..=24 => {
                        inc.driver.crash_at(FakeOp::Apply, at);
                        format!("apply {id} crashing at step {at}")
                    }
                    25..=34 => {
                        inc.driver.fail_apply_at(at.min(ARTIFACTS - 1));
                        format!("apply {id} failing at step {at}")
                    }
                    35..=39 => {
                        inc.driver.fail_reverts(1, at.min(ARTIFACTS - 1));
                        inc.driver.fail_apply_at(at.min(ARTIFACTS - 1));
                        format!("apply {id} failing, and its undo failing too")
                    }
                    _ => format!("apply {id}"),
                };
                log.push(what);
                let req = pb::ApplyFault {
                    fault_id: id,
                    experiment_id: "prop".into(),
                    spec: Some(spec(&mut rng)),
                    deadline_unix_ms: deadline(),
                    remaining_ms: 0,
                    telemetry_sequence: 0,
                };
                inc.call(&world, inc.engine().apply(req)).map(|_| ())
            }
            35..=59 => {
                let id = if ids.is_empty() || trouble < 5 {
                    "never-applied".to_string()
                } else {
                    ids[rng.random_range(0..ids.len())].clone()
                };
                let known = inc.journaled().contains(&id);
                let what = match trouble {
                    0..=24 if known => {
                        inc.driver.crash_at(FakeOp::Revert, at);
                        format!("revert {id} crashing at step {at}")
                    }
                    25..=44 if known => {
                        inc.driver.fail_reverts(1, at.min(ARTIFACTS - 1));
                        format!("revert {id} failing at step {at}")
                    }
                    _ => format!("revert {id}"),
                };
                log.push(what);
                inc.call(&world, inc.engine().revert(id, RevertReason::Abort))
                    .map(|_| ())
            }
            60..=67 => {
                log.push("revert all".into());
                inc.call(&world, inc.engine().revert_all(RevertReason::Lease))
                    .map(|_| ())
            }
            68..=81 => {
                log.push("kill the agent between operations".into());
                Err(Crashed)
            }
            82..=91 => {
                log.push("recover".into());
                inc.call(&world, inc.engine().recover()).map(|_| ())
            }
            _ => {
                let Some(id) = ids.last().cloned() else {
                    continue;
                };
                log.push(format!("apply {id} again"));
                let req = pb::ApplyFault {
                    fault_id: id,
                    experiment_id: "prop".into(),
                    spec: Some(spec(&mut rng)),
                    deadline_unix_ms: deadline(),
                    remaining_ms: 0,
                    telemetry_sequence: 0,
                };
                inc.call(&world, inc.engine().apply(req)).map(|_| ())
            }
        };
        match result {
            // A scripted failure that was not reached must not fire later.
            Ok(()) => inc.driver.disarm(),
            Err(Crashed) => {
                crashes += 1;
                log.push("  -> the agent died; a new one opens the journal".into());
                inc.die(&world);
                inc = Incarnation::start(&journal, &world);
            }
        }
        check_covered(&inc, &world, &log)?;
    }
    // The final start-up: a healthy agent recovers.
    inc.die(&world);
    let inc = Incarnation::start(&journal, &world);
    let rec = inc
        .call(&world, inc.engine().recover())
        .map_err(|_| "the healthy driver crashed".to_string())?;
    let left = world.artifacts();
    if !left.is_empty() {
        return Err(format!(
            "artifacts left after recovery: {left:?}; steps:\n{}",
            log.join("\n")
        ));
    }
    if let Some(swept) = rec.lines.iter().find(|l| l.starts_with("sweep:")) {
        return Err(format!(
            "the journal missed an artifact that only the sweep found ({swept}); steps:\n{}",
            log.join("\n")
        ));
    }
    inc.die(&world);
    let j = Journal::open(&journal).map_err(|e| format!("{e}; steps:\n{}", log.join("\n")))?;
    if !j.is_empty() {
        let (entries, _) = j.load().map_err(|e| e.to_string())?;
        return Err(format!(
            "journal not empty after recovery: {:?}; steps:\n{}",
            entries.iter().map(|e| &e.fault_id).collect::<Vec<_>>(),
            log.join("\n")
        ));
    }
    Ok(crashes)
}

#[test]
fn random_sequences_with_crashes_leave_nothing_behind() {
    let cases: u64 = std::env::var("FAULTLINE_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seed: u64 = std::env::var("FAULTLINE_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_fa17);
    let mut crashes = 0;
    for case in 0..cases {
        match run_case(seed + case) {
            Ok(n) => crashes += n,
            Err(e) => panic!(
                "case {case} (FAULTLINE_PROPERTY_SEED={}, 1 case): {e}",
                seed + case
            ),
        }
    }
    eprintln!("{cases} cases, {crashes} simulated crashes, nothing left behind");
    assert!(
        crashes >= cases as usize / 2,
        "the sequences must crash often: {crashes}"
    );
}
