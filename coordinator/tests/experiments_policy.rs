//! Blast radius and policy: targets that fail (an agent refusing on its local limits) with
//! `onTargetFailure` abort and continue, policy refusals with their reasons, invalid documents
//! naming the field, and the fleet halt refusing new experiments until Resume.

mod common;

use std::time::Duration;

use common::agent::{OnApply, TestAgent};
use common::experiments::*;
use common::*;
use faultline_coordinator::Policy;
use faultline_proto::pb;
use tonic::Code;

const LIMIT: &str =
    "agent limit: cpu load 90% exceeds this agent's local maximum of 50% (--max-cpu-load)";

#[tokio::test]
async fn an_agent_refusing_on_its_local_limits_fails_the_experiment_by_default() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[]).await;
    b.on_apply(OnApply::Fail(LIMIT.into()));
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "too-hot",
        "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 90}]\n",
    );
    create(&mut ops, &text, true).await.expect("started");
    watch_to_end(&mut ops, "too-hot", Duration::from_secs(15)).await;
    let e = get(&mut ops, "too-hot").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Failed);
    assert!(
        e.verdict_reason.starts_with(
            "failed: fault too-hot-node-b-0 (cpu 90% on every CPU) failed on node-b: agent limit"
        ),
        "{}",
        e.verdict_reason
    );
    assert!(
        e.verdict_reason.ends_with("(onTargetFailure: abort)"),
        "{}",
        e.verdict_reason
    );
    let info = e.abort.clone().expect("abort");
    assert_eq!(
        (info.trigger.as_str(), info.by.as_str()),
        ("target-failure", "node-b")
    );
    let tb = e.targets.iter().find(|t| t.agent == "node-b").expect("b");
    assert_eq!(tb.state, pb::FaultState::Failed as i32);
    assert_eq!(tb.error, LIMIT);
    let ta = e.targets.iter().find(|t| t.agent == "node-a").expect("a");
    assert_eq!(
        ta.state,
        pb::FaultState::Reverted as i32,
        "the healthy target was reverted"
    );
    assert_eq!(ta.revert_reason, pb::RevertReason::Abort as i32);
    assert!(a.held().is_empty());
    assert!(
        b.reverts().is_empty(),
        "nothing to revert where the apply failed"
    );
    let md = ops
        .report(pb::ReportRequest {
            name: "too-hot".into(),
            format: "md".into(),
        })
        .await
        .expect("report")
        .into_inner()
        .markdown;
    assert!(md.contains(LIMIT), "{md}");
    c.shutdown().await;
}

