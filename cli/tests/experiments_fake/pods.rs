//! The fake's answer for pod targets: the plan a coordinator sends for checkout pods on two
//! nodes, with the pods it excluded and why.

use faultline_proto::pb;

/// Container `app` of pod `name`, whose runtime ID starts with `id`.
fn pod(name: &str, id: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::Container(pb::ContainerTarget {
            container_id: format!("{id:0<64}"),
            pod_uid: format!("uid-{name}"),
            pod_namespace: "shop".into(),
            pod_name: name.into(),
            container_name: "app".into(),
        })),
    }
}

/// Two containers `app` on node-a and node-b selected; four pods excluded.
pub fn plan(fault: pb::FaultSpec) -> pb::Plan {
    let selected = |node: &str, name: &str, id: &str| pb::PlannedTarget {
        agent: node.into(),
        target: Some(pod(name, id)),
        description: format!("container app of pod shop/{name} (uid uid-{name})"),
    };
    let excluded = |node: &str, pod: &str, reason: &str| pb::ExcludedTarget {
        agent: node.into(),
        description: format!("pod {pod}"),
        reason: reason.into(),
        pod: pod.into(),
    };
    pb::Plan {
        selected: vec![
            selected("node-a", "checkout-abcde", "a1b2c3d4e5f6"),
            selected("node-b", "checkout-fghij", "f6e5d4c3b2a1"),
        ],
        excluded: vec![
            excluded(
                "node-a",
                "kube-system/coredns-x2x7q",
                "protected namespace kube-system (policy.protected_namespaces)",
            ),
            excluded(
                "node-c",
                "shop/checkout-klmno",
                "no agent on node node-c: no Faultline agent has connected from it",
            ),
            excluded("-", "shop/checkout-pqrst", "not Running (phase Pending)"),
            excluded(
                "node-b",
                "shop/checkout-vwxyz",
                "over namespace share (policy.max_pod_percent_per_namespace 50% of 5 matching \
                 Running pod(s) in shop = 2, 0 already under fault, room 2)",
            ),
        ],
        faults: vec![fault],
        selection: "pods (namespace shop, labelSelector app=checkout, containers app): mode \
                    all of 3 eligible pods = 3; namespace share 2 -> 2 pod(s) selected on 2 \
                    node(s)"
            .into(),
        target_kind: "pods".into(),
        fault_duration_ms: Vec::new(),
    }
}
