//! The pod planner: a worked cluster with every exclusion reason, the modes, the namespace and
//! fleet shares, refusals, and properties over many seeded random clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::shuffle::SplitMix64;
use super::*;
use crate::fault::{CpuFault, Fault, FaultKind, FaultSpec, Target};

fn spec(name: &str, mode: Mode) -> ExperimentSpec {
    ExperimentSpec {
        steady_state: None,
        name: name.into(),
        duration: Duration::from_secs(30),
        agents: AgentSelector::default(),
        pods: Some(selector(&[])),
        mode,
        faults: vec![FaultSpec {
            target: Target::Host,
            fault: Fault::Cpu(CpuFault {
                load_percent: 10,
                workers: 1,
            }),
        }],
        guards: vec![],
        guard_interval: Duration::from_secs(1),
        blast_radius: BlastRadius::default(),
        on_target_failure: OnTargetFailure::Abort,
        fault_durations: Vec::new(),
    }
}

fn selector(containers: &[&str]) -> PodSelector {
    PodSelector {
        namespaces: vec!["shop".into()],
        label_selector: Some("app=checkout".into()),
        field_selector: None,
        containers: containers.iter().map(|c| c.to_string()).collect(),
    }
}

fn policy(fleet_pct: f64, ns_pct: f64) -> PlanPolicy {
    PlanPolicy {
        max_fleet_percent_under_fault: fleet_pct,
        max_concurrent_experiments: 3,
        allowed_fault_kinds: FaultKind::ALL.to_vec(),
        max_duration: Duration::from_secs(3600),
        protected_agent_labels: BTreeMap::from([(
            "faultline.dev/protected".to_string(),
            "true".to_string(),
        )]),
        protected_namespaces: vec!["kube-system".into(), "faultline".into()],
        max_pod_percent_per_namespace: ns_pct,
    }
}

fn pod(ns: &str, name: &str, node: &str) -> PodView {
    PodView {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{ns}-{name}"),
        node: Some(node.into()),
        phase: "Running".into(),
        terminating: false,
        containers: vec![
            ContainerView {
                name: "app".into(),
                id: format!("{:0>8x}", name.len() * 4096 + ns.len()),
                running: true,
                state: "running".into(),
            },
            ContainerView {
                name: "proxy".into(),
                id: "ee".into(),
                running: true,
                state: "running".into(),
            },
        ],
    }
}

fn node(name: &str, ready: bool, labels: &[(&str, &str)]) -> NodeView {
    NodeView {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ready,
    }
}

fn agent(name: &str, connected: bool) -> AgentView {
    AgentView {
        name: name.into(),
        labels: BTreeMap::new(),
        connected,
        faults_held: 0,
    }
}

struct Cluster {
    pods: Vec<PodView>,
    nodes: Vec<NodeView>,
    agents: Vec<AgentView>,
    under_fault: BTreeSet<String>,
    pods_under_fault: BTreeSet<String>,
}

impl Cluster {
    fn plan(&self, spec: &ExperimentSpec, policy: &PlanPolicy) -> Result<PodPlan, Refusal> {
        plan_pods(&PodPlanInput {
            spec,
            selector: spec.pods.as_ref().expect("a pod spec"),
            pods: &self.pods,
            nodes: &self.nodes,
            agents: &self.agents,
            policy,
            running_experiments: 0,
            under_fault: &self.under_fault,
            pods_under_fault: &self.pods_under_fault,
        })
    }
}

