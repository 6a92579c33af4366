//! The plan of an experiment as recorded (stored with the experiment and served in its
//! report): the selected agents or pods, the excluded ones with the reason, and how the plan
//! names its targets for people.

use std::collections::BTreeSet;

use faultline_core::fault::ContainerRef;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub selected: Vec<PlannedAgent>,
    pub excluded: Vec<ExcludedAgent>,
    /// One line per fault, in document order.
    pub faults: Vec<String>,
    /// How the number of targets was reached.
    pub selection: String,
}

impl PlanRecord {
    /// Whether the targets are Kubernetes pods (or containers) rather than whole agents.
    pub fn targets_pods(&self) -> bool {
        self.selected.iter().any(|s| s.pod.is_some())
            || self.excluded.iter().any(|x| x.pod.is_some())
    }

    /// `"pods"` or `"agents"`, as `Plan.target_kind` says it.
    pub fn target_kind(&self) -> &'static str {
        if self.targets_pods() {
            "pods"
        } else {
            "agents"
        }
    }

    /// The selected targets for people: `2 agent(s)`, `3 pod(s) on 2 node(s)`, or
    /// `4 container(s) in 3 pod(s) on 2 node(s)`.
    pub fn targets_phrase(&self) -> String {
        let count = |keys: Vec<String>| keys.into_iter().collect::<BTreeSet<_>>().len();
        let nodes = count(self.selected.iter().map(|s| s.agent.clone()).collect());
        if !self.targets_pods() {
            return format!("{nodes} agent(s)");
        }
        let pods: Vec<&PodRef> = self
            .selected
            .iter()
            .filter_map(|s| s.pod.as_ref())
            .collect();
        let npods = count(pods.iter().map(|p| p.pod_name()).collect());
        if pods.iter().any(|p| !p.container.is_empty()) {
            format!(
                "{} container(s) in {npods} pod(s) on {nodes} node(s)",
                pods.len()
            )
        } else {
            format!("{npods} pod(s) on {nodes} node(s)")
        }
    }

    /// What one selected target is: `agent`, `pod`, or `container` (when the faults aim at
    /// named containers of the pods).
    pub fn target_noun(&self) -> &'static str {
        let mut pods = self.selected.iter().filter_map(|s| s.pod.as_ref());
        if !self.targets_pods() {
            "agent"
        } else if pods.any(|p| !p.container.is_empty()) {
            "container"
        } else {
            "pod"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAgent {
    pub agent: String,
    /// The agent's labels, or the pod (and container) for pod targets.
    pub description: String,
    /// For pod targets: the pod or container the faults are aimed at, on node `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// A Kubernetes pod, or one container of it, as targeted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Empty: the whole pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The runtime's container ID (no `containerd://` prefix); empty for the whole pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
}

impl PodRef {
    pub fn from_container(c: &ContainerRef) -> PodRef {
        PodRef {
            namespace: c.pod_namespace.clone(),
            name: c.pod_name.clone(),
            uid: c.pod_uid.clone(),
            container: c.container_name.clone(),
            container_id: c.container_id.clone(),
        }
    }

    pub fn to_container(&self) -> ContainerRef {
        ContainerRef {
            container_id: self.container_id.clone(),
            pod_uid: self.uid.clone(),
            pod_namespace: self.namespace.clone(),
            pod_name: self.name.clone(),
            container_name: self.container.clone(),
        }
    }

    /// `shop/checkout-1`: the pod, without the container.
    pub fn pod_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `shop/checkout-1` or `shop/checkout-1/app`; also the key its fault ids derive from.
    pub fn key(&self) -> String {
        if self.container.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}/{}", self.namespace, self.name, self.container)
        }
    }

    /// For people: `pod shop/checkout-1 (uid ...)`, `container app (0a1b2c3d4e5f) of pod ...`.
    pub fn describe(&self) -> String {
        let pod = format!("pod {}/{} (uid {})", self.namespace, self.name, self.uid);
        if self.container.is_empty() {
            pod
        } else {
            let id: String = self.container_id.chars().take(12).collect();
            format!("container {} ({id}) of {pod}", self.container)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedAgent {
    /// The agent; for pod targets the pod's node, `-` while the pod is unscheduled.
    pub agent: String,
    pub description: String,
    pub reason: String,
    /// For pod targets: the excluded pod, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}
