//! Example experiments for the rendering tests (built by hand, as the coordinator sends them).

use faultline_proto::pb;

/// 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

fn cpu() -> pb::FaultSpec {
    pb::FaultSpec {
        target: None,
        kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
            load_percent: 80,
            workers: 1,
        })),
    }
}

fn pause() -> pb::FaultSpec {
    pb::FaultSpec {
        target: None,
        kind: Some(pb::fault_spec::Kind::Process(pb::ProcessFault {
            action: Some(pb::process_fault::Action::Pause(true)),
            selector: Some(pb::process_fault::Selector::NamePattern(
                "fl-demo-service".into(),
            )),
            count: 0,
        })),
    }
}

pub fn plan() -> pb::Plan {
    pb::Plan {
        selected: ["node-a", "node-b"]
            .into_iter()
            .map(|a| pb::PlannedTarget {
                agent: a.into(),
                target: None,
                description: "zone=a".into(),
            })
            .collect(),
        excluded: vec![pb::ExcludedTarget {
            agent: "node-c".into(),
            description: "zone=b".into(),
            reason: "over blast radius (maxTargets 2)".into(),
            pod: String::new(),
        }],
        faults: vec![pause(), cpu()],
        selection: String::new(),
        target_kind: "agents".into(),
        fault_duration_ms: Vec::new(),
    }
}

/// A pod in namespace shop as a target (container `app` when `container` is set).
pub fn pod_target(name: &str, container: bool) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::Container(pb::ContainerTarget {
            container_id: if container {
                format!("{:0<64}", name.len())
            } else {
                String::new()
            },
            pod_uid: format!("uid-{name}"),
            pod_namespace: "shop".into(),
            pod_name: name.into(),
            container_name: if container {
                "app".into()
            } else {
                String::new()
            },
        })),
    }
}

/// Three checkout pods on two nodes, two excluded; the faults aim at the whole pods.
pub fn pods_plan() -> pb::Plan {
    let selected = |node: &str, pod: &str| pb::PlannedTarget {
        agent: node.into(),
        target: Some(pod_target(pod, false)),
        description: format!("pod shop/{pod} (uid uid-{pod})"),
    };
    let excluded = |node: &str, pod: &str, reason: &str| pb::ExcludedTarget {
        agent: node.into(),
        description: format!("pod {pod}"),
        reason: reason.into(),
        pod: pod.into(),
    };
    pb::Plan {
        selected: vec![
            selected("node-a", "checkout-abcde"),
            selected("node-b", "checkout-fghij"),
            selected("node-b", "checkout-vwxyz"),
        ],
        excluded: vec![
            excluded(
                "node-a",
                "kube-system/coredns-x2x7q",
                "protected namespace kube-system (policy.protected_namespaces)",
            ),
            excluded("-", "shop/checkout-pqrst", "not Running (phase Pending)"),
        ],
        faults: vec![cpu()],
        selection: "pods (namespace shop, labelSelector app=checkout): mode all of 3 eligible \
                    pods = 3 -> 3 pod(s) selected on 2 node(s)"
            .into(),
        target_kind: "pods".into(),
        fault_duration_ms: Vec::new(),
    }
}

/// The pod experiment running: one cpu fault applied on each pod.
pub fn pods_running() -> pb::Experiment {
    let mut e = running();
    e.name = "checkout-pods".into();
    e.plan = Some(pods_plan());
    e.targets = [
        "node-a:checkout-abcde",
        "node-b:checkout-fghij",
        "node-b:checkout-vwxyz",
    ]
    .into_iter()
    .map(|t| {
        let (node, pod) = t.split_once(':').expect("node:pod");
        pb::TargetResult {
            target: Some(pod_target(pod, false)),
            fault_id: format!("checkout-pods-shop-{pod}-0"),
            ..result(node, 0, pb::FaultState::Applied, 0)
        }
    })
    .collect();
    e
}

fn result(agent: &str, fault: usize, state: pb::FaultState, reverted: i64) -> pb::TargetResult {
    pb::TargetResult {
        agent: agent.into(),
        fault_id: format!("checkout-loss-{agent}-{fault}"),
        state: state as i32,
        applied_unix_ms: T0 + 150,
        reverted_unix_ms: reverted,
        revert_reason: if reverted > 0 {
            pb::RevertReason::Abort as i32
        } else {
            0
        },
        error: String::new(),
        counters: Default::default(),
        ..Default::default()
    }
}

fn sample(at: i64, value: f64, breached: bool) -> pb::GuardSample {
    pb::GuardSample {
        guard: "error-rate".into(),
        at_unix_ms: at,
        value,
        breached,
        error: String::new(),
        ..Default::default()
    }
}

/// Running for 3 s of 60 s, every fault applied, one guard sample per second.
pub fn running() -> pb::Experiment {
    pb::Experiment {
        id: "exp-0001".into(),
        name: "checkout-loss".into(),
        phase: pb::ExperimentPhase::Running as i32,
        document: "apiVersion: faultline.dev/v1\nkind: Experiment\n".into(),
        created_by: "operator/operator".into(),
        created_unix_ms: T0 - 100,
        started_unix_ms: T0,
        ended_unix_ms: 0,
        duration_ms: 60_000,
        verdict_reason: String::new(),
        targets: vec![
            result("node-a", 0, pb::FaultState::Applied, 0),
            result("node-a", 1, pb::FaultState::Applied, 0),
            result("node-b", 0, pb::FaultState::Applied, 0),
            result("node-b", 1, pb::FaultState::Applied, 0),
        ],
        guard_timeline: vec![
            sample(T0 + 1000, 0.0, false),
            sample(T0 + 2000, 0.01, false),
            sample(T0 + 3000, 0.02, false),
        ],
        plan: Some(plan()),
        ..Default::default()
    }
}

/// Aborted by the error-rate guard 4 s in; the last revert was acknowledged 83 ms after the
/// breach.
pub fn aborted() -> pb::Experiment {
    let mut e = running();
    e.phase = pb::ExperimentPhase::Aborted as i32;
    e.ended_unix_ms = T0 + 4_083;
    e.verdict_reason = "guard error-rate breached: 0.9 above 0.05 for 2s".into();
    e.targets = vec![
        result("node-a", 0, pb::FaultState::Reverted, T0 + 4_020),
        result("node-a", 1, pb::FaultState::Reverted, T0 + 4_031),
        result("node-b", 0, pb::FaultState::Reverted, T0 + 4_083),
        result("node-b", 1, pb::FaultState::Reverted, T0 + 4_050),
    ];
    e.targets[3].counters = [("paused".to_string(), 1u64)].into_iter().collect();
    e.guard_timeline.push(sample(T0 + 4_000, 0.9, true));
    e
}

/// An event carrying `e` at `at`.
pub fn event(e: pb::Experiment, at: i64, message: &str) -> pb::ExperimentEvent {
    pb::ExperimentEvent {
        at_unix_ms: at,
        experiment: Some(e),
        message: message.into(),
        ..Default::default()
    }
}
