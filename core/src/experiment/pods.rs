//! Pod targets: the `spec.targets.pods` selector, the cluster as the pod planner sees it (pods
//! with their containers, nodes), and how a fault is aimed at one selected pod or container.
//! Pure: the coordinator fills these views from the Kubernetes API.

use std::collections::BTreeMap;
use std::fmt;

use crate::fault::{ContainerRef, Fault, FaultSpec, ProcessAction, ProcessSelector, Target};
use crate::units::signal_name;

/// Which pods an experiment may target (`spec.targets.pods`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodSelector {
    /// Namespaces searched, sorted, each once (at least one).
    pub namespaces: Vec<String>,
    /// A Kubernetes label selector (`app=checkout,tier in (web,api)`), passed to the API.
    pub label_selector: Option<String>,
    /// A Kubernetes field selector (`spec.nodeName=node-a`), passed to the API.
    pub field_selector: Option<String>,
    /// Containers of each pod to aim at; empty: the whole pod (its cgroup and netns).
    pub containers: Vec<String>,
}

impl fmt::Display for PodSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespaces.len() == 1 {
            write!(f, "namespace {}", self.namespaces[0])?;
        } else {
            write!(f, "namespaces {}", self.namespaces.join(","))?;
        }
        if let Some(l) = &self.label_selector {
            write!(f, ", labelSelector {l}")?;
        }
        if let Some(s) = &self.field_selector {
            write!(f, ", fieldSelector {s}")?;
        }
        if !self.containers.is_empty() {
            write!(f, ", containers {}", self.containers.join(","))?;
        }
        Ok(())
    }
}

/// One container of a pod, from the pod's spec and status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerView {
    pub name: String,
    /// The runtime's container ID without its `<runtime>://` prefix; empty before it started.
    pub id: String,
    pub running: bool,
    /// For people: `running`, `waiting: CrashLoopBackOff`, `terminated: Error`, `no status`.
    pub state: String,
}

/// One pod returned by the selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`; None while unscheduled.
    pub node: Option<String>,
    /// `status.phase`: Pending, Running, Succeeded, Failed, Unknown.
    pub phase: String,
    /// A deletion was requested (`metadata.deletionTimestamp` is set).
    pub terminating: bool,
    /// Regular containers (not init or ephemeral ones), in spec order.
    pub containers: Vec<ContainerView>,
}

impl PodView {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Running and not being deleted: counts as a live replica.
    pub fn live(&self) -> bool {
        self.phase == "Running" && !self.terminating
    }
}

/// One Kubernetes node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
}

/// One selected pod (or one selected container of it) and the agent that acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// The node the pod runs on, which is the name of the agent there.
    pub node: String,
    /// Pod UID and names; the container ID and name are empty when the whole pod is the target.
    pub container: ContainerRef,
}

impl PodTarget {
    /// `shop/checkout-7d4f` or `shop/checkout-7d4f/app`.
    pub fn key(&self) -> String {
        let c = &self.container;
        if c.container_name.is_empty() {
            format!("{}/{}", c.pod_namespace, c.pod_name)
        } else {
            format!("{}/{}/{}", c.pod_namespace, c.pod_name, c.container_name)
        }
    }
}

/// The fault as sent to the agent for one pod target: the pod or container becomes the fault's
/// target (for a process fault, its selector).
pub fn aim(spec: &FaultSpec, container: &ContainerRef) -> FaultSpec {
    match &spec.fault {
        Fault::Process(p) => {
            let mut p = p.clone();
            p.selector = ProcessSelector::Container(container.clone());
            FaultSpec {
                target: Target::Host,
                fault: Fault::Process(p),
            }
        }
        _ => FaultSpec {
            target: Target::Container(container.clone()),
            fault: spec.fault.clone(),
        },
    }
}

/// A one-line description of a fault of a pod experiment (`cpu 50% x 1 in each selected pod`).
pub fn describe_pod_fault(spec: &FaultSpec, selector: &PodSelector) -> String {
    let what = if selector.containers.is_empty() {
        "each selected pod"
    } else {
        "each selected container"
    };
    match &spec.fault {
        Fault::Process(p) => {
            let action = match p.action {
                ProcessAction::Kill { signal } => format!("kill {}", signal_name(signal)),
                ProcessAction::Pause => "pause".to_string(),
            };
            let count = match p.count {
                0 => String::new(),
                n => format!(" (at most {n} process(es))"),
            };
            format!("process {action} of {what}{count}")
        }
        // Kill faults (issue 13): the coordinator deletes the selected pods themselves.
        Fault::PodKill(k) => format!("{} of each selected pod", k.describe()),
        f => {
            let base = FaultSpec {
                target: Target::Host,
                fault: f.clone(),
            };
            format!("{} in {what}", base.describe())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{CpuFault, ProcessFault};

    fn container() -> ContainerRef {
        ContainerRef {
            container_id: "abc123".into(),
            pod_uid: "1f0e-22".into(),
            pod_namespace: "shop".into(),
            pod_name: "checkout-1".into(),
            container_name: "app".into(),
        }
    }

    #[test]
    fn aim_targets_the_container_and_process_faults_select_it() {
        let cpu = FaultSpec {
            target: Target::Host,
            fault: Fault::Cpu(CpuFault {
                load_percent: 50,
                workers: 1,
            }),
        };
        let aimed = aim(&cpu, &container());
        assert_eq!(aimed.target, Target::Container(container()));
        assert_eq!(aimed.describe(), "cpu 50% x 1 on container abc123");
        aimed.validate("f").expect("a valid spec for the agent");

        let kill = FaultSpec {
            target: Target::Host,
            fault: Fault::Process(ProcessFault {
                action: ProcessAction::Kill { signal: 9 },
                selector: ProcessSelector::Container(ContainerRef::default()),
                count: 1,
            }),
        };
        let aimed = aim(&kill, &container());
        assert_eq!(aimed.target, Target::Host);
        match &aimed.fault {
            Fault::Process(p) => {
                assert_eq!(p.selector, ProcessSelector::Container(container()))
            }
            other => panic!("expected a process fault, got {other:?}"),
        }
        aimed.validate("f").expect("a valid spec for the agent");
        let sel = PodSelector {
            namespaces: vec!["shop".into()],
            containers: vec!["app".into()],
            ..Default::default()
        };
        assert_eq!(
            describe_pod_fault(&kill, &sel),
            "process kill SIGKILL of each selected container (at most 1 process(es))"
        );
        assert_eq!(
            describe_pod_fault(&cpu, &PodSelector::default()),
            "cpu 50% x 1 in each selected pod"
        );
    }

    #[test]
    fn selector_and_target_descriptions() {
        let sel = PodSelector {
            namespaces: vec!["shop".into(), "web".into()],
            label_selector: Some("app=checkout".into()),
            field_selector: None,
            containers: vec!["app".into()],
        };
        assert_eq!(
            sel.to_string(),
            "namespaces shop,web, labelSelector app=checkout, containers app"
        );
        let t = PodTarget {
            node: "node-a".into(),
            container: container(),
        };
        assert_eq!(t.key(), "shop/checkout-1/app");
    }
}