/// Four healthy pods on node-a..node-d, plus one pod for each exclusion reason.
fn worked() -> Cluster {
    let mut pods: Vec<PodView> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| pod("shop", &format!("checkout-{n}"), &format!("node-{n}")))
        .collect();
    pods.push(pod("kube-system", "coredns-1", "node-a"));
    pods.push(PodView {
        phase: "Pending".into(),
        node: None,
        ..pod("shop", "checkout-pending", "")
    });
    pods.push(PodView {
        terminating: true,
        ..pod("shop", "checkout-old", "node-a")
    });
    pods.push(pod("shop", "checkout-notready", "node-n"));
    pods.push(pod("shop", "checkout-nobody", "node-x"));
    pods.push(pod("shop", "checkout-gone", "node-g"));
    pods.push(pod("shop", "checkout-vault", "node-p"));
    let mut crashing = pod("shop", "checkout-crash", "node-b");
    crashing.containers[0] = ContainerView {
        name: "app".into(),
        id: String::new(),
        running: false,
        state: "waiting: CrashLoopBackOff".into(),
    };
    pods.push(crashing);
    let mut other = pod("shop", "checkout-noapp", "node-c");
    other.containers.remove(0);
    pods.push(other);
    pods.push(pod("shop", "checkout-busy", "node-d"));
    let nodes = vec![
        node("node-a", true, &[]),
        node("node-b", true, &[]),
        node("node-c", true, &[]),
        node("node-d", true, &[]),
        node("node-n", false, &[]),
        node("node-p", true, &[("faultline.dev/protected", "true")]),
    ];
    let mut agents: Vec<AgentView> = ["node-a", "node-b", "node-c", "node-d", "node-n", "node-p"]
        .iter()
        .map(|n| agent(n, true))
        .collect();
    agents.push(agent("node-g", false));
    Cluster {
        pods,
        nodes,
        agents,
        under_fault: BTreeSet::new(),
        pods_under_fault: BTreeSet::from(["uid-shop-checkout-busy".to_string()]),
    }
}

fn reasons(plan: &PodPlan) -> Vec<String> {
    plan.excluded
        .iter()
        .map(|x| format!("{}: {}", x.pod, x.reason))
        .collect()
}

#[test]
fn every_exclusion_says_why() {
    let c = worked();
    let mut s = spec("checkout-kill", Mode::All);
    s.pods = Some(selector(&["app"]));
    let p = c.plan(&s, &policy(100.0, 100.0)).expect("plan");
    let keys: Vec<String> = p.targets.iter().map(|t| t.key()).collect();
    assert_eq!(
        keys,
        [
            "shop/checkout-a/app",
            "shop/checkout-b/app",
            "shop/checkout-c/app",
            "shop/checkout-d/app"
        ]
    );
    assert_eq!(p.pods, 4);
    let a = &p.targets[0];
    assert_eq!(a.node, "node-a");
    assert_eq!(a.container.pod_uid, "uid-shop-checkout-a");
    assert_eq!(a.container.container_id, "0000a004");
    assert_eq!(a.container.container_name, "app");
    assert_eq!(a.container.pod_namespace, "shop");
    assert_eq!(
        reasons(&p),
        [
            "kube-system/coredns-1: protected namespace kube-system (policy.protected_namespaces)",
            "shop/checkout-busy: already under fault (targeted by another running experiment)",
            "shop/checkout-crash: container app is not running (waiting: CrashLoopBackOff)",
            "shop/checkout-gone: no agent on node node-g: its agent is not connected",
            "shop/checkout-noapp: has no container app (containers: proxy)",
            "shop/checkout-nobody: no agent on node node-x: no Faultline agent has connected from it",
            "shop/checkout-notready: node node-n is not Ready",
            "shop/checkout-old: terminating (deletion requested)",
            "shop/checkout-pending: not Running (phase Pending)",
            "shop/checkout-vault: on protected node node-p (faultline.dev/protected=true)",
        ]
    );
    assert!(
        p.selection.ends_with("-> 4 pod(s) selected on 4 node(s)"),
        "{}",
        p.selection
    );
}

#[test]
fn whole_pods_when_no_container_is_named_and_one_target_per_container_otherwise() {
    let c = worked();
    let p = c
        .plan(&spec("whole", Mode::Fixed(1)), &policy(100.0, 100.0))
        .expect("plan");
    assert_eq!(p.targets.len(), 1);
    assert_eq!(p.targets[0].container.container_id, "");
    assert_eq!(p.targets[0].container.container_name, "");
    assert!(p.targets[0]
        .container
        .pod_uid
        .starts_with("uid-shop-checkout-"));

    let mut s = spec("both", Mode::Fixed(2));
    s.pods = Some(selector(&["app", "proxy"]));
    let p = c.plan(&s, &policy(100.0, 100.0)).expect("plan");
    assert_eq!(p.pods, 2);
    assert_eq!(p.targets.len(), 4, "two containers of two pods");
}