#[tokio::test]
async fn on_target_failure_continue_keeps_the_others_running() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[]).await;
    b.on_apply(OnApply::Fail(LIMIT.into()));
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc("carry-on", "  duration: 1s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 90}]\n  onTargetFailure: continue\n");
    create(&mut ops, &text, true).await.expect("started");
    watch_to_end(&mut ops, "carry-on", Duration::from_secs(15)).await;
    let e = get(&mut ops, "carry-on").await;
    assert_eq!(
        phase(&e),
        pb::ExperimentPhase::Completed,
        "{}",
        e.verdict_reason
    );
    assert_eq!(
        e.verdict_reason,
        "completed: ran for 1s; 1 of 2 fault(s) reverted, 1 failed"
    );
    let tb = e.targets.iter().find(|t| t.agent == "node-b").expect("b");
    assert_eq!(
        (tb.state, tb.error.as_str()),
        (pb::FaultState::Failed as i32, LIMIT)
    );
    assert!(e.abort.is_none());
    assert_eq!(a.reverts().len(), 1);

    // Every target failing ends it as failed even with continue.
    a.on_apply(OnApply::Fail(LIMIT.into()));
    let text = doc("all-fail", "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 90}]\n  onTargetFailure: continue\n");
    create(&mut ops, &text, true).await.expect("started");
    watch_to_end(&mut ops, "all-fail", Duration::from_secs(15)).await;
    let e = get(&mut ops, "all-fail").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Failed);
    assert!(
        e.verdict_reason.starts_with("failed: every target failed"),
        "{}",
        e.verdict_reason
    );
    c.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_never_answers_fails_after_the_apply_timeout_and_a_lost_agent_fails() {
    let env = Env::with_agents(&["node-a", "node-b", "node-c"]);
    let c = start_open(&env).await;
    let _a = TestAgent::connect(&env, &c, "node-a", &[("role", "web")]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[("role", "web")]).await;
    let mute = TestAgent::connect(&env, &c, "node-c", &[("role", "db")]).await;
    mute.on_apply(OnApply::Silent);
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc("mute", "  duration: 60s\n  targets: {agents: {labels: {role: db}}, mode: all}\n  faults: [{kind: cpu, load: 10}]\n");
    create(&mut ops, &text, true).await.expect("started");
    let text = doc("lost", "  duration: 60s\n  targets: {agents: {labels: {role: web}}, mode: all}\n  faults: [{kind: cpu, load: 10}]\n  onTargetFailure: continue\n");
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "lost").await;
    b.disconnect().await;
    // The lease is 5 s: the agent counts as lost once it has been gone that long.
    let e = eventually(Duration::from_secs(9), "node-b marked failed", || {
        let mut ops = ops.clone();
        async move {
            let e = get(&mut ops, "lost").await;
            e.targets
                .iter()
                .any(|t| t.agent == "node-b" && t.state == pb::FaultState::Failed as i32)
                .then_some(e)
        }
    })
    .await;
    let tb = e.targets.iter().find(|t| t.agent == "node-b").expect("b");
    assert_eq!(
        tb.error,
        "the agent was disconnected for longer than its lease (5s): its lease lapsed, so it reverted its faults"
    );
    assert_eq!(
        phase(&e),
        pb::ExperimentPhase::Running,
        "continue: node-a keeps its fault"
    );
    ops.abort(pb::AbortExperimentRequest {
        name: "lost".into(),
        reason: String::new(),
    })
    .await
    .expect("abort");

    // node-c never answered ApplyFault: after 10 s its target failed, which fails "mute".
    watch_to_end(&mut ops, "mute", Duration::from_secs(20)).await;
    let e = get(&mut ops, "mute").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Failed);
    assert_eq!(e.targets[0].error, "no answer to ApplyFault within 10 s");
    assert!(
        e.verdict_reason
            .contains("no answer to ApplyFault within 10 s (onTargetFailure: abort)"),
        "{}",
        e.verdict_reason
    );
    // It may still apply late: it was told to revert anyway.
    let reverts = mute.reverts();
    assert_eq!(reverts.len(), 1);
    assert_eq!(
        (reverts[0].fault_id.as_str(), reverts[0].reason),
        ("mute-node-c-0", pb::RevertReason::Abort as i32)
    );
    c.shutdown().await;
}

