//! Retention: what is older than the limit is gone after a prune; what is recent, running,
//! pending or still being reverted stays.

use faultline_core::experiment::Phase;

use super::retention::{prune, Pruned, Retention, PRUNE_CHUNK};
use super::*;
use crate::experiments::record::{ExperimentRecord, PlanRecord};
use crate::experiments::Table;

const DAY_MS: i64 = 24 * 3600 * 1000;
const NOW: i64 = 1_800_000_000_000;

fn entry(at: i64, n: usize) -> AuditRecord {
    AuditRecord {
        at_unix_ms: at,
        identity: "admin/admin".into(),
        action: "Fleet.HaltAll".into(),
        detail: format!("entry {n}"),
        allowed: true,
    }
}

fn experiment(name: &str, phase: Phase, ended: i64) -> ExperimentRecord {
    ExperimentRecord {
        id: name.into(),
        name: name.into(),
        phase,
        document: String::new(),
        created_by: "operator/operator".into(),
        created_unix_ms: NOW - 200 * DAY_MS,
        started_unix_ms: NOW - 200 * DAY_MS,
        ended_unix_ms: ended,
        duration_ms: 60_000,
        guard_interval_ms: 1000,
        on_target_failure: "abort".into(),
        verdict_reason: String::new(),
        plan: PlanRecord::default(),
        guards: vec![],
        targets: vec![],
        guard_timeline: Default::default(),
        abort: None,
        telemetry: Default::default(),
        log: Default::default(),
        gaps: vec![],
        hypothesis: None,
        impact: vec![],
        findings: vec![],
        pod_kills: Vec::new(),
    }
}

fn details(store: &dyn Store) -> Vec<String> {
    let mut d: Vec<String> = store
        .audit(usize::MAX)
        .expect("audit")
        .into_iter()
        .map(|e| e.detail)
        .collect();
    d.reverse();
    d
}

#[test]
fn audit_entries_older_than_the_age_or_beyond_the_count_go_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open");
    for (n, at) in [
        NOW - 100 * DAY_MS,
        NOW - 91 * DAY_MS,
        NOW - 89 * DAY_MS,
        NOW - 1,
        NOW,
    ]
    .into_iter()
    .enumerate()
    {
        store.append_audit(&entry(at, n)).expect("append");
    }
    assert_eq!(store.audit_len().expect("len"), 5);
    // By age: older than 90 days.
    let removed = store
        .prune_audit(NOW - 90 * DAY_MS, 1_000, 100)
        .expect("prune");
    assert_eq!(removed, 2);
    assert_eq!(details(&store), ["entry 2", "entry 3", "entry 4"]);
    // By count: at most 2, the oldest go; at most `max_remove` per call.
    assert_eq!(store.prune_audit(0, 1, 1).expect("prune"), 1);
    assert_eq!(details(&store), ["entry 3", "entry 4"]);
    assert_eq!(store.prune_audit(0, 2, 100).expect("prune"), 0);
    assert_eq!(store.audit_len().expect("len"), 2);
    store.close().expect("close");
    // The count is right after a reopen too.
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.audit_len().expect("len"), 2);
    assert!(store.remove_experiment("nothing").is_ok_and(|gone| !gone));
}

#[tokio::test]
async fn a_prune_removes_old_history_and_keeps_recent_running_and_pending_experiments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreHandle::open(dir.path()).await.expect("open");
    // 25,000 audit entries older than 90 days (more than one chunk), 3 recent ones.
    store
        .write("seed", |s| {
            for n in 0..25_000 {
                s.append_audit(&entry(NOW - 120 * DAY_MS + n as i64, n))?;
            }
            for n in 0..3 {
                s.append_audit(&entry(NOW - DAY_MS + n, 100_000 + n as usize))?;
            }
            Ok(())
        })
        .await
        .expect("seed");
    let stored = [
        experiment("old-completed", Phase::Completed, NOW - 40 * DAY_MS),
        experiment("old-interrupted", Phase::Interrupted, NOW - 31 * DAY_MS),
        experiment("recent-aborted", Phase::Aborted, NOW - DAY_MS),
        experiment("recent-failed", Phase::Failed, NOW - 2 * DAY_MS),
        // Never pruned, however old: created 200 days ago and still pending or running.
        experiment("old-pending", Phase::Pending, 0),
        experiment("old-running", Phase::Running, 0),
    ];
    for rec in &stored {
        store.put_experiment_durable(rec).await.expect("seed");
    }
    let table = Table::default();
    let running = table.recover(&store).await.expect("recover");
    assert_eq!(running.len(), 1);
    table.set_phase("old-running", Phase::Running);

    let pruned = prune(&store, &table, &Retention::default(), NOW)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            audit_entries: 25_000,
            experiments: 2
        }
    );
    const { assert!(25_000 > PRUNE_CHUNK, "pruned in more than one request") };
    let audit = store.audit(100).await.expect("audit");
    let kept: Vec<&str> = audit.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(kept, ["entry 100002", "entry 100001", "entry 100000"]);
    let names =
        |recs: Vec<ExperimentRecord>| -> Vec<String> { recs.into_iter().map(|r| r.name).collect() };
    assert_eq!(
        names(store.experiments().await.expect("experiments")),
        [
            "old-pending",
            "old-running",
            "recent-aborted",
            "recent-failed"
        ]
    );
    assert_eq!(table.phase("old-completed"), None, "forgotten by the table");
    assert_eq!(table.phase("recent-aborted"), Some(Phase::Aborted));

    // By count: at most one ended experiment; the one that ended first goes.
    let one = Retention {
        experiments_max_count: 1,
        ..Retention::default()
    };
    let pruned = prune(&store, &table, &one, NOW).await.expect("prune");
    assert_eq!(pruned.experiments, 1);
    assert_eq!(
        names(store.experiments().await.expect("experiments")),
        ["old-pending", "old-running", "recent-aborted"]
    );
    // Nothing left to do: a second pass removes nothing.
    let again = prune(&store, &table, &one, NOW).await.expect("prune");
    assert_eq!(again, Pruned::default());
    store.close().await.expect("close");
}

#[tokio::test]
async fn an_ended_experiment_still_waiting_for_reverts_is_not_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreHandle::open(dir.path()).await.expect("open");
    let rec = experiment("ending", Phase::Aborted, NOW - 60 * DAY_MS);
    store.put_experiment_durable(&rec).await.expect("seed");
    let table = Table::default();
    table.recover(&store).await.expect("recover");
    let (control, _control_rx) = tokio::sync::mpsc::channel(1);
    let (_publish, snapshot) = tokio::sync::watch::channel(crate::experiments::Snapshot {
        record: std::sync::Arc::new(rec),
        message: String::new(),
        finished: false,
    });
    table.insert_live(
        "ending",
        crate::experiments::Live {
            control,
            status: Default::default(),
            snapshot,
            agents: vec![],
            pods: vec![],
            faults: vec![],
        },
    );
    let pruned = prune(&store, &table, &Retention::default(), NOW)
        .await
        .expect("prune");
    assert_eq!(pruned.experiments, 0);
    table.remove_live("ending");
    let pruned = prune(&store, &table, &Retention::default(), NOW)
        .await
        .expect("prune");
    assert_eq!(pruned.experiments, 1, "once its run is over it goes");
    store.close().await.expect("close");
}