#[test]
fn modes_and_blast_radius_count_pods() {
    let c = worked();
    let open = policy(100.0, 100.0);
    let n = |mode: Mode| c.plan(&spec("m", mode), &open).expect("plan").pods;
    // Eligible: checkout-a..d, checkout-noapp and checkout-crash (no container is named, so
    // the whole pod is the target).
    assert_eq!(n(Mode::One), 1);
    assert_eq!(n(Mode::All), 6);
    assert_eq!(n(Mode::Fixed(3)), 3);
    assert_eq!(n(Mode::Fixed(50)), 6);
    assert_eq!(n(Mode::Percent(40)), 3);
    assert_eq!(n(Mode::Percent(1)), 1);

    let mut s = spec("m", Mode::All);
    s.blast_radius.max_targets = Some(2);
    let p = c.plan(&s, &open).expect("plan");
    assert_eq!(p.pods, 2);
    let over: Vec<&ExcludedPod> = p
        .excluded
        .iter()
        .filter(|x| matches!(x.reason, PodExclusion::OverBlastRadius(_)))
        .collect();
    assert_eq!(over.len(), 4);
    assert_eq!(
        over[0].reason.to_string(),
        "over blast radius (blastRadius.maxTargets 2)"
    );
    let p = c.plan(&spec("m", Mode::Fixed(2)), &open).expect("plan");
    assert!(p
        .excluded
        .iter()
        .any(|x| x.reason.to_string() == "not chosen: mode fixed 2 chose 2 of 6 eligible pods"));
}

#[test]
fn a_namespace_keeps_most_of_its_live_pods() {
    let c = worked();
    // 11 Running, not terminating pods match in shop (the pending and terminating ones do not
    // count; the one under fault does): 50% = 5, 1 already under fault, room 4.
    let p = c
        .plan(&spec("share", Mode::All), &policy(100.0, 50.0))
        .expect("plan");
    assert_eq!(p.pods, 4);
    let text = "policy.max_pod_percent_per_namespace 50% of 11 matching Running pod(s) in shop = 5, 1 already under fault, room 4";
    assert!(p.selection.contains(text), "{}", p.selection);
    let over: Vec<String> = p
        .excluded
        .iter()
        .filter(|x| matches!(x.reason, PodExclusion::OverNamespaceShare(_)))
        .map(|x| x.reason.to_string())
        .collect();
    assert_eq!(over, vec![format!("over namespace share ({text})"); 2]);

    // One replica: 50% of 1 is 0, so nothing may be touched.
    let one = Cluster {
        pods: vec![pod("shop", "solo", "node-a")],
        ..worked()
    };
    let err = one
        .plan(&spec("solo", Mode::All), &policy(100.0, 50.0))
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "no pod can be selected: policy.max_pod_percent_per_namespace 50% of 1 matching Running pod(s) in shop = 0, 0 already under fault, room 0 allows 0 pods"
    );
}

#[test]
fn the_fleet_share_counts_nodes_and_pods_on_the_same_node_share_one() {
    let mut c = worked();
    c.pods = vec![
        pod("shop", "p1", "node-a"),
        pod("shop", "p2", "node-a"),
        pod("shop", "p3", "node-b"),
        pod("shop", "p4", "node-c"),
    ];
    c.pods_under_fault.clear();
    // 6 connected agents, 34% = 2 nodes.
    let p = c
        .plan(&spec("fleet", Mode::All), &policy(34.0, 100.0))
        .expect("plan");
    let nodes: BTreeSet<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "{:?}", p.targets);
    assert!(p
        .excluded
        .iter()
        .all(|x| matches!(x.reason, PodExclusion::OverFleetShare(_))));
    assert!(p.selection.contains("room 2 node(s)"), "{}", p.selection);

    // Nodes already under fault cost no room: with node-a busy and room 1, both pods on node-a
    // and one more node fit.
    c.under_fault = BTreeSet::from(["node-a".to_string()]);
    let p = c
        .plan(&spec("fleet", Mode::All), &policy(34.0, 100.0))
        .expect("plan");
    let on_a = p.targets.iter().filter(|t| t.node == "node-a").count();
    assert_eq!(on_a, 2);
    assert_eq!(p.pods, 3);
}

