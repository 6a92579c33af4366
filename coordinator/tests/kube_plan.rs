//! Pod targets end to end: a coordinator whose Kubernetes API is a `tower-test` mock answering
//! real PodList/NodeList JSON, agents on real mutual TLS, and experiments over gRPC: the dry run
//! lists every pod with its reason, modes and the namespace and fleet shares bound the
//! selection, and a run sends each fault to the agent on the pod's node, aimed at the pod's
//! container.

mod common;
mod kube_support;

use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::{doc, experiments, get, open_policy, wait_applied};
use common::Env;
use faultline_coordinator::{Coordinator, PodAccess, Policy};
use faultline_core::fault::{ContainerRef, Fault, ProcessSelector, Target};
use faultline_proto::convert::spec_from_pb;
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use kube_support::{shop_pod, status_json, FakeApi};
use tonic::transport::Channel;
use tonic::Code;

const NODES: [&str; 3] = ["node-a", "node-b", "node-d"];

struct Setup {
    env: Env,
    c: Coordinator,
    api: FakeApi,
    agents: Vec<TestAgent>,
    ops: ExperimentsClient<Channel>,
}

/// A coordinator over the shop cluster with `policy`, and agents on node-a, node-b and node-d
/// (node-c has none; node-d is NotReady in Kubernetes).
async fn setup(policy: Policy) -> Setup {
    let env = Env::with_agents(&NODES);
    let (access, api) = FakeApi::shop();
    let c = Coordinator::start_with_pods(env.config_with(policy), None, access)
        .await
        .unwrap_or_else(|e| panic!("coordinator did not start: {e}"));
    let mut agents = Vec::new();
    for n in NODES {
        agents.push(TestAgent::connect(&env, &c, n, &[("zone", "a")]).await);
    }
    let ops = experiments(&env, &c, "operator").await;
    Setup {
        env,
        c,
        api,
        agents,
        ops,
    }
}

fn pods_doc(name: &str, pods: &str, mode: &str, faults: &str) -> String {
    doc(
        name,
        &format!("  duration: 30s\n  targets: {{pods: {pods}, {mode}}}\n  faults: {faults}\n"),
    )
}

async fn dry_run(
    ops: &mut ExperimentsClient<Channel>,
    document: &str,
) -> Result<pb::Plan, tonic::Status> {
    ops.create(pb::CreateExperimentRequest {
        document: document.into(),
        dry_run: true,
        start: false,
    })
    .await
    .map(|r| r.into_inner().plan.expect("a plan"))
}

fn container(pod: &str, with_app: bool) -> ContainerRef {
    let (uid, app, _) = shop_pod(pod);
    ContainerRef {
        container_id: if with_app { app } else { String::new() },
        pod_uid: uid,
        pod_namespace: "shop".into(),
        pod_name: pod.into(),
        container_name: if with_app {
            "app".into()
        } else {
            String::new()
        },
    }
}

fn selected(plan: &pb::Plan) -> Vec<(String, String)> {
    plan.selected
        .iter()
        .map(|s| (s.agent.clone(), s.description.clone()))
        .collect()
}

fn excluded(plan: &pb::Plan) -> Vec<String> {
    plan.excluded
        .iter()
        .map(|x| format!("{} | {} | {}", x.agent, x.description, x.reason))
        .collect()
}

fn open_pods_policy() -> Policy {
    Policy {
        max_pod_percent_per_namespace: 100.0,
        ..open_policy()
    }
}

