//! Retention at start-up, seen from the API: a coordinator started on a store holding old
//! history soon serves only what `[retention]` keeps — recent audit entries, recent ended
//! experiments, and every pending one however old.

mod common;

use common::experiments::*;
use common::*;
use faultline_coordinator::experiments::record::{ExperimentRecord, PlanRecord};
use faultline_coordinator::store::{AuditRecord, SledStore, Store};
use faultline_core::experiment::Phase;
use faultline_proto::pb;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn experiment(name: &str, phase: Phase, created: i64, ended: i64) -> ExperimentRecord {
    ExperimentRecord {
        id: name.into(),
        name: name.into(),
        phase,
        document: doc(
            name,
            "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        created_by: "operator/operator".into(),
        created_unix_ms: created,
        started_unix_ms: 0,
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

#[tokio::test]
async fn a_start_prunes_what_retention_no_longer_keeps() {
    let env = Env::new();
    let now = now_ms();
    {
        let store = SledStore::open(&env.data()).expect("open the store");
        for (i, age_days) in [120, 100, 91, 2, 0].into_iter().enumerate() {
            store
                .append_audit(&AuditRecord {
                    at_unix_ms: now - age_days * DAY_MS - 1_000,
                    identity: "admin/admin".into(),
                    action: "Fleet.HaltAll".into(),
                    detail: format!("{age_days} days old ({i})"),
                    allowed: true,
                })
                .expect("audit");
        }
        for rec in [
            experiment(
                "old-completed",
                Phase::Completed,
                now - 50 * DAY_MS,
                now - 40 * DAY_MS,
            ),
            experiment(
                "recent-aborted",
                Phase::Aborted,
                now - 3 * DAY_MS,
                now - DAY_MS,
            ),
            experiment("old-pending", Phase::Pending, now - 200 * DAY_MS, 0),
        ] {
            store.put_experiment(&rec).expect("experiment");
        }
        store.close().expect("close");
    }
    let c = env.start().await;
    // Pruning runs in the background from the start.
    let viewer = fleet(&env, &c, "viewer").await;
    let kept = eventually(
        std::time::Duration::from_secs(5),
        "the old entries pruned",
        || {
            let mut viewer = viewer.clone();
            async move {
                let kept: Vec<String> = audit(&mut viewer)
                    .await
                    .into_iter()
                    .filter(|e| e.action == "Fleet.HaltAll")
                    .map(|e| e.detail)
                    .collect();
                (kept.len() < 5).then_some(kept)
            }
        },
    )
    .await;
    assert_eq!(kept, ["0 days old (4)", "2 days old (3)"]);
    let mut ops = experiments(&env, &c, "viewer").await;
    let names = eventually(
        std::time::Duration::from_secs(5),
        "old-completed pruned",
        || {
            let mut ops = ops.clone();
            async move {
                let listed = ops
                    .list(pb::ListExperimentsRequest::default())
                    .await
                    .expect("list")
                    .into_inner()
                    .experiments;
                let mut names: Vec<String> = listed.into_iter().map(|e| e.name).collect();
                names.sort();
                (names.len() < 3).then_some(names)
            }
        },
    )
    .await;
    assert_eq!(names, ["old-pending", "recent-aborted"]);
    let err = ops
        .get(pb::GetExperimentRequest {
            name: "old-completed".into(),
        })
        .await
        .expect_err("pruned");
    assert_eq!(err.code(), tonic::Code::NotFound);
    c.shutdown().await;
}
