//! How an experiment's targets read for people: whole agents (nodes), or Kubernetes pods (and
//! containers) named `namespace/name` with the node they run on.

use std::collections::BTreeSet;

use faultline_proto::pb;

/// What an experiment's targets are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// Whole agents (nodes), by name or labels.
    #[default]
    Agents,
    /// Pods, each fault aimed at the whole pod.
    Pods,
    /// Named containers of pods.
    Containers,
}

impl Kind {
    /// `agent`, `pod` or `container`: one selected target.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Agents => "agent",
            Kind::Pods => "pod",
            Kind::Containers => "container",
        }
    }

    /// `agents`, `pods` or `containers`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Agents => "agents",
            Kind::Pods => "pods",
            Kind::Containers => "containers",
        }
    }

    pub fn is_pods(self) -> bool {
        self != Kind::Agents
    }
}

/// The pod a target is aimed at, when it is one.
pub fn container(t: Option<&pb::Target>) -> Option<&pb::ContainerTarget> {
    match t?.target.as_ref()? {
        pb::target::Target::Container(c) if !c.pod_name.is_empty() => Some(c),
        _ => None,
    }
}

/// `shop/checkout-7d4f9b6c5-abcde`.
pub fn pod_name(c: &pb::ContainerTarget) -> String {
    format!("{}/{}", c.pod_namespace, c.pod_name)
}

/// `app (0a1b2c3d4e5f)`, or `(whole pod)` when the faults act on the whole pod.
pub fn container_label(c: &pb::ContainerTarget) -> String {
    if c.container_name.is_empty() {
        return "(whole pod)".to_string();
    }
    let id: String = c.container_id.chars().take(12).collect();
    if id.is_empty() {
        c.container_name.clone()
    } else {
        format!("{} ({id})", c.container_name)
    }
}

/// `shop/checkout-7d4f9b6c5-abcde` or `shop/checkout-7d4f9b6c5-abcde/app`.
pub fn target_key(c: &pb::ContainerTarget) -> String {
    if c.container_name.is_empty() {
        pod_name(c)
    } else {
        format!("{}/{}", pod_name(c), c.container_name)
    }
}

fn kind_of<'a>(
    said: &str,
    containers: impl Iterator<Item = &'a pb::ContainerTarget>,
    any_excluded_pod: bool,
) -> Kind {
    let mut pods = false;
    for c in containers {
        if !c.container_name.is_empty() {
            return Kind::Containers;
        }
        pods = true;
    }
    if pods || any_excluded_pod || said == "pods" {
        Kind::Pods
    } else {
        Kind::Agents
    }
}

/// What a plan's targets are: from `target_kind`, else (older coordinators) from the targets.
pub fn plan_kind(p: &pb::Plan) -> Kind {
    kind_of(
        &p.target_kind,
        p.selected
            .iter()
            .filter_map(|s| container(s.target.as_ref())),
        p.excluded.iter().any(|x| !x.pod.is_empty()),
    )
}

/// What an experiment's targets are, from its plan or its target results.
pub fn experiment_kind(e: &pb::Experiment) -> Kind {
    let from_plan = e.plan.as_ref().map_or(Kind::Agents, plan_kind);
    if from_plan.is_pods() {
        return from_plan;
    }
    kind_of(
        "",
        e.targets
            .iter()
            .filter_map(|t| container(t.target.as_ref())),
        false,
    )
}

/// The excluded pod of a plan row: `pod`, else its description without the `pod ` prefix.
pub fn excluded_pod(x: &pb::ExcludedTarget) -> String {
    if !x.pod.is_empty() {
        return x.pod.clone();
    }
    x.description
        .strip_prefix("pod ")
        .unwrap_or(&x.description)
        .to_string()
}

/// Distinct targets and nodes: (targets, pods, nodes) for pod kinds, (agents, 0, agents)
/// otherwise.
pub fn distinct<'a>(
    rows: impl Iterator<Item = (&'a str, Option<&'a pb::ContainerTarget>)>,
) -> (usize, usize, usize) {
    let mut nodes = BTreeSet::new();
    let mut pods = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (agent, c) in rows {
        nodes.insert(agent.to_string());
        if let Some(c) = c {
            pods.insert(pod_name(c));
            keys.insert(target_key(c));
        }
    }
    if pods.is_empty() {
        (nodes.len(), 0, nodes.len())
    } else {
        (keys.len(), pods.len(), nodes.len())
    }
}