#[tokio::test]
async fn the_dry_run_lists_every_pod_with_its_reason() {
    let mut s = setup(open_pods_policy()).await;
    let document = pods_doc(
        "checkout-drop",
        "{namespaces: [shop, kube-system], labelSelector: app=checkout, containers: [app]}",
        "mode: all",
        "[{kind: drop, probability: 0.3}]",
    );
    let plan = dry_run(&mut s.ops, &document).await.expect("dry run");
    let (a_uid, a_app, _) = shop_pod("checkout-7d4f9b6c5-abcde");
    assert_eq!(
        selected(&plan),
        [
            (
                "node-a".to_string(),
                format!(
                    "container app ({}) of pod shop/checkout-7d4f9b6c5-abcde (uid {a_uid})",
                    &a_app[..12]
                )
            ),
            (
                "node-b".to_string(),
                format!(
                    "container app ({}) of pod shop/checkout-7d4f9b6c5-fghij (uid {})",
                    &shop_pod("checkout-7d4f9b6c5-fghij").1[..12],
                    shop_pod("checkout-7d4f9b6c5-fghij").0
                )
            ),
            (
                "node-b".to_string(),
                format!(
                    "container app ({}) of pod shop/checkout-7d4f9b6c5-vwxyz (uid {})",
                    &shop_pod("checkout-7d4f9b6c5-vwxyz").1[..12],
                    shop_pod("checkout-7d4f9b6c5-vwxyz").0
                )
            ),
        ]
    );
    // The wire plan carries the container each fault will be aimed at.
    let target = faultline_proto::convert::target_from_pb(plan.selected[0].target.as_ref());
    assert_eq!(
        target,
        Target::Container(container("checkout-7d4f9b6c5-abcde", true))
    );
    assert_eq!(
        excluded(&plan),
        [
            "node-a | pod kube-system/coredns-5d78c9869d-x2x7q | protected namespace kube-system (policy.protected_namespaces)",
            "node-c | pod shop/checkout-7d4f9b6c5-klmno | no agent on node node-c: no Faultline agent has connected from it",
            "node-d | pod shop/checkout-7d4f9b6c5-nrdy1 | node node-d is not Ready",
            "- | pod shop/checkout-7d4f9b6c5-pqrst | not Running (phase Pending)",
            "node-a | pod shop/checkout-7d4f9b6c5-uvwxy | container app is not running (waiting: CrashLoopBackOff)",
            "node-b | pod shop/checkout-7d4f9b6c5-zzzzz | terminating (deletion requested)",
        ]
    );
    assert_eq!(plan.target_kind, "pods");
    let excluded_pods: Vec<&str> = plan.excluded.iter().map(|x| x.pod.as_str()).collect();
    assert_eq!(
        excluded_pods,
        [
            "kube-system/coredns-5d78c9869d-x2x7q",
            "shop/checkout-7d4f9b6c5-klmno",
            "shop/checkout-7d4f9b6c5-nrdy1",
            "shop/checkout-7d4f9b6c5-pqrst",
            "shop/checkout-7d4f9b6c5-uvwxy",
            "shop/checkout-7d4f9b6c5-zzzzz",
        ]
    );
    assert!(
        plan.selection.starts_with(
            "pods (namespaces kube-system,shop, labelSelector app=checkout, containers app): mode all of 3 eligible pods = 3;"
        ),
        "{}",
        plan.selection
    );
    assert!(
        plan.selection
            .ends_with("-> 3 pod(s) selected on 2 node(s)"),
        "{}",
        plan.selection
    );
    let seen = s.api.seen();
    assert!(
        seen.iter()
            .any(|u| u.starts_with("/api/v1/namespaces/shop/pods?")
                && u.contains("labelSelector=app%3Dcheckout")),
        "{seen:?}"
    );
    // A dry run creates nothing.
    let err = s
        .ops
        .get(pb::GetExperimentRequest {
            name: "checkout-drop".into(),
        })
        .await
        .expect_err("not created");
    assert_eq!(err.code(), Code::NotFound);
    drop(s.agents);
    s.c.shutdown().await;
    drop(s.env);
}

