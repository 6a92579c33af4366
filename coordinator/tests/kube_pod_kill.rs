//! pod-kill end to end: a coordinator whose Kubernetes API is a `tower-test` mock that changes
//! as an API server does (real Pod JSON; see `kube_kill_support`), agents on real mutual TLS,
//! experiments over gRPC. The delete carries the grace period and a UID precondition, no agent
//! is sent anything, the watch sees the replacement Ready and the report gives the time to
//! recover; with an `interval` every round re-selects under the mode, and pods this experiment
//! deleted that are still terminating are neither deleted again nor left out of the count.

mod common;
mod kube_kill_support;
mod kube_support;

use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::{doc, experiments, open_policy, watch_to_end};
use common::Env;
use faultline_coordinator::{Coordinator, PodAccess, Policy};
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use kube_kill_support::{LiveCluster, Timing};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

const NODES: [&str; 3] = ["node-a", "node-b", "node-d"];

struct Setup {
    env: Env,
    c: Coordinator,
    cluster: LiveCluster,
    agents: Vec<TestAgent>,
    ops: ExperimentsClient<Channel>,
}

async fn setup(pods: &[&str], timing: Timing) -> Setup {
    setup_with(pods, timing, false).await
}

async fn setup_with(pods: &[&str], timing: Timing, forbidden: bool) -> Setup {
    let env = Env::with_agents(&NODES);
    let (access, cluster): (PodAccess, LiveCluster) =
        LiveCluster::start_with(pods, timing, forbidden);
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
    let ops = experiments(&env, &c, "operator").await;
    Setup {
        env,
        c,
        cluster,
        agents,
        ops,
    }
}

impl Setup {
    async fn stop(self) {
        drop(self.agents);
        self.c.shutdown().await;
        drop(self.env);
    }

    /// Creates and starts the experiment, follows it to its end, and returns its JSON report
    /// and Markdown.
    async fn run(&mut self, name: &str, document: &str) -> (Value, String) {
        common::experiments::create(&mut self.ops, document, true)
            .await
            .unwrap_or_else(|s| panic!("create {name}: {s:?}"));
        watch_to_end(&mut self.ops, name, Duration::from_secs(40)).await;
        let report = self
            .ops
            .report(pb::ReportRequest {
                name: name.into(),
                format: String::new(),
            })
            .await
            .expect("report")
            .into_inner();
        let json: Value = serde_json::from_str(&report.json).expect("the JSON report");
        (json, report.markdown)
    }
}

