//! The pod planner: which of the pods a selector returned an experiment targets, under its mode,
//! its blast radius and the coordinator's policy (protected namespaces, the share of a
//! namespace's live pods, the share of the fleet under fault), or why it may not run. Pure and
//! deterministic like the agent planner: pods are sorted by namespace and name and shuffled with
//! a seed taken from the experiment name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::planner::{check_policy, percent_floor, AgentView, PlanPolicy, Refusal};
use super::pods::{NodeView, PodSelector, PodTarget, PodView};
use super::shuffle::stable_shuffle;
use super::ExperimentSpec;
use crate::fault::ContainerRef;
use crate::Labels;

/// Everything the pod planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PodPlanInput<'a> {
    pub spec: &'a ExperimentSpec,
    pub selector: &'a PodSelector,
    /// The pods the selector returned (any phase).
    pub pods: &'a [PodView],
    pub nodes: &'a [NodeView],
    /// Every agent the coordinator knows; an agent's name is its node's name.
    pub agents: &'a [AgentView],
    pub policy: &'a PlanPolicy,
    /// Experiments running now (not counting this one).
    pub running_experiments: u32,
    /// Agents (nodes) targeted by running experiments.
    pub under_fault: &'a BTreeSet<String>,
    /// UIDs of the pods targeted by running experiments.
    pub pods_under_fault: &'a BTreeSet<String>,
}

/// Why a pod is not a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodExclusion {
    ProtectedNamespace(String),
    Terminating,
    NotRunning(String),
    NotScheduled,
    NodeNotReady(String),
    /// On a node whose Kubernetes labels or agent labels carry the protected labels.
    ProtectedNode {
        node: String,
        labels: String,
    },
    /// No agent ever connected from the pod's node.
    NoAgent(String),
    /// The node's agent is known but not connected now.
    AgentNotConnected(String),
    /// A container listed in `containers` is not in the pod.
    NoSuchContainer {
        name: String,
        have: Vec<String>,
    },
    ContainerNotRunning {
        name: String,
        state: String,
    },
    UnderFault,
    NotChosen(String),
    OverBlastRadius(String),
    OverNamespaceShare(String),
    OverFleetShare(String),
}

impl fmt::Display for PodExclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodExclusion::ProtectedNamespace(ns) => {
                write!(f, "protected namespace {ns} (policy.protected_namespaces)")
            }
            PodExclusion::Terminating => f.write_str("terminating (deletion requested)"),
            PodExclusion::NotRunning(phase) => write!(f, "not Running (phase {phase})"),
            PodExclusion::NotScheduled => f.write_str("not scheduled to a node yet"),
            PodExclusion::NodeNotReady(n) => write!(f, "node {n} is not Ready"),
            PodExclusion::ProtectedNode { node, labels } => {
                write!(f, "on protected node {node} ({labels})")
            }
            PodExclusion::NoAgent(n) => {
                write!(
                    f,
                    "no agent on node {n}: no Faultline agent has connected from it"
                )
            }
            PodExclusion::AgentNotConnected(n) => {
                write!(f, "no agent on node {n}: its agent is not connected")
            }
            PodExclusion::NoSuchContainer { name, have } => write!(
                f,
                "has no container {name} (containers: {})",
                have.join(", ")
            ),
            PodExclusion::ContainerNotRunning { name, state } => {
                write!(f, "container {name} is not running ({state})")
            }
            PodExclusion::UnderFault => {
                f.write_str("already under fault (targeted by another running experiment)")
            }
            PodExclusion::NotChosen(why) => write!(f, "not chosen: {why}"),
            PodExclusion::OverBlastRadius(why) => write!(f, "over blast radius ({why})"),
            PodExclusion::OverNamespaceShare(why) => write!(f, "over namespace share ({why})"),
            PodExclusion::OverFleetShare(why) => write!(f, "over fleet share ({why})"),
        }
    }
}

/// A pod that is not a target, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedPod {
    /// `namespace/name`.
    pub pod: String,
    /// The pod's node, empty while unscheduled.
    pub node: String,
    pub reason: PodExclusion,
}

/// The outcome of planning a pod experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// One target per selected pod, or per selected container when `containers` is given;
    /// sorted by namespace, pod and container.
    pub targets: Vec<PodTarget>,
    /// How many pods were selected.
    pub pods: usize,
    /// Every other pod with the reason, sorted by namespace and name.
    pub excluded: Vec<ExcludedPod>,
    /// How the number of pods was reached, for people.
    pub selection: String,
}