/// `2 agent(s)`, `3 pod(s) on 2 node(s)` or `4 container(s) in 3 pod(s) on 2 node(s)`.
pub fn phrase(kind: Kind, targets: usize, pods: usize, nodes: usize) -> String {
    match kind {
        Kind::Agents => format!("{nodes} agent(s)"),
        Kind::Pods => format!("{pods} pod(s) on {nodes} node(s)"),
        Kind::Containers => {
            format!("{targets} container(s) in {pods} pod(s) on {nodes} node(s)")
        }
    }
}

/// The selected targets of a plan in words (see [`phrase`]).
pub fn plan_phrase(p: &pb::Plan) -> String {
    let (targets, pods, nodes) = distinct(
        p.selected
            .iter()
            .map(|s| (s.agent.as_str(), container(s.target.as_ref()))),
    );
    phrase(plan_kind(p), targets, pods, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, container: &str) -> Option<pb::Target> {
        Some(pb::Target {
            target: Some(pb::target::Target::Container(pb::ContainerTarget {
                container_id: if container.is_empty() {
                    String::new()
                } else {
                    "0a1b2c3d4e5f60718293".into()
                },
                pod_uid: "uid-1".into(),
                pod_namespace: ns.into(),
                pod_name: name.into(),
                container_name: container.into(),
            })),
        })
    }

    fn selected(agent: &str, target: Option<pb::Target>) -> pb::PlannedTarget {
        pb::PlannedTarget {
            agent: agent.into(),
            target,
            description: String::new(),
        }
    }

    #[test]
    fn plans_say_agents_pods_or_containers() {
        let agents = pb::Plan {
            selected: vec![selected("node-a", None), selected("node-b", None)],
            ..Default::default()
        };
        assert_eq!(plan_kind(&agents), Kind::Agents);
        assert_eq!(plan_phrase(&agents), "2 agent(s)");

        let pods = pb::Plan {
            selected: vec![
                selected("node-a", pod("shop", "a", "")),
                selected("node-b", pod("shop", "b", "")),
                selected("node-b", pod("shop", "c", "")),
            ],
            ..Default::default()
        };
        assert_eq!(plan_kind(&pods), Kind::Pods);
        assert_eq!(plan_phrase(&pods), "3 pod(s) on 2 node(s)");

        let containers = pb::Plan {
            selected: vec![
                selected("node-a", pod("shop", "a", "app")),
                selected("node-a", pod("shop", "a", "sidecar")),
                selected("node-b", pod("shop", "b", "app")),
            ],
            ..Default::default()
        };
        assert_eq!(plan_kind(&containers), Kind::Containers);
        assert_eq!(
            plan_phrase(&containers),
            "3 container(s) in 2 pod(s) on 2 node(s)"
        );

        // A coordinator that says so, even with nothing selected.
        let said = pb::Plan {
            target_kind: "pods".into(),
            ..Default::default()
        };
        assert_eq!(plan_kind(&said), Kind::Pods);
    }

    #[test]
    fn labels_name_the_pod_and_container() {
        let t = pod("shop", "checkout-1", "app");
        let c = container(t.as_ref()).expect("a pod");
        assert_eq!(pod_name(c), "shop/checkout-1");
        assert_eq!(container_label(c), "app (0a1b2c3d4e5f)");
        assert_eq!(target_key(c), "shop/checkout-1/app");
        let t = pod("shop", "checkout-1", "");
        let c = container(t.as_ref()).expect("a pod");
        assert_eq!(container_label(c), "(whole pod)");
        assert_eq!(container(None), None);
        let excluded = pb::ExcludedTarget {
            agent: "-".into(),
            description: "pod shop/checkout-2".into(),
            reason: "not Running (phase Pending)".into(),
            pod: String::new(),
        };
        assert_eq!(excluded_pod(&excluded), "shop/checkout-2");
    }
}
