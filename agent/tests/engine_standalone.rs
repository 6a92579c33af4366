//! Standalone mode (`faultline-agent run`) in-process over fake drivers with paused time: the
//! lines it prints, the end of a run (deadline, Ctrl-C, a failing fault), and recovery of what
//! an earlier run left in the journal.

mod engine_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use faultline_agent::engine::fake::{FakeDriver, FakeWorld};
use faultline_agent::engine::{Driver, Limits};
use faultline_agent::standalone::{self, RunOptions, StandaloneError};
use faultline_agent::{FaultManager, RevertReason};

const FAULTS: &str =
    "kind: cpu\nload: 50\nworkers: 1\n---\nkind: process\naction: pause\nselector: {pid: 4242}\n";

fn drivers(world: &Arc<FakeWorld>) -> (Arc<FakeDriver>, Arc<FakeDriver>, Vec<Arc<dyn Driver>>) {
    let stress = Arc::new(FakeDriver::new(world.clone(), STRESS, 2));
    let process = Arc::new(FakeDriver::new(world.clone(), PROCESS, 1));
    let all: Vec<Arc<dyn Driver>> = vec![stress.clone(), process.clone()];
    (stress, process, all)
}

fn options(dir: &Path, faults: &str, secs: u64) -> RunOptions {
    let file = dir.join("faults.yaml");
    std::fs::write(&file, faults).expect("write faults");
    RunOptions {
        file,
        duration: Duration::from_secs(secs),
        state_dir: dir.join("state"),
        limits: Limits::default(),
        progress_every: Duration::from_secs(2),
    }
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The fault id of the line `applied <id> <kind> ...` for `kind`.
fn applied_id(out: &[String], kind: &str) -> String {
    out.iter()
        .filter_map(|l| l.strip_prefix("applied "))
        .find(|rest| rest.split_whitespace().nth(1) == Some(kind))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `applied <id> {kind}` line in {out:#?}"))
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn a_run_applies_reports_progress_and_reverts_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let (_, _, all) = drivers(&world);
    let opts = options(dir.path(), FAULTS, 5);
    let mut out = Vec::new();
    let outcome = standalone::run(&opts, all, &mut out, std::future::pending())
        .await
        .expect("run");
    let out = lines(&out);
    assert!(outcome.success(), "{outcome:?}\n{out:#?}");
    assert_eq!(
        (outcome.applied, outcome.reverted, outcome.failed),
        (2, 2, 0)
    );
    let cpu = applied_id(&out, "cpu");
    let process = applied_id(&out, "process");
    assert!(cpu.starts_with("run-") && cpu.ends_with("-1"), "{cpu}");
    assert_eq!(
        out[0],
        "recovery: nothing found (the journal is empty and the sweep found no orphans)"
    );
    assert_eq!(out[1], "applying 2 fault(s) for 5s");
    assert!(
        out[2].starts_with(&format!("applied {cpu} cpu (cpu 50% x 1)")),
        "{out:#?}"
    );
    let progress: Vec<&String> = out.iter().filter(|l| l.starts_with("progress ")).collect();
    assert_eq!(progress.len(), 2, "every 2 s of 5 s: {out:#?}");
    assert!(
        progress[0].starts_with("progress 2s elapsed, 3s remaining: ")
            && progress[0].contains(&format!("{cpu} cpu artifacts=2")),
        "{}",
        progress[0]
    );
    for id in [&cpu, &process] {
        assert!(
            out.contains(&format!("reverted {id} deadline")),
            "{id} reverted at the deadline: {out:#?}"
        );
    }
    assert!(out
        .last()
        .expect("summary")
        .starts_with("summary: 2 applied, 2 reverted, 0 failed in 5s"));
    assert!(world.artifacts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_reverts_early_with_reason_abort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let (_, _, all) = drivers(&world);
    let opts = options(dir.path(), FAULTS, 60);
    let stop = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        RevertReason::Abort
    };
    let mut out = Vec::new();
    let outcome = standalone::run(&opts, all, &mut out, stop)
        .await
        .expect("run");
    let out = lines(&out);
    assert!(outcome.success(), "{out:#?}");
    let cpu = applied_id(&out, "cpu");
    assert!(
        out.contains(&"stopping early (reason abort): reverting".to_string()),
        "{out:#?}"
    );
    assert!(out.contains(&format!("reverted {cpu} abort")), "{out:#?}");
    assert!(out.last().expect("summary").ends_with("in 3s"), "{out:#?}");
    assert!(world.artifacts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fault_that_cannot_be_applied_reverts_the_others_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let (_, process, all) = drivers(&world);
    process.refuse_plan("pid 4242 does not exist");
    let opts = options(dir.path(), FAULTS, 60);
    let mut out = Vec::new();
    let outcome = standalone::run(&opts, all, &mut out, std::future::pending())
        .await
        .expect("run");
    let out = lines(&out);
    assert!(!outcome.success());
    assert_eq!(
        (outcome.applied, outcome.failed, outcome.reverted),
        (1, 1, 1)
    );
    let cpu = applied_id(&out, "cpu");
    let failed = out
        .iter()
        .find(|l| l.starts_with("failed "))
        .unwrap_or_else(|| panic!("no failed line: {out:#?}"));
    assert!(
        failed.ends_with(" process: pid 4242 does not exist"),
        "{failed}"
    );
    assert!(out.contains(&format!("reverted {cpu} abort")), "{out:#?}");
    assert!(world.artifacts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_bad_document_changes_nothing_and_names_document_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let (_, _, all) = drivers(&world);
    let opts = options(
        dir.path(),
        "kind: cpu\nload: 50\n---\nkind: cpu\nload: 150\n",
        5,
    );
    let mut out = Vec::new();
    let err = standalone::run(&opts, all, &mut out, std::future::pending())
        .await
        .expect_err("load 150");
    assert!(matches!(err, StandaloneError::Faults(_)));
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{} document 2: load: 150 is outside 1..=100",
            opts.file.display()
        )),
        "{msg}"
    );
    assert!(out.is_empty(), "nothing printed, nothing applied");
    assert!(world.calls().is_empty());
    assert!(
        !opts.state_dir.exists(),
        "the state dir was not even created"
    );
}

#[tokio::test(start_paused = true)]
async fn what_a_crashed_run_left_is_recovered_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let state = dir.path().join("state");
    {
        // An earlier run that died with a fault applied: its engine is gone, its journal stays.
        let (_, _, all) = drivers(&world);
        let engine = faultline_agent::engine::Engine::open(
            faultline_agent::engine::EngineConfig::new(state.join("journal"), Limits::default()),
            all,
        )
        .expect("engine");
        let s = engine.apply(cpu("run-1-1", 600)).await;
        assert_eq!(state_of(&s), "FAULT_STATE_APPLIED", "{}", s.error);
        engine.close().await;
    }
    assert_eq!(world.artifacts().len(), 2);
    let (_, _, all) = drivers(&world);
    let mut out = Vec::new();
    let ok = standalone::recover(&state, Limits::default(), all, &mut out)
        .await
        .expect("recover");
    assert!(ok);
    assert_eq!(lines(&out), ["recovery: reverted fault run-1-1 (cpu)"]);
    assert!(world.artifacts().is_empty());
    let (_, _, all) = drivers(&world);
    let mut out = Vec::new();
    standalone::recover(&state, Limits::default(), all, &mut out)
        .await
        .expect("recover again");
    assert!(
        lines(&out)[0].contains("nothing found"),
        "{:?}",
        lines(&out)
    );
}

