//! The Markdown report of an aborted experiment, and the JSON record.

use std::collections::{BTreeMap, VecDeque};

use faultline_core::experiment::Phase;

use super::*;
use crate::experiments::record::*;

/// 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000;

fn aborted() -> ExperimentRecord {
    let target = |agent: &str, reverted: i64| TargetRecord {
        agent: agent.into(),
        fault_index: 0,
        fault_id: format!("checkout-{agent}-0"),
        fault: "cpu 50% x 1".into(),
        state: TargetState::Reverted,
        apply_sent_unix_ms: T0 + 5,
        applied_unix_ms: T0 + 20,
        revert_sent_unix_ms: T0 + 4_010,
        reverted_unix_ms: reverted,
        revert_reason: "abort".into(),
        error: String::new(),
        counters: BTreeMap::from([("workers".to_string(), 1)]),
        pod: None,
    };
    let mut telemetry = BTreeMap::new();
    let mut t = TelemetrySummary::default();
    for v in [0.2, 0.6] {
        t.cpu_busy_ratio.add(v);
        t.memory_used_bytes.add(512.0 * 1024.0 * 1024.0);
    }
    telemetry.insert("node-a".to_string(), t);
    ExperimentRecord {
        id: "checkout".into(),
        name: "checkout".into(),
        phase: Phase::Aborted,
        document: String::new(),
        created_by: "operator/operator".into(),
        created_unix_ms: T0 - 100,
        started_unix_ms: T0,
        ended_unix_ms: T0 + 4_000,
        duration_ms: 60_000,
        guard_interval_ms: 1000,
        on_target_failure: "abort".into(),
        verdict_reason:
            "aborted: guard error-rate (prometheus) breached: 0.9000 above 0.05: breached".into(),
        plan: PlanRecord {
            selected: vec![PlannedAgent {
                agent: "node-a".into(),
                description: "zone=a".into(),
                pod: None,
            }],
            excluded: vec![ExcludedAgent {
                agent: "node-b".into(),
                description: "zone=b".into(),
                reason: "not matching: labels do not match zone=a".into(),
                pod: None,
            }],
            faults: vec!["cpu 50% x 1".into()],
            selection: "mode all of 1 eligible = 1 -> 1 selected".into(),
        },
        guards: vec![GuardInfo {
            name: "error-rate".into(),
            guard_type: "prometheus".into(),
            description: "prometheus http://p:9090/ `x` above 0.05".into(),
            on_error: "abort".into(),
        }],
        targets: vec![target("node-a", T0 + 4_083)],
        guard_timeline: VecDeque::from([Sample {
            guard: "error-rate".into(),
            at_unix_ms: T0 + 4_000,
            value: Some(0.9),
            outcome: "breached".into(),
            breached: true,
            error: String::new(),
            detail: "0.9000 above 0.05: breached".into(),
            healthy: None,
        }]),
        abort: Some(AbortRecord {
            trigger: "guard".into(),
            by: "error-rate".into(),
            reason: "guard error-rate (prometheus) breached".into(),
            guard: "error-rate".into(),
            guard_type: "prometheus".into(),
            observed_value: Some(0.9),
            triggered_unix_ms: T0 + 4_000,
            sent_unix_ms: T0 + 4_002,
            last_revert_ack_unix_ms: T0 + 4_083,
            latency_ms: Some(83),
            unacknowledged: 0,
        }),
        telemetry,
        log: VecDeque::from([LogEntry {
            at_unix_ms: T0,
            message: "started by operator/operator".into(),
        }]),
        gaps: Vec::new(),
        hypothesis: None,
        impact: Vec::new(),
        findings: Vec::new(),
        pod_kills: Vec::new(),
    }
}