/// Why the pod does not qualify, or the targets it gives.
fn qualify(input: &PodPlanInput<'_>, pod: &PodView) -> Result<Vec<PodTarget>, PodExclusion> {
    let policy = input.policy;
    if policy.protected_namespaces.contains(&pod.namespace) {
        return Err(PodExclusion::ProtectedNamespace(pod.namespace.clone()));
    }
    if pod.terminating {
        return Err(PodExclusion::Terminating);
    }
    if pod.phase != "Running" {
        return Err(PodExclusion::NotRunning(pod.phase.clone()));
    }
    let Some(node) = pod.node.clone() else {
        return Err(PodExclusion::NotScheduled);
    };
    let k8s_node = input.nodes.iter().find(|n| n.name == node);
    if k8s_node.is_some_and(|n| !n.ready) {
        return Err(PodExclusion::NodeNotReady(node));
    }
    let agent = input.agents.iter().find(|a| a.name == node);
    let protected = &policy.protected_agent_labels;
    let carries = |labels: &BTreeMap<String, String>| Labels(labels.clone()).matches(protected);
    if !protected.is_empty()
        && (k8s_node.is_some_and(|n| carries(&n.labels))
            || agent.is_some_and(|a| carries(&a.labels)))
    {
        return Err(PodExclusion::ProtectedNode {
            node,
            labels: Labels(protected.clone()).to_string(),
        });
    }
    match agent {
        None => return Err(PodExclusion::NoAgent(node)),
        Some(a) if !a.connected => return Err(PodExclusion::AgentNotConnected(node)),
        Some(_) => {}
    }
    let base = ContainerRef {
        container_id: String::new(),
        pod_uid: pod.uid.clone(),
        pod_namespace: pod.namespace.clone(),
        pod_name: pod.name.clone(),
        container_name: String::new(),
    };
    let mut targets = Vec::new();
    for name in &input.selector.containers {
        let Some(c) = pod.containers.iter().find(|c| &c.name == name) else {
            return Err(PodExclusion::NoSuchContainer {
                name: name.clone(),
                have: pod.containers.iter().map(|c| c.name.clone()).collect(),
            });
        };
        if !c.running || c.id.is_empty() {
            return Err(PodExclusion::ContainerNotRunning {
                name: name.clone(),
                state: c.state.clone(),
            });
        }
        targets.push(PodTarget {
            node: node.clone(),
            container: ContainerRef {
                container_id: c.id.clone(),
                container_name: c.name.clone(),
                ..base.clone()
            },
        });
    }
    if input.pods_under_fault.contains(&pod.uid) {
        return Err(PodExclusion::UnderFault);
    }
    if targets.is_empty() {
        targets.push(PodTarget {
            node,
            container: base,
        });
    }
    Ok(targets)
}

/// Room left per namespace under `policy.max_pod_percent_per_namespace`, and its description.
struct NamespaceShare {
    room: BTreeMap<String, usize>,
    text: BTreeMap<String, String>,
}

fn namespace_share(input: &PodPlanInput<'_>) -> NamespaceShare {
    let pct = input.policy.max_pod_percent_per_namespace;
    let mut live: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in input.pods.iter().filter(|p| p.live()) {
        let e = live.entry(p.namespace.clone()).or_default();
        e.0 += 1;
        if input.pods_under_fault.contains(&p.uid) {
            e.1 += 1;
        }
    }
    let mut share = NamespaceShare {
        room: BTreeMap::new(),
        text: BTreeMap::new(),
    };
    for (ns, (n, busy)) in live {
        let cap = percent_floor(n, pct);
        let room = cap.saturating_sub(busy);
        share.text.insert(
            ns.clone(),
            format!("policy.max_pod_percent_per_namespace {pct}% of {n} matching Running pod(s) in {ns} = {cap}, {busy} already under fault, room {room}"),
        );
        share.room.insert(ns, room);
    }
    share
}