fn state_of(s: &faultline_proto::pb::FaultStatus) -> &'static str {
    state(s).as_str_name()
}

#[tokio::test(start_paused = true)]
async fn a_fault_that_cannot_be_reverted_stays_journaled_and_fails_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = FakeWorld::new();
    let (stress, _, all) = drivers(&world);
    stress.fail_reverts(100, 0);
    let opts = options(dir.path(), "kind: cpu\nload: 50\n", 2);
    let mut out = Vec::new();
    let outcome = standalone::run(&opts, all, &mut out, std::future::pending())
        .await
        .expect("run");
    let out = lines(&out);
    assert!(!outcome.success());
    assert_eq!(outcome.not_reverted, 1, "{out:#?}");
    let cpu = applied_id(&out, "cpu");
    assert!(
        out.iter()
            .any(|l| l.starts_with(&format!("revert-failed {cpu} cpu: revert failed: "))),
        "{out:#?}"
    );
    let summary = out.last().expect("summary");
    assert!(
        summary.contains(
            "1 could not be reverted and stay journaled: run `faultline-agent recover --state-dir"
        ),
        "{summary}"
    );
    // The next start (here: recover, with a driver that works again) finishes the job.
    let (_, _, all) = drivers(&world);
    let mut rec = Vec::new();
    assert!(
        standalone::recover(&opts.state_dir, Limits::default(), all, &mut rec)
            .await
            .expect("recover")
    );
    assert_eq!(
        lines(&rec),
        [format!("recovery: reverted fault {cpu} (cpu)")]
    );
    assert!(world.artifacts().is_empty());
}