#[test]
fn markdown_tells_verdict_latency_plan_targets_guards_and_telemetry() {
    let md = markdown(&aborted());
    for line in [
        "# Experiment checkout — aborted\n",
        "| Abort latency | 83 ms (trigger to the last revert acknowledged) |",
        "| Started | 2023-11-14T22:13:20.000Z |",
        "| Duration | 1m planned, ran 4.000 s |",
        "- Guard: error-rate (prometheus), observed value 0.9000",
        "- RevertFault sent: 2023-11-14T22:13:24.002Z (+2 ms)",
        "- Last revert acknowledged: 2023-11-14T22:13:24.083Z (+83 ms)",
        "| node-b | no | not matching: labels do not match zone=a | zone=b |",
        "| node-a | cpu 50% x 1 `checkout-node-a-0` | Reverted | +0.020 s | +4.083 s | abort | - | workers=1 |",
        "| error-rate | prometheus | prometheus http://p:9090/ `x` above 0.05 | abort | 1 | 1 | 0.9000 above 0.05: breached |",
        "| node-a | 2 | 20 / 40 / 60 % | 512 / 512 / 512 MiB | - |",
        "- 2023-11-14T22:13:20.000Z started by operator/operator",
    ] {
        assert!(md.contains(line), "missing {line:?} in:\n{md}");
    }
    let js: serde_json::Value =
        serde_json::from_str(&json(&aborted()).expect("json")).expect("parse");
    assert_eq!(js["abort"]["latency_ms"], 83);
    assert_eq!(js["targets"][0]["state"], "reverted");
}

/// The aborted experiment, aimed at one pod on node-a; another pod was not Running.
fn aborted_on_a_pod() -> ExperimentRecord {
    let pod = PodRef {
        namespace: "shop".into(),
        name: "checkout-1".into(),
        uid: "uid-1".into(),
        container: String::new(),
        container_id: String::new(),
    };
    let mut rec = aborted();
    rec.plan = PlanRecord {
        selected: vec![PlannedAgent {
            agent: "node-a".into(),
            description: pod.describe(),
            pod: Some(pod.clone()),
        }],
        excluded: vec![ExcludedAgent {
            agent: "-".into(),
            description: "pod shop/checkout-2".into(),
            reason: "not Running (phase Pending)".into(),
            pod: Some("shop/checkout-2".into()),
        }],
        faults: vec!["cpu 50% x 1".into()],
        selection: "pods (namespace shop): mode all of 1 eligible pods = 1".into(),
    };
    rec.targets[0].pod = Some(pod);
    rec.targets[0].fault_id = "checkout-shop-checkout-1-0".into();
    rec
}

#[test]
fn markdown_names_pods_and_their_nodes_for_pod_targets() {
    let rec = aborted_on_a_pod();
    let md = markdown(&rec);
    for line in [
        "\nFaults on each selected pod (1):\n",
        "\n| Pod | Node | Selected | Reason | Target |\n|---|---|---|---|---|\n",
        "\n| shop/checkout-1 | node-a | yes | - | pod shop/checkout-1 (uid uid-1) |\n",
        "\n| shop/checkout-2 | - | no | not Running (phase Pending) | - |\n",
        "\n| Pod | Node | Fault | State | Applied | Reverted | Reason | Error | Counters |\n",
        "\n| shop/checkout-1 | node-a | cpu 50% x 1 `checkout-shop-checkout-1-0` | Reverted | +0.020 s | +4.083 s | abort | - | workers=1 |\n",
        "\n| Node | Samples | CPU busy |",
    ] {
        assert!(md.contains(line), "missing {line:?} in:\n{md}");
    }
    assert!(!md.contains("Agent"), "{md}");
    assert_eq!(rec.plan.target_kind(), "pods");
    assert_eq!(rec.plan.targets_phrase(), "1 pod(s) on 1 node(s)");
    // The JSON report carries the pods as stored.
    let js: serde_json::Value = serde_json::from_str(&json(&rec).expect("json")).expect("parse");
    assert_eq!(js["plan"]["excluded"][0]["pod"], "shop/checkout-2");
    assert_eq!(js["targets"][0]["pod"]["name"], "checkout-1");
    // Agent plans keep saying agents.
    let agents = aborted();
    assert_eq!(agents.plan.target_kind(), "agents");
    assert_eq!(agents.plan.targets_phrase(), "1 agent(s)");
    assert!(markdown(&agents).contains("\nFaults on each selected agent (1):\n"));
}
