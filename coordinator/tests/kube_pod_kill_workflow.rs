//! A workflow's pod-kill step without `interval` is instant: it completes once its delete was
//! answered and the replacement's Ready recorded, not after the experiment's duration. Against
//! the pod-kill harness (a `tower-test` Kubernetes API serving real Pod JSON that changes as an
//! API server does; see `kube_kill_support`).

mod common;
mod kube_kill_support;
mod kube_support;

use std::time::{Duration, Instant};

use common::agent::TestAgent;
use common::experiments::{experiments, open_policy};
use common::Env;
use faultline_coordinator::{Coordinator, PodAccess, Policy};
use faultline_proto::pb;
use faultline_proto::pb::workflows_client::WorkflowsClient;
use kube_kill_support::{LiveCluster, Timing};

const NODES: [&str; 3] = ["node-a", "node-b", "node-d"];

#[tokio::test]
async fn a_pod_kill_step_completes_once_its_delete_is_done_not_after_its_duration() {
    let env = Env::with_agents(&NODES);
    let timing = Timing {
        replace_after: Duration::from_millis(300),
        ready_after: Duration::from_millis(1200),
        shutdown_after: Duration::from_secs(2),
    };
    let (access, cluster): (PodAccess, LiveCluster) =
        LiveCluster::start_with(&["checkout-7d4f9b6c5-abcde"], timing, false);
    let policy = Policy {
        max_pod_percent_per_namespace: 100.0,
        ..open_policy()
    };
    let c = Coordinator::start_with_pods(env.config_with(policy), None, access)
        .await
        .unwrap_or_else(|e| panic!("coordinator did not start: {e}"));
    let mut agents = Vec::new();
    for n in NODES {
        agents.push(TestAgent::connect(&env, &c, n, &[]).await);
    }
    let mut workflows = WorkflowsClient::new(common::channel(&env, &c, "operator").await);
    let document = "apiVersion: faultline.dev/v1
kind: Workflow
metadata: {name: pk}
spec:
  steps:
    - name: kill
      experiment:
        duration: 60s
        targets: {pods: {namespace: shop, labelSelector: app=checkout}, mode: one}
        faults: [{kind: pod-kill, gracePeriod: 0s}]
    - name: after
      suspend: {duration: 1s}
";
    let started = Instant::now();
    workflows
        .create(pb::CreateWorkflowRequest {
            document: document.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("create: {s:?}"));
    let w = loop {
        let w = workflows
            .get(pb::GetWorkflowRequest { name: "pk".into() })
            .await
            .expect("get")
            .into_inner();
        if w.phase != "running" && w.phase != "pending" {
            break w;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pod-kill step waited out its experiment: {:#?}",
            w.steps
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(w.phase, "succeeded", "{:#?}", w);
    let step = w
        .steps
        .iter()
        .find(|s| s.name == "kill")
        .expect("kill step");
    let took = step.ended_unix_ms - step.started_unix_ms;
    println!("pod-kill step took {took} ms (its experiment's duration: 60 s)");
    assert!(took < 10_000, "{step:?}");
    // The one delete went out, and the step ended only after the replacement was Ready.
    assert_eq!(cluster.deletes().len(), 1, "{:?}", cluster.deletes());
    let mut ops = experiments(&env, &c, "viewer").await;
    let e = ops
        .get(pb::GetExperimentRequest {
            name: "pk-kill".into(),
        })
        .await
        .expect("get pk-kill")
        .into_inner();
    assert_eq!(e.phase, pb::ExperimentPhase::Completed as i32);
    assert!(
        e.verdict_reason.contains("every fault is instant"),
        "{}",
        e.verdict_reason
    );
    let ready = ops
        .report(pb::ReportRequest {
            name: "pk-kill".into(),
            format: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&ready.json).expect("json report");
    let ready_at = json["pod_kills"][0]["ready_unix_ms"].as_i64().unwrap_or(0);
    assert!(ready_at > 0, "no Ready recorded: {json:#}");
    assert!(
        step.ended_unix_ms >= ready_at,
        "the step ended before the replacement was Ready"
    );
    drop(agents);
    c.shutdown().await;
    drop(env);
}