fn kills_doc(name: &str, mode: &str, duration: &str, fault: &str) -> String {
    doc(
        name,
        &format!(
            "  duration: {duration}\n  targets: {{pods: {{namespace: shop, labelSelector: app=checkout}}, {mode}}}\n  faults: [{fault}]\n"
        ),
    )
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

#[tokio::test]
async fn a_pod_kill_deletes_with_its_grace_period_and_the_watch_times_the_recovery() {
    let timing = Timing {
        replace_after: Duration::from_millis(300),
        ready_after: Duration::from_millis(1200),
        shutdown_after: Duration::from_secs(2),
    };
    // One live pod (checkout-...-abcde on node-a) and one already terminating.
    let mut s = setup(
        &["checkout-7d4f9b6c5-abcde", "checkout-7d4f9b6c5-zzzzz"],
        timing,
    )
    .await;
    let abcde_uid = s.cluster.uid("checkout-7d4f9b6c5-abcde").expect("abcde");
    let document = kills_doc(
        "kill-one",
        "mode: one",
        "4s",
        "{kind: pod-kill, gracePeriod: 0s}",
    );
    let (report, markdown) = s.run("kill-one", &document).await;
    assert_eq!(report["phase"], "completed", "{report:#}");

    // One DELETE: the selected pod, grace period 0, only if it is still the same pod.
    let deletes = s.cluster.deletes();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let (name, body) = &deletes[0];
    assert_eq!(name, "checkout-7d4f9b6c5-abcde");
    assert_eq!(body["gracePeriodSeconds"], 0, "{body}");
    assert_eq!(body["preconditions"]["uid"], abcde_uid.as_str(), "{body}");
    // The coordinator carries pod-kill out; no agent was asked to.
    for a in &s.agents {
        assert!(a.applies().is_empty(), "an agent got ApplyFault");
    }

    let kills = report["pod_kills"].as_array().expect("pod_kills");
    assert_eq!(kills.len(), 1, "{report:#}");
    let k = &kills[0];
    assert_eq!(k["pod"], "shop/checkout-7d4f9b6c5-abcde");
    assert_eq!(k["uid"], abcde_uid.as_str());
    assert_eq!(k["node"], "node-a");
    assert_eq!(k["outcome"], "deleted");
    assert_eq!(k["grace_period_seconds"], 0);
    assert_eq!(k["controller"], "ReplicaSet/checkout-7d4f9b6c5");
    assert_eq!(k["replacement"], "shop/checkout-7d4f9b6c5-r0001");
    assert_eq!(k["replacement_node"], "node-b");
    let killed = ms(&k["killed_unix_ms"]);
    let gone = ms(&k["gone_unix_ms"]) - killed;
    let recover = ms(&k["ready_unix_ms"]) - killed;
    println!("kill-one: pod object gone {gone} ms after the delete, replacement Ready after {recover} ms");
    assert!(
        (0..1500).contains(&gone),
        "grace 0: gone at once: {gone} ms"
    );
    assert!(
        (1200..2900).contains(&recover),
        "the replacement became Ready 1.2 s after the delete (seen through the watch): {recover} ms"
    );
    assert!(markdown.contains("## Pod kills"), "{markdown}");
    assert!(
        markdown.contains("| 0 | shop/checkout-7d4f9b6c5-abcde | node-a |"),
        "{markdown}"
    );
    assert!(
        markdown
            .contains("Time to recover (delete to replacement Ready): 1 of 1 kill(s) recovered"),
        "{markdown}"
    );
    let seen = s.cluster.api.seen();
    assert!(
        seen.iter()
            .any(|u| u.starts_with("/api/v1/namespaces/shop/pods?")
                && u.contains("watch=true")
                && u.contains("labelSelector=app%3Dcheckout")),
        "{seen:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_interval_reselects_and_never_counts_a_terminating_pod_twice() {
    let timing = Timing {
        replace_after: Duration::from_millis(200),
        ready_after: Duration::from_millis(800),
        shutdown_after: Duration::from_secs(3),
    };
    let pods = [
        "checkout-7d4f9b6c5-abcde",
        "checkout-7d4f9b6c5-fghij",
        "checkout-7d4f9b6c5-vwxyz",
    ];
    let mut s = setup(&pods, timing).await;
    let document = kills_doc(
        "kill-every",
        "mode: fixed, value: 2",
        "5s",
        "{kind: pod-kill, interval: 2s}",
    );
    let (report, markdown) = s.run("kill-every", &document).await;
    assert_eq!(report["phase"], "completed", "{report:#}");
    let deletes = s.cluster.deletes();
    let names: Vec<&str> = deletes.iter().map(|(n, _)| n.as_str()).collect();
    println!("deletes in order: {names:?}");
    // Round 0 (t=0): the 2 planned pods. Round 1 (t=2 s): both still terminating (they take
    // 3 s), so they fill mode fixed 2 and nothing is deleted. Round 2 (t=4 s): they are gone;
    // 2 of the 3 live pods (the third original and the 2 replacements) are deleted.
    assert_eq!(deletes.len(), 4, "{names:?}\n{markdown}");
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "no pod deleted twice: {names:?}");
    for (_, body) in &deletes {
        assert!(
            body.get("gracePeriodSeconds").is_none(),
            "the pod's own grace period: {body}"
        );
        assert!(body["preconditions"]["uid"].is_string(), "{body}");
    }
    let first: Vec<&str> = names[..2].to_vec();
    for n in &names[2..] {
        assert!(
            !first.contains(n),
            "round 2 never takes a round-0 victim: {names:?}"
        );
    }
    let kills = report["pod_kills"].as_array().expect("pod_kills");
    let rounds: Vec<i64> = kills.iter().map(|k| ms(&k["round"])).collect();
    assert_eq!(rounds, [0, 0, 2, 2], "{report:#}");
    let log: Vec<String> = report["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let round1 = log
        .iter()
        .find(|l| l.starts_with("pod-kill round 1:"))
        .unwrap_or_else(|| panic!("no round 1 in the log: {log:#?}"));
    assert!(
        round1.ends_with(
            "2 pod(s) deleted earlier still terminating count toward mode fixed 2 of 5 pod(s) -> delete 0"
        ),
        "{round1}"
    );
    for k in &kills[..2] {
        let killed = ms(&k["killed_unix_ms"]);
        let recover = ms(&k["ready_unix_ms"]) - killed;
        let gone = ms(&k["gone_unix_ms"]) - killed;
        println!(
            "{}: gone after {gone} ms, replaced by {} Ready after {recover} ms",
            k["pod"], k["replacement"]
        );
        assert!((800..2500).contains(&recover), "{k}");
        assert!(
            (3000..4700).contains(&gone),
            "graceful: gone after its 3 s shutdown: {k}"
        );
    }
    let replacements: Vec<&str> = kills[..2]
        .iter()
        .map(|k| k["replacement"].as_str().unwrap_or_default())
        .collect();
    assert_ne!(
        replacements[0], replacements[1],
        "each kill has its own replacement"
    );
    s.stop().await;
}

#[tokio::test]
async fn pod_kill_outside_a_pod_experiment_is_refused_with_its_field() {
    let mut s = setup(
        &["checkout-7d4f9b6c5-abcde"],
        Timing {
            replace_after: Duration::from_secs(1),
            ready_after: Duration::from_secs(2),
            shutdown_after: Duration::from_secs(1),
        },
    )
    .await;
    let document = doc(
        "kill-agents",
        "  duration: 10s\n  targets: {agents: {names: [node-a]}, mode: all}\n  faults: [{kind: pod-kill}]\n",
    );
    let err = common::experiments::create(&mut s.ops, &document, true)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("spec.faults[0].kind: pod-kill is carried out by the coordinator through the Kubernetes API"),
        "{}",
        err.message()
    );
    let document = kills_doc(
        "kill-bad",
        "mode: one",
        "10s",
        "{kind: pod-kill, interval: 100ms}",
    );
    let err = common::experiments::create(&mut s.ops, &document, true)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "spec.faults[0].interval: 100ms is outside 1s..=24h"
    );
    assert!(s.cluster.deletes().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn without_delete_rights_each_kill_is_recorded_as_failed_naming_the_chart_value() {
    let timing = Timing {
        replace_after: Duration::from_secs(1),
        ready_after: Duration::from_secs(2),
        shutdown_after: Duration::from_secs(1),
    };
    let mut s = setup_with(&["checkout-7d4f9b6c5-abcde"], timing, true).await;
    let document = kills_doc("kill-denied", "mode: one", "2s", "{kind: pod-kill}");
    let (report, markdown) = s.run("kill-denied", &document).await;
    let k = &report["pod_kills"][0];
    assert_eq!(k["outcome"], "failed", "{report:#}");
    let error = k["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot delete resource \"pods\"")
            && error.contains("HTTP 403; the coordinator's service account needs delete on pods (Helm value podKill.enabled=true)"),
        "{error}"
    );
    assert!(k["replacement"].is_null(), "{k}");
    assert!(markdown.contains("| failed: "), "{markdown}");
    s.stop().await;
}

#[tokio::test]
async fn an_abort_stops_the_deletes_at_once() {
    let timing = Timing {
        replace_after: Duration::from_millis(100),
        ready_after: Duration::from_millis(300),
        shutdown_after: Duration::from_millis(400),
    };
    let mut s = setup(
        &[
            "checkout-7d4f9b6c5-abcde",
            "checkout-7d4f9b6c5-fghij",
            "checkout-7d4f9b6c5-vwxyz",
        ],
        timing,
    )
    .await;
    let document = kills_doc(
        "kill-abort",
        "mode: one",
        "60s",
        "{kind: pod-kill, interval: 1s}",
    );
    common::experiments::create(&mut s.ops, &document, true)
        .await
        .expect("created and started");
    common::eventually(Duration::from_secs(10), "two rounds of deletes", || {
        let n = s.cluster.deletes().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    s.ops
        .abort(pb::AbortExperimentRequest {
            name: "kill-abort".into(),
            reason: "enough".into(),
        })
        .await
        .expect("abort");
    let at_abort = s.cluster.deletes().len();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = s.cluster.deletes().len();
    println!("deletes at the abort: {at_abort}, 3.5 s later: {after}");
    assert_eq!(after, at_abort, "no delete after the abort");
    let e = common::experiments::get(&mut s.ops, "kill-abort").await;
    assert_eq!(common::experiments::phase(&e), pb::ExperimentPhase::Aborted);
    s.stop().await;
}

#[tokio::test]
async fn container_kill_goes_to_the_pods_agent_beside_a_pod_kill() {
    let timing = Timing {
        replace_after: Duration::from_millis(200),
        ready_after: Duration::from_millis(500),
        shutdown_after: Duration::from_secs(1),
    };
    let mut s = setup(&["checkout-7d4f9b6c5-abcde"], timing).await;
    let document = kills_doc(
        "kill-both",
        "mode: one",
        "3s",
        "{kind: container-kill, containers: [istio-proxy], interval: 5s}, {kind: pod-kill}",
    );
    let (report, _) = s.run("kill-both", &document).await;
    // The container-kill went to node-a's agent, aimed at the pod with its container names;
    // the pod-kill went to no agent.
    let applies = s.agents[0].applies();
    assert_eq!(applies.len(), 1, "{applies:?}");
    let spec =
        faultline_proto::convert::spec_from_pb(applies[0].spec.as_ref().expect("spec"), "apply")
            .expect("a valid spec for the agent");
    match (&spec.target, &spec.fault) {
        (
            faultline_core::fault::Target::Container(c),
            faultline_core::fault::Fault::ContainerKill(k),
        ) => {
            assert_eq!(c.pod_name, "checkout-7d4f9b6c5-abcde");
            assert!(c.container_id.is_empty(), "the whole pod: {c:?}");
            assert_eq!(k.containers, ["istio-proxy"]);
            assert_eq!(k.interval, Some(Duration::from_secs(5)));
        }
        other => panic!("expected a container-kill aimed at the pod, got {other:?}"),
    }
    assert!(s.agents[1].applies().is_empty() && s.agents[2].applies().is_empty());
    assert_eq!(s.cluster.deletes().len(), 1);
    assert_eq!(
        report["targets"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    assert_eq!(
        report["pod_kills"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_is_not_deleted_in_its_place() {
    let timing = Timing {
        replace_after: Duration::from_millis(200),
        ready_after: Duration::from_millis(500),
        shutdown_after: Duration::from_secs(1),
    };
    let mut s = setup(&["checkout-7d4f9b6c5-abcde"], timing).await;
    let planned_uid = s.cluster.uid("checkout-7d4f9b6c5-abcde").expect("abcde");
    let document = kills_doc("kill-stale", "mode: one", "2s", "{kind: pod-kill}");
    // Between the coordinator's list and its delete, the pod is recreated under its name.
    let new_uid = s.cluster.recreate_before_delete("checkout-7d4f9b6c5-abcde");
    common::experiments::create(&mut s.ops, &document, true)
        .await
        .expect("created and started");
    watch_to_end(&mut s.ops, "kill-stale", Duration::from_secs(30)).await;
    let deletes = s.cluster.deletes();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].1["preconditions"]["uid"], planned_uid.as_str());
    assert_eq!(
        s.cluster.uid("checkout-7d4f9b6c5-abcde").as_deref(),
        Some(new_uid.as_str()),
        "the new pod of that name lives on"
    );
    let report = s
        .ops
        .report(pb::ReportRequest {
            name: "kill-stale".into(),
            format: "json".into(),
        })
        .await
        .expect("report")
        .into_inner();
    let json: Value = serde_json::from_str(&report.json).expect("JSON");
    let k = &json["pod_kills"][0];
    assert_eq!(k["outcome"], "gone", "{k}");
    assert!(
        k["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Precondition failed: UID in precondition"),
        "{k}"
    );
    s.stop().await;
}
