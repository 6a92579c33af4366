//! Who may do what to experiments: a viewer reads but may not create, start or abort; an
//! operator may; an agent certificate may not even read. Every mutation, allowed or refused,
//! is in the audit log with the caller's identity.

mod common;

use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::*;
use common::*;
use faultline_proto::pb;
use tonic::Code;

#[tokio::test]
async fn viewers_read_operators_mutate_and_everything_is_audited() {
    let env = Env::new();
    let c = start_open(&env).await;
    let _a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let mut viewer = experiments(&env, &c, "viewer").await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "audited",
        "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
    );

    let denied = |s: tonic::Status, method: &str| {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert_eq!(
            s.message(),
            format!("identity viewer/viewer (role viewer) may not call {method}: it requires role operator or admin")
        );
    };
    denied(
        create(&mut viewer, &text, true)
            .await
            .expect_err("viewer create"),
        "Experiments.Create",
    );
    create(&mut ops, &text, false)
        .await
        .expect("operator creates");
    denied(
        viewer
            .start(pb::StartExperimentRequest {
                name: "audited".into(),
            })
            .await
            .expect_err("viewer start"),
        "Experiments.Start",
    );
    ops.start(pb::StartExperimentRequest {
        name: "audited".into(),
    })
    .await
    .expect("operator starts");
    denied(
        viewer
            .abort(pb::AbortExperimentRequest {
                name: "audited".into(),
                reason: "no".into(),
            })
            .await
            .expect_err("viewer abort"),
        "Experiments.Abort",
    );
    // The viewer reads everything.
    let e = get(&mut viewer, "audited").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Running);
    let listed = viewer
        .list(pb::ListExperimentsRequest::default())
        .await
        .expect("viewer lists")
        .into_inner();
    assert_eq!(listed.experiments.len(), 1);
    viewer
        .report(pb::ReportRequest {
            name: "audited".into(),
            format: "json".into(),
        })
        .await
        .expect("viewer reads the report");
    let mut admin = experiments(&env, &c, "admin").await;
    admin
        .abort(pb::AbortExperimentRequest {
            name: "audited".into(),
            reason: "admin stops it".into(),
        })
        .await
        .expect("admin aborts");
    watch_to_end(&mut viewer, "audited", Duration::from_secs(10)).await;
    // An operator's refused mutation (the name is taken) is audited too.
    let s = create(&mut ops, &text, true).await.expect_err("exists");
    assert_eq!(s.code(), Code::AlreadyExists);

    // Agents may not touch experiments at all.
    let err = experiments(&env, &c, "agent-node-a")
        .await
        .get(pb::GetExperimentRequest {
            name: "audited".into(),
        })
        .await
        .expect_err("agent");
    assert_eq!(err.code(), Code::PermissionDenied);

    let entries = audit(&mut fleet(&env, &c, "viewer").await).await;
    let rows: Vec<(String, String, bool)> = entries
        .iter()
        .filter(|e| e.action.starts_with("Experiments."))
        .map(|e| (e.identity.clone(), e.action.clone(), e.allowed))
        .rev()
        .collect();
    let row = |who: &str, what: &str, ok: bool| (who.to_string(), what.to_string(), ok);
    assert_eq!(
        rows,
        [
            row("viewer/viewer", "Experiments.Create", false),
            row("operator/operator", "Experiments.Create", true),
            row("viewer/viewer", "Experiments.Start", false),
            row("operator/operator", "Experiments.Start", true),
            row("viewer/viewer", "Experiments.Abort", false),
            row("admin/admin", "Experiments.Abort", true),
            row("operator/operator", "Experiments.Create", false),
        ]
    );
    let detail = |who: &str, what: &str| {
        entries
            .iter()
            .find(|e| e.identity == who && e.action == what && e.allowed)
            .map(|e| e.detail.clone())
            .expect("entry")
    };
    assert_eq!(
        detail("operator/operator", "Experiments.Create"),
        "created audited is pending: 1 fault(s) on 1 agent(s), 0 excluded"
    );
    assert_eq!(
        detail("admin/admin", "Experiments.Abort"),
        "aborted audited: aborted: aborted by admin/admin: admin stops it"
    );
    assert!(entries
        .iter()
        .all(|e| !e.action.starts_with("Experiments.Get")
            && !e.action.starts_with("Experiments.List")));
    let refused = entries
        .iter()
        .find(|e| {
            e.identity == "operator/operator" && e.action == "Experiments.Create" && !e.allowed
        })
        .expect("refused create");
    assert!(
        refused
            .detail
            .starts_with("refused: metadata.name: experiment \"audited\" already exists"),
        "{}",
        refused.detail
    );
    c.shutdown().await;
}