#[test]
fn refusals_name_the_reason() {
    let c = worked();
    let empty = Cluster {
        pods: vec![],
        ..worked()
    };
    let err = empty
        .plan(&spec("none", Mode::All), &policy(100.0, 100.0))
        .expect_err("no pods");
    assert_eq!(
        err.to_string(),
        "no pod can be selected: no pod matches spec.targets.pods (namespace shop, labelSelector app=checkout)"
    );
    let only_bad = Cluster {
        pods: c.pods[4..6].to_vec(),
        ..worked()
    };
    let err = only_bad
        .plan(&spec("bad", Mode::All), &policy(100.0, 100.0))
        .expect_err("none eligible");
    assert_eq!(
        err.to_string(),
        "no pod can be selected: kube-system/coredns-1: protected namespace kube-system (policy.protected_namespaces); shop/checkout-pending: not Running (phase Pending)"
    );
    let mut s = spec("kinds", Mode::All);
    let mut p = policy(100.0, 100.0);
    p.allowed_fault_kinds = vec![FaultKind::Network];
    s.blast_radius.max_percent = Some(1.0);
    let err = c.plan(&s, &p).expect_err("kind");
    assert!(
        err.to_string()
            .starts_with("spec.faults[0].kind: cpu is not allowed"),
        "{err}"
    );
    // kube-system's pod matches too, but protected namespaces do not count.
    let err = c.plan(&s, &policy(100.0, 100.0)).expect_err("1% of 11");
    assert_eq!(
        err.to_string(),
        "no pod can be selected: blastRadius.maxPercent 1% of 11 matching Running pods = 0 allows 0 pods"
    );
}

/// Over many random clusters: the plan is stable, never exceeds a namespace's share, the fleet
/// share or the mode, and every pod is either a target or excluded once.
#[test]
fn properties_over_random_clusters() {
    let mut rng = SplitMix64::new(7);
    for round in 0..300 {
        let nodes = 1 + rng.below(8);
        let mut c = worked();
        c.agents = (0..nodes).map(|i| agent(&format!("n{i}"), true)).collect();
        c.nodes = (0..nodes)
            .map(|i| node(&format!("n{i}"), true, &[]))
            .collect();
        c.pods_under_fault.clear();
        c.pods = (0..1 + rng.below(30))
            .map(|i| {
                let ns = ["shop", "web", "api"][rng.below(3)];
                let mut p = pod(ns, &format!("p{i}"), &format!("n{}", rng.below(nodes)));
                if rng.below(5) == 0 {
                    p.phase = "Pending".into();
                }
                p
            })
            .collect();
        let mut s = spec(
            &format!("exp-{round}"),
            Mode::Percent(1 + rng.below(100) as u32),
        );
        s.pods = Some(PodSelector {
            namespaces: vec!["api".into(), "shop".into(), "web".into()],
            ..selector(&[])
        });
        let fleet = 10.0 + rng.below(91) as f64;
        let ns_pct = 10.0 + rng.below(91) as f64;
        let pol = policy(fleet, ns_pct);
        let Ok(p) = c.plan(&s, &pol) else { continue };
        assert_eq!(Ok(p.clone()), c.plan(&s, &pol), "stable");
        assert_eq!(p.pods + p.excluded.len(), c.pods.len());
        let used: BTreeSet<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
        assert!(used.len() <= (nodes as f64 * fleet / 100.0 + 1e-9) as usize);
        for ns in ["shop", "web", "api"] {
            let live = c
                .pods
                .iter()
                .filter(|x| x.namespace == ns && x.live())
                .count();
            let took = p
                .targets
                .iter()
                .filter(|t| t.container.pod_namespace == ns)
                .count();
            assert!(
                took <= (live as f64 * ns_pct / 100.0 + 1e-9) as usize,
                "{ns}"
            );
        }
    }
}