#[tokio::test]
async fn policy_refusals_say_why() {
    let env = Env::new();
    let policy = Policy {
        max_fleet_percent_under_fault: 100.0,
        max_concurrent_experiments: 1,
        allowed_fault_kinds: vec!["cpu".into(), "network".into()],
        max_duration: Duration::from_secs(600),
        ..Policy::default()
    };
    let c = start(env.config_with(policy)).await;
    let _a = TestAgent::connect(&env, &c, "node-a", &[("zone", "a")]).await;
    let _b = TestAgent::connect(&env, &c, "node-b", &[("faultline.dev/protected", "true")]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let refused = |r: Result<pb::CreateExperimentResponse, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_string())
    };

    let r = create(&mut ops, &doc("mem", "  duration: 5s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}, {kind: memory, size: 1Mi}]\n"), true).await;
    assert_eq!(
        refused(r),
        (Code::FailedPrecondition, "spec.faults[1].kind: memory is not allowed by the policy (policy.allowed_fault_kinds: cpu, network)".into())
    );
    let r = create(
        &mut ops,
        &doc(
            "long",
            "  duration: 1h\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        true,
    )
    .await;
    assert_eq!(
        refused(r),
        (
            Code::InvalidArgument,
            "spec.duration: 1h is outside the allowed range 1s..=10m".into()
        )
    );
    let r = create(&mut ops, &doc("db", "  duration: 5s\n  targets: {agents: {names: [node-b]}, mode: all}\n  faults: [{kind: cpu, load: 5}]\n"), true).await;
    assert_eq!(
        refused(r),
        (Code::FailedPrecondition, "no agent can be selected: node-a: not matching: not in targets.agents.names; node-b: protected label (faultline.dev/protected=true)".into())
    );
    let r = create(&mut ops, &doc("few", "  duration: 5s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n  blastRadius: {maxPercent: 40}\n"), true).await;
    assert_eq!(
        refused(r),
        (Code::FailedPrecondition, "no agent can be selected: blastRadius.maxPercent 40% of 2 connected = 0 allows 0 targets".into())
    );
    let r = create(&mut ops, &doc("pods", "  duration: 5s\n  targets: {mode: all, pods: {namespace: shop}}\n  faults: [{kind: cpu, load: 5}]\n"), true).await;
    assert_eq!(
        refused(r),
        (Code::FailedPrecondition, "spec.targets.pods: pod targets are not available: the coordinator has no Kubernetes access: it does not run in a cluster (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig nor KUBECONFIG is given".into())
    );
    let r = create(
        &mut ops,
        &doc(
            "typo",
            "  duration: 5s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 150}]\n",
        ),
        true,
    )
    .await;
    assert_eq!(
        refused(r),
        (
            Code::InvalidArgument,
            "spec.faults[0].load: 150 is outside 1..=100 (whole percent)".into()
        )
    );

    create(
        &mut ops,
        &doc(
            "first",
            "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        true,
    )
    .await
    .expect("the first runs");
    let r = create(
        &mut ops,
        &doc(
            "second",
            "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        true,
    )
    .await;
    assert_eq!(
        refused(r),
        (Code::FailedPrecondition, "1 experiments are running and the policy allows 1 at once (policy.max_concurrent_experiments)".into())
    );
    c.shutdown().await;
}

#[tokio::test]
async fn the_fleet_share_counts_agents_under_fault_by_other_experiments() {
    let env = Env::with_agents(&["node-a", "node-b", "node-c", "node-d"]);
    let c = start(env.config()).await; // default policy: 50% of the fleet
    let mut agents = Vec::new();
    for n in ["node-a", "node-b", "node-c", "node-d"] {
        agents.push(TestAgent::connect(&env, &c, n, &[]).await);
    }
    let mut ops = experiments(&env, &c, "operator").await;
    let first = create(
        &mut ops,
        &doc(
            "half",
            "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        true,
    )
    .await
    .expect("two of four");
    let plan = first.plan.expect("plan");
    assert_eq!(plan.selected.len(), 2);
    assert!(plan.excluded.iter().all(|x| x.reason.starts_with(
        "over fleet share (policy.max_fleet_percent_under_fault 50% of 4 connected = 2"
    )));
    let r = create(
        &mut ops,
        &doc(
            "more",
            "  duration: 30s\n  targets: {mode: one}\n  faults: [{kind: cpu, load: 5}]\n",
        ),
        true,
    )
    .await;
    let s = r.expect_err("no room");
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(
        s.message(),
        "no agent can be selected: policy.max_fleet_percent_under_fault 50% of 4 connected = 2, 2 already under fault, room 0 allows 0 targets"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn halt_aborts_running_experiments_and_refuses_new_ones_until_resume() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = |name: &str| {
        doc(
            name,
            "  duration: 30s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
        )
    };
    // Created (planned) while node-a is free; started after the halt is lifted.
    create(&mut ops, &text("waiting"), false)
        .await
        .expect("pending");
    create(&mut ops, &text("running"), true)
        .await
        .expect("started");
    wait_applied(&mut ops, "running").await;

    let mut admin = fleet(&env, &c, "admin").await;
    let halted = admin
        .halt_all(pb::HaltAllRequest {
            reason: "incident 42".into(),
        })
        .await
        .expect("halt")
        .into_inner();
    assert_eq!(halted.experiments_aborted, 1);
    assert_eq!(halted.agents_signalled, 1);
    watch_to_end(&mut ops, "running", Duration::from_secs(15)).await;
    let e = get(&mut ops, "running").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Aborted);
    let info = e.abort.expect("abort");
    assert_eq!(
        (info.trigger.as_str(), info.by.as_str()),
        ("halt", "admin/admin")
    );
    assert_eq!(info.reason, "fleet halted by admin/admin: incident 42");
    assert_eq!(info.unacknowledged, 0);
    assert!(a.held().is_empty());

    let want = "the fleet is halted (by admin/admin: incident 42); new experiments are refused until an admin resumes it (faultctl resume)";
    let s = create(&mut ops, &text("new"), true)
        .await
        .expect_err("halted");
    assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, want));
    let s = ops
        .start(pb::StartExperimentRequest {
            name: "waiting".into(),
        })
        .await
        .expect_err("halted");
    assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, want));
    // A dry run still plans, and says a real run is refused.
    let dry = ops
        .create(pb::CreateExperimentRequest {
            document: text("new"),
            dry_run: true,
            start: false,
        })
        .await
        .expect("dry run while halted")
        .into_inner();
    assert!(dry
        .plan
        .expect("plan")
        .selection
        .starts_with("the fleet is halted (by admin/admin: incident 42)"));

    admin.resume(pb::ResumeRequest {}).await.expect("resume");
    let started = ops
        .start(pb::StartExperimentRequest {
            name: "waiting".into(),
        })
        .await
        .expect("resumed: starts")
        .into_inner();
    assert_eq!(phase(&started), pb::ExperimentPhase::Running);
    c.shutdown().await;
}