/// Plans a pod experiment.
pub fn plan_pods(input: &PodPlanInput<'_>) -> Result<PodPlan, Refusal> {
    let PodPlanInput { spec, policy, .. } = *input;
    check_policy(spec, policy, input.running_experiments)?;
    if input.pods.is_empty() {
        return Err(Refusal::NoPodMatches {
            selector: input.selector.to_string(),
        });
    }
    let mut pods: Vec<&PodView> = input.pods.iter().collect();
    pods.sort_by_key(|p| p.key());
    pods.dedup_by(|a, b| a.uid == b.uid);
    let mut excluded: Vec<ExcludedPod> = Vec::new();
    let mut eligible: Vec<(&PodView, Vec<PodTarget>)> = Vec::new();
    for p in &pods {
        match qualify(input, p) {
            Ok(targets) => eligible.push((p, targets)),
            Err(reason) => excluded.push(ExcludedPod {
                pod: p.key(),
                node: p.node.clone().unwrap_or_default(),
                reason,
            }),
        }
    }
    if eligible.is_empty() {
        return Err(Refusal::NoPodEligible { excluded });
    }

    let live = pods
        .iter()
        .filter(|p| p.live() && !policy.protected_namespaces.contains(&p.namespace))
        .count();
    let ask = spec.mode.ask(eligible.len()).min(eligible.len());
    let mut limits: Vec<(usize, PodExclusion, String)> = vec![(
        ask,
        PodExclusion::NotChosen(format!(
            "mode {} chose {ask} of {} eligible pods",
            spec.mode,
            eligible.len()
        )),
        format!(
            "mode {} of {} eligible pods = {ask}",
            spec.mode,
            eligible.len()
        ),
    )];
    if let Some(max) = spec.blast_radius.max_targets {
        let text = format!("blastRadius.maxTargets {max}");
        limits.push((
            max as usize,
            PodExclusion::OverBlastRadius(text.clone()),
            text,
        ));
    }
    if let Some(p) = spec.blast_radius.max_percent {
        let n = percent_floor(live, p);
        let text = format!("blastRadius.maxPercent {p}% of {live} matching Running pods = {n}");
        limits.push((n, PodExclusion::OverBlastRadius(text.clone()), text));
    }
    let cap = limits.iter().map(|l| l.0).min().unwrap_or(0);
    if cap == 0 {
        let zero: Vec<String> = limits
            .iter()
            .filter(|l| l.0 == 0)
            .map(|l| l.2.clone())
            .collect();
        return Err(Refusal::PodLimitAllowsNone {
            limit: zero.join(" and "),
        });
    }
    let binding = limits
        .iter()
        .find(|l| l.0 == cap)
        .map(|l| l.1.clone())
        .unwrap_or(PodExclusion::NotChosen(String::new()));

    let ns_share = namespace_share(input);
    let under_fault = |a: &AgentView| a.faults_held > 0 || input.under_fault.contains(&a.name);
    let connected: Vec<&AgentView> = input.agents.iter().filter(|a| a.connected).collect();
    let busy: BTreeSet<&str> = connected
        .iter()
        .filter(|a| under_fault(a))
        .map(|a| a.name.as_str())
        .collect();
    let share = percent_floor(connected.len(), policy.max_fleet_percent_under_fault);
    let node_room = share.saturating_sub(busy.len());
    let fleet_text = format!(
        "policy.max_fleet_percent_under_fault {}% of {} connected = {share}, {} already under fault, room {node_room} node(s)",
        policy.max_fleet_percent_under_fault,
        connected.len(),
        busy.len()
    );

    stable_shuffle(&mut eligible, &spec.name);
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let mut new_nodes: BTreeSet<String> = BTreeSet::new();
    let mut chosen: Vec<&PodView> = Vec::new();
    let mut targets: Vec<PodTarget> = Vec::new();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    for (pod, pod_targets) in &eligible {
        let node = pod.node.clone().unwrap_or_default();
        let ns = pod.namespace.as_str();
        let ns_room = ns_share.room.get(ns).copied().unwrap_or(0);
        let ns_text = ns_share.text.get(ns).cloned().unwrap_or_default();
        let new_node = !busy.contains(node.as_str()) && !new_nodes.contains(&node);
        let reason = if chosen.len() >= cap {
            Some(binding.clone())
        } else if taken.get(ns).copied().unwrap_or(0) >= ns_room {
            blocked.insert(ns_text.clone());
            Some(PodExclusion::OverNamespaceShare(ns_text))
        } else if new_node && new_nodes.len() >= node_room {
            blocked.insert(fleet_text.clone());
            Some(PodExclusion::OverFleetShare(fleet_text.clone()))
        } else {
            None
        };
        match reason {
            Some(reason) => excluded.push(ExcludedPod {
                pod: pod.key(),
                node,
                reason,
            }),
            None => {
                *taken.entry(ns).or_default() += 1;
                if new_node {
                    new_nodes.insert(node);
                }
                chosen.push(pod);
                targets.extend(pod_targets.iter().cloned());
            }
        }
    }
    if chosen.is_empty() {
        return Err(Refusal::PodLimitAllowsNone {
            limit: blocked.into_iter().collect::<Vec<_>>().join(" and "),
        });
    }
    let nodes: BTreeSet<&str> = targets.iter().map(|t| t.node.as_str()).collect();
    let mut parts: Vec<String> = limits.into_iter().map(|l| l.2).collect();
    let namespaces: BTreeSet<&str> = eligible.iter().map(|(p, _)| p.namespace.as_str()).collect();
    parts.extend(
        namespaces
            .iter()
            .filter_map(|ns| ns_share.text.get(*ns).cloned()),
    );
    parts.push(fleet_text);
    let selection = format!(
        "{} -> {} pod(s) selected on {} node(s)",
        parts.join("; "),
        chosen.len(),
        nodes.len()
    );
    targets.sort_by_key(|t| t.key());
    excluded.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(PodPlan {
        pods: chosen.len(),
        targets,
        excluded,
        selection,
    })
}