#[tokio::test]
async fn a_run_sends_each_fault_to_the_pods_node_aimed_at_its_container() {
    let mut s = setup(open_pods_policy()).await;
    let document = pods_doc(
        "checkout-chaos",
        "{namespace: shop, labelSelector: app=checkout, containers: [app]}",
        "mode: all",
        "[{kind: drop, probability: 0.3}, {kind: process, action: kill, signal: SIGKILL, count: 1}]",
    );
    let created = common::experiments::create(&mut s.ops, &document, true)
        .await
        .expect("created and started");
    assert_eq!(created.experiment.expect("experiment").targets.len(), 6);
    let running = wait_applied(&mut s.ops, "checkout-chaos").await;
    let mut per_agent: Vec<(String, usize)> = NODES
        .iter()
        .zip(&s.agents)
        .map(|(n, a)| (n.to_string(), a.applies().len()))
        .collect();
    per_agent.sort();
    assert_eq!(
        per_agent,
        [
            ("node-a".into(), 2),
            ("node-b".into(), 4),
            ("node-d".into(), 0)
        ],
        "two faults for each selected pod, on the pod's node only"
    );
    let applies = s.agents[0].applies();
    let want = container("checkout-7d4f9b6c5-abcde", true);
    let dropped =
        spec_from_pb(applies[0].spec.as_ref().expect("spec"), "apply").expect("valid spec");
    assert_eq!(dropped.target, Target::Container(want.clone()));
    assert!(matches!(dropped.fault, Fault::Drop(_)), "{dropped:?}");
    let kill = spec_from_pb(applies[1].spec.as_ref().expect("spec"), "apply").expect("valid spec");
    assert_eq!(kill.target, Target::Host);
    match kill.fault {
        Fault::Process(p) => assert_eq!(p.selector, ProcessSelector::Container(want.clone())),
        other => panic!("expected a process fault, got {other:?}"),
    }
    let ids: Vec<&str> = applies.iter().map(|a| a.fault_id.as_str()).collect();
    assert!(
        ids.iter()
            .all(|id| id.starts_with("checkout-chaos-shop-checkout-")),
        "{ids:?}"
    );
    assert_ne!(ids[0], ids[1]);
    let b_pods: Vec<String> = s.agents[1]
        .applies()
        .iter()
        .filter_map(
            |a| match spec_from_pb(a.spec.as_ref()?, "apply").ok()?.target {
                Target::Container(c) => Some(c.pod_name),
                _ => None,
            },
        )
        .collect();
    assert_eq!(
        b_pods,
        ["checkout-7d4f9b6c5-fghij", "checkout-7d4f9b6c5-vwxyz"]
    );
    assert!(running
        .targets
        .iter()
        .all(|t| t.agent == "node-a" || t.agent == "node-b"));
    // Each result names the container it is aimed at, on the pod's node.
    let aimed: Vec<(String, Target)> = running
        .targets
        .iter()
        .map(|t| {
            (
                t.agent.clone(),
                faultline_proto::convert::target_from_pb(t.target.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        aimed[..2],
        [
            ("node-a".to_string(), Target::Container(want.clone())),
            ("node-a".to_string(), Target::Container(want.clone())),
        ]
    );
    assert_eq!(
        aimed[2].1,
        Target::Container(container("checkout-7d4f9b6c5-fghij", true))
    );
    assert_eq!(running.plan.as_ref().expect("plan").target_kind, "pods");
    assert!(
        running.log.iter().any(|l| l.message
            == "started by operator/operator: 2 fault(s) on each of 3 container(s) in 3 pod(s) on 2 node(s) for 30s"),
        "{:?}",
        running.log
    );

    // While it runs, its pods are under fault for every other experiment.
    let again = pods_doc(
        "second",
        "{namespace: shop, labelSelector: app=checkout}",
        "mode: all",
        "[{kind: cpu, load: 10}]",
    );
    let plan = dry_run(&mut s.ops, &again).await.expect("dry run");
    let busy: Vec<String> = excluded(&plan)
        .into_iter()
        .filter(|x| x.contains("already under fault"))
        .collect();
    assert_eq!(busy.len(), 3, "{busy:?}");
    assert!(busy[0].ends_with("already under fault (targeted by another running experiment)"));
    assert_eq!(
        selected(&plan).len(),
        1,
        "only the crash-looping pod is left: {:?}",
        excluded(&plan)
    );

    // Abort: a RevertFault for every fault, to the same agents.
    s.ops
        .abort(pb::AbortExperimentRequest {
            name: "checkout-chaos".into(),
            reason: "test over".into(),
        })
        .await
        .expect("abort");
    common::eventually(Duration::from_secs(5), "reverts acknowledged", || {
        let mut ops = s.ops.clone();
        async move {
            let e = get(&mut ops, "checkout-chaos").await;
            e.targets
                .iter()
                .all(|t| t.state == pb::FaultState::Reverted as i32)
                .then_some(())
        }
    })
    .await;
    let reverted: Vec<String> = s.agents[0]
        .reverts()
        .iter()
        .map(|r| r.fault_id.clone())
        .collect();
    let applied: Vec<String> = applies.iter().map(|a| a.fault_id.clone()).collect();
    assert_eq!(reverted, applied);

    // The report names pods with their node, not agents.
    let md = s
        .ops
        .report(pb::ReportRequest {
            name: "checkout-chaos".into(),
            format: "md".into(),
        })
        .await
        .expect("report")
        .into_inner()
        .markdown;
    for expected in [
        "\nFaults on each selected container (2):\n",
        "\n| Pod | Node | Selected | Reason | Target |\n",
        &format!(
            "\n| shop/checkout-7d4f9b6c5-abcde | node-a | yes | - | container app ({}) of pod shop/checkout-7d4f9b6c5-abcde (uid {}) |\n",
            &want.container_id[..12],
            want.pod_uid
        ),
        "\n| shop/checkout-7d4f9b6c5-pqrst | - | no | not Running (phase Pending) | - |\n",
        "\n| Pod | Node | Fault | State |",
        "\n| shop/checkout-7d4f9b6c5-abcde/app | node-a | drop ",
    ] {
        assert!(md.contains(expected), "missing {expected:?} in:\n{md}");
    }
    assert!(!md.contains("| Agent |"), "{md}");
    drop(s.agents);
    s.c.shutdown().await;
    drop(s.env);
}

#[tokio::test]
async fn modes_and_the_namespace_and_fleet_shares_bound_the_selection() {
    // Default namespace share (50%), whole fleet.
    let mut s = setup(open_policy()).await;
    let whole = |mode: &str| {
        pods_doc(
            "share",
            "{namespace: shop, labelSelector: app=checkout}",
            mode,
            "[{kind: cpu, load: 10}]",
        )
    };
    // 6 live (Running, not terminating) pods match in shop: at most 3 under fault. Four are
    // eligible as whole pods (abcde, fghij, uvwxy, vwxyz).
    let plan = dry_run(&mut s.ops, &whole("mode: all"))
        .await
        .expect("dry run");
    assert_eq!(plan.selected.len(), 3);
    let share = "policy.max_pod_percent_per_namespace 50% of 6 matching Running pod(s) in shop = 3, 0 already under fault, room 3";
    let over: Vec<String> = excluded(&plan)
        .into_iter()
        .filter(|x| x.contains("over namespace share"))
        .collect();
    assert_eq!(over.len(), 1, "{:?}", excluded(&plan));
    assert!(
        over[0].ends_with(&format!("over namespace share ({share})")),
        "{}",
        over[0]
    );
    assert!(plan.selection.contains(share), "{}", plan.selection);
    for s in &plan.selected {
        let t = faultline_proto::convert::target_from_pb(s.target.as_ref());
        match t {
            Target::Container(c) => {
                assert_eq!(c.container_id, "", "the whole pod");
                assert!(!c.pod_uid.is_empty());
            }
            other => panic!("expected a pod target, got {other:?}"),
        }
    }

    let plan = dry_run(&mut s.ops, &whole("mode: fixed, value: 2"))
        .await
        .expect("dry run");
    assert_eq!(plan.selected.len(), 2);
    assert_eq!(
        excluded(&plan)
            .iter()
            .filter(|x| x.ends_with("not chosen: mode fixed 2 chose 2 of 4 eligible pods"))
            .count(),
        2
    );
    let plan = dry_run(&mut s.ops, &whole("mode: one"))
        .await
        .expect("dry run");
    assert_eq!(plan.selected.len(), 1);
    // The same name picks the same pod.
    let again = dry_run(&mut s.ops, &whole("mode: one"))
        .await
        .expect("dry run");
    assert_eq!(selected(&plan), selected(&again));
    let plan = dry_run(&mut s.ops, &whole("mode: percent, value: 50"))
        .await
        .expect("dry run");
    assert_eq!(plan.selected.len(), 2);

    // A single replica may not be touched under the default share.
    let solo = pods_doc(
        "dns",
        "{namespace: kube-system}",
        "mode: all",
        "[{kind: cpu, load: 10}]",
    );
    let err = dry_run(&mut s.ops, &solo).await.expect_err("protected");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "no pod can be selected: kube-system/coredns-5d78c9869d-x2x7q: protected namespace kube-system (policy.protected_namespaces)"
    );
    drop(s.agents);
    s.c.shutdown().await;

    // protected_namespaces is configurable; the namespace share still protects one replica.
    let policy = Policy {
        protected_namespaces: vec!["faultline".into()],
        ..open_policy()
    };
    let mut s = setup(policy).await;
    let err = dry_run(&mut s.ops, &solo).await.expect_err("share");
    assert_eq!(
        err.message(),
        "no pod can be selected: policy.max_pod_percent_per_namespace 50% of 1 matching Running pod(s) in kube-system = 0, 0 already under fault, room 0 allows 0 pods"
    );
    drop(s.agents);
    s.c.shutdown().await;

    // Default fleet share: 50% of 3 connected agents = 1 node.
    let mut s = setup(Policy {
        max_pod_percent_per_namespace: 100.0,
        ..Policy::default()
    })
    .await;
    let plan = dry_run(&mut s.ops, &whole("mode: all"))
        .await
        .expect("dry run");
    let nodes: std::collections::BTreeSet<&str> =
        plan.selected.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(nodes.len(), 1, "{:?}", selected(&plan));
    assert!(
        excluded(&plan).iter().any(|x| x.ends_with(
            "over fleet share (policy.max_fleet_percent_under_fault 50% of 3 connected = 1, 0 already under fault, room 1 node(s))"
        )),
        "{:?}",
        excluded(&plan)
    );
    drop(s.agents);
    s.c.shutdown().await;
}

#[tokio::test]
async fn without_the_kubernetes_api_pod_targets_are_refused_with_the_reason() {
    let env = Env::with_agents(&NODES);
    let c = common::start(env.config_with(open_policy())).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let document = pods_doc(
        "p",
        "{namespace: shop}",
        "mode: all",
        "[{kind: cpu, load: 10}]",
    );
    let err = dry_run(&mut ops, &document).await.expect_err("no kube");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "spec.targets.pods: pod targets are not available: the coordinator has no Kubernetes access: it does not run in a cluster (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig nor KUBECONFIG is given"
    );
    c.shutdown().await;

    // The API refuses: UNAVAILABLE with what to fix.
    let (client, _api) = FakeApi::start(|_| {
        (403, status_json(403, "Forbidden", "pods is forbidden: User \"system:serviceaccount:faultline:faultline-coordinator\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\""))
    });
    let access = PodAccess::Cluster(std::sync::Arc::new(
        faultline_coordinator::kube::KubeCluster::new(client),
    ));
    let c = Coordinator::start_with_pods(env.config_with(open_policy()), None, access)
        .await
        .expect("start");
    let mut ops = experiments(&env, &c, "operator").await;
    let err = dry_run(&mut ops, &document).await.expect_err("forbidden");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().starts_with("spec.targets.pods: could not resolve the pods: listing pods in namespace shop: pods is forbidden"),
        "{}",
        err.message()
    );
    assert!(
        err.message()
            .ends_with("see daemonset/manifests/10-rbac.yaml)"),
        "{}",
        err.message()
    );
    c.shutdown().await;
}

#[tokio::test]
async fn get_policy_serves_the_pod_policy_that_planning_enforces() {
    let env = Env::with_agents(&NODES);
    let c = common::start(env.config_with(Policy::default())).await;
    let policy = common::fleet(&env, &c, "viewer")
        .await
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("GetPolicy")
        .into_inner();
    assert_eq!(policy.protected_namespaces, ["kube-system", "faultline"]);
    assert_eq!(policy.max_pod_percent_per_namespace, 50.0);
    c.shutdown().await;

    // As the coordinator's config file sets them.
    let configured = faultline_coordinator::config::parse_policy(
        "[policy]\nmax_fleet_percent_under_fault = 100\nprotected_namespaces = [\"shop\"]\n\
         max_pod_percent_per_namespace = 100\n",
    )
    .expect("valid config");
    let mut s = setup(configured).await;
    let policy = common::fleet(&s.env, &s.c, "viewer")
        .await
        .get_policy(pb::GetPolicyRequest {})
        .await
        .expect("GetPolicy")
        .into_inner();
    assert_eq!(policy.protected_namespaces, ["shop"]);
    assert_eq!(policy.max_pod_percent_per_namespace, 100.0);
    let document = pods_doc(
        "dns",
        "{namespaces: [shop, kube-system]}",
        "mode: all",
        "[{kind: cpu, load: 10}]",
    );
    let plan = dry_run(&mut s.ops, &document).await.expect("dry run");
    assert_eq!(
        plan.selected
            .iter()
            .map(|t| t.agent.as_str())
            .collect::<Vec<_>>(),
        ["node-a"],
        "kube-system is no longer protected and 100% of its one pod may be under fault"
    );
    assert!(
        plan.selected[0]
            .description
            .starts_with("pod kube-system/coredns-5d78c9869d-x2x7q"),
        "{:?}",
        plan.selected
    );
    assert!(
        excluded(&plan).contains(
            &"node-a | pod shop/checkout-7d4f9b6c5-abcde | protected namespace shop (policy.protected_namespaces)"
                .to_string()
        ),
        "{:?}",
        excluded(&plan)
    );
    drop(s.agents);
    s.c.shutdown().await;
}
