//! The planner: which agents an experiment targets, given the fleet, the coordinator's policy
//! and the experiment's mode and blast radius, or why it may not run at all. Pure and
//! deterministic: agents are sorted by name and shuffled with a seed taken from the experiment
//! name, so a dry run and the real run agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::pod_planner::ExcludedPod;
use super::shuffle::stable_shuffle;
use super::ExperimentSpec;
use crate::fault::{ContainerRef, Fault, FaultKind, FaultSpec, ProcessSelector, Target};
use crate::Labels;

/// One agent as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
    /// Faults the agent reports holding (from any experiment).
    pub faults_held: usize,
}

/// The coordinator's policy, as far as planning goes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanPolicy {
    /// Share of the connected agents that may be under fault at once, 1..=100.
    pub max_fleet_percent_under_fault: f64,
    pub max_concurrent_experiments: u32,
    pub allowed_fault_kinds: Vec<FaultKind>,
    pub max_duration: Duration,
    /// Agents carrying all of these labels are never selected (empty: none is protected); for
    /// pod targets, neither are the pods on nodes carrying them.
    pub protected_agent_labels: BTreeMap<String, String>,
    /// Pods in these namespaces are never selected.
    pub protected_namespaces: Vec<String>,
    /// Share of a namespace's matching Running pods that may be under fault at once, 1..=100.
    pub max_pod_percent_per_namespace: f64,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub spec: &'a ExperimentSpec,
    pub agents: &'a [AgentView],
    pub policy: &'a PlanPolicy,
    /// Experiments running now (not counting this one).
    pub running_experiments: u32,
    /// Agents targeted by running experiments.
    pub under_fault: &'a BTreeSet<String>,
}

/// Why an agent is not a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    NotMatching(String),
    /// Named in `targets.agents.names` but never seen by this coordinator.
    Unknown,
    NotConnected,
    Protected(String),
    UnderFault,
    /// The mode took other agents (`one`, `fixed`, `percent`).
    NotChosen(String),
    OverBlastRadius(String),
    OverFleetShare(String),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::NotMatching(why) => write!(f, "not matching: {why}"),
            Exclusion::Unknown => f.write_str("unknown agent: never connected to this coordinator"),
            Exclusion::NotConnected => f.write_str("not connected"),
            Exclusion::Protected(labels) => write!(f, "protected label ({labels})"),
            Exclusion::UnderFault => {
                f.write_str("already under fault (another experiment or held faults)")
            }
            Exclusion::NotChosen(why) => write!(f, "not chosen: {why}"),
            Exclusion::OverBlastRadius(why) => write!(f, "over blast radius ({why})"),
            Exclusion::OverFleetShare(why) => write!(f, "over fleet share ({why})"),
        }
    }
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Target agents, sorted by name.
    pub selected: Vec<String>,
    /// Every other agent with the reason, sorted by name.
    pub excluded: Vec<(String, Exclusion)>,
    /// How the number of targets was reached, for people.
    pub selection: String,
}

/// Why an experiment may not run.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    TooManyExperiments {
        running: u32,
        max: u32,
    },
    DurationOverPolicy {
        duration: Duration,
        max: Duration,
    },
    KindNotAllowed {
        index: usize,
        kind: FaultKind,
        allowed: Vec<FaultKind>,
    },
    /// A fault names a container or pod (as its target or process selector) in a protected
    /// namespace. The agents refuse it too, and also when a pid, cgroup, netns or name pattern
    /// lands in such a pod, which only they can see.
    ProtectedNamespace {
        index: usize,
        field: &'static str,
        namespace: String,
    },
    /// No agent is eligible; the reasons per agent.
    NoneEligible {
        excluded: Vec<(String, Exclusion)>,
    },
    /// A limit leaves no room for even one target.
    LimitAllowsNone {
        limit: String,
    },
    /// A limit leaves no room for even one pod.
    PodLimitAllowsNone {
        limit: String,
    },
    /// The pod selector matched no pod at all.
    NoPodMatches {
        selector: String,
    },
    /// No pod is eligible; the reasons per pod.
    NoPodEligible {
        excluded: Vec<ExcludedPod>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyExperiments { running, max } => write!(
                f,
                "{running} experiments are running and the policy allows {max} at once (policy.max_concurrent_experiments)"
            ),
            Refusal::DurationOverPolicy { duration, max } => write!(
                f,
                "spec.duration: {} is longer than the policy allows ({}, policy.max_duration)",
                humantime::format_duration(*duration),
                humantime::format_duration(*max)
            ),
            Refusal::KindNotAllowed { index, kind, allowed } => {
                let allowed: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
                write!(
                    f,
                    "spec.faults[{index}].kind: {kind} is not allowed by the policy (policy.allowed_fault_kinds: {})",
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                )
            }
            Refusal::ProtectedNamespace {
                index,
                field,
                namespace,
            } => write!(
                f,
                "spec.faults[{index}].{field}: namespace {namespace} is protected (policy.protected_namespaces)"
            ),
            Refusal::NoneEligible { excluded } => {
                if excluded.is_empty() {
                    return f.write_str("no agent can be selected: no agent has ever connected to this coordinator");
                }
                let shown: Vec<String> = excluded
                    .iter()
                    .take(10)
                    .map(|(a, why)| format!("{a}: {why}"))
                    .collect();
                let more = excluded.len().saturating_sub(shown.len());
                write!(f, "no agent can be selected: {}", shown.join("; "))?;
                if more > 0 {
                    write!(f, "; and {more} more")?;
                }
                Ok(())
            }
            Refusal::LimitAllowsNone { limit } => {
                write!(f, "no agent can be selected: {limit} allows 0 targets")
            }
            Refusal::PodLimitAllowsNone { limit } => {
                write!(f, "no pod can be selected: {limit} allows 0 pods")
            }
            Refusal::NoPodMatches { selector } => write!(
                f,
                "no pod can be selected: no pod matches spec.targets.pods ({selector})"
            ),
            Refusal::NoPodEligible { excluded } => {
                let shown: Vec<String> = excluded
                    .iter()
                    .take(10)
                    .map(|x| format!("{}: {}", x.pod, x.reason))
                    .collect();
                let more = excluded.len().saturating_sub(shown.len());
                write!(f, "no pod can be selected: {}", shown.join("; "))?;
                if more > 0 {
                    write!(f, "; and {more} more")?;
                }
                Ok(())
            }
        }
    }
}

/// `pct` percent of `n`, rounded down.
pub(super) fn percent_floor(n: usize, pct: f64) -> usize {
    ((n as f64) * pct / 100.0 + 1e-9).floor().max(0.0) as usize
}

/// The checks every plan starts with: concurrent experiments, duration, fault kinds.
pub(super) fn check_policy(
    spec: &ExperimentSpec,
    policy: &PlanPolicy,
    running_experiments: u32,
) -> Result<(), Refusal> {
    if running_experiments >= policy.max_concurrent_experiments {
        return Err(Refusal::TooManyExperiments {
            running: running_experiments,
            max: policy.max_concurrent_experiments,
        });
    }
    if spec.duration > policy.max_duration {
        return Err(Refusal::DurationOverPolicy {
            duration: spec.duration,
            max: policy.max_duration,
        });
    }
    for (index, f) in spec.faults.iter().enumerate() {
        if !policy.allowed_fault_kinds.contains(&f.kind()) {
            return Err(Refusal::KindNotAllowed {
                index,
                kind: f.kind(),
                allowed: policy.allowed_fault_kinds.clone(),
            });
        }
        if let Some((field, namespace)) =
            named_namespace(f).filter(|(_, ns)| policy.protected_namespaces.iter().any(|p| p == ns))
        {
            return Err(Refusal::ProtectedNamespace {
                index,
                field,
                namespace: namespace.to_string(),
            });
        }
    }
    Ok(())
}

fn named(c: &ContainerRef) -> Option<&str> {
    (!c.pod_namespace.is_empty()).then_some(c.pod_namespace.as_str())
}

/// The Kubernetes namespace a fault names for its container or pod, with the field.
fn named_namespace(f: &FaultSpec) -> Option<(&'static str, &str)> {
    if let Target::Container(c) = &f.target {
        if let Some(ns) = named(c) {
            return Some(("target.podNamespace", ns));
        }
    }
    match &f.fault {
        Fault::Process(p) => match &p.selector {
            ProcessSelector::Container(c) => named(c).map(|ns| ("selector.podNamespace", ns)),
            _ => None,
        },
        _ => None,
    }
}

/// Plans an experiment that targets agents.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, Refusal> {
    let PlanInput { spec, policy, .. } = *input;
    check_policy(spec, policy, input.running_experiments)?;

    let mut agents: Vec<&AgentView> = input.agents.iter().collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    agents.dedup_by(|a, b| a.name == b.name);
    let protected = &policy.protected_agent_labels;
    let under_fault = |a: &AgentView| a.faults_held > 0 || input.under_fault.contains(&a.name);
    let mut excluded: Vec<(String, Exclusion)> = Vec::new();
    let mut eligible: Vec<String> = Vec::new();
    for a in &agents {
        let why = if let Some(why) = spec.agents.mismatch(&a.name, &a.labels) {
            Some(Exclusion::NotMatching(why))
        } else if !a.connected {
            Some(Exclusion::NotConnected)
        } else if !protected.is_empty() && Labels(a.labels.clone()).matches(protected) {
            Some(Exclusion::Protected(Labels(protected.clone()).to_string()))
        } else if under_fault(a) {
            Some(Exclusion::UnderFault)
        } else {
            None
        };
        match why {
            Some(why) => excluded.push((a.name.clone(), why)),
            None => eligible.push(a.name.clone()),
        }
    }
    for n in &spec.agents.names {
        if !agents.iter().any(|a| a.name == n.as_str()) {
            excluded.push((n.to_string(), Exclusion::Unknown));
        }
    }
    excluded.sort_by(|a, b| a.0.cmp(&b.0));
    if eligible.is_empty() {
        return Err(Refusal::NoneEligible { excluded });
    }

    let connected = agents.iter().filter(|a| a.connected).count();
    let busy = agents
        .iter()
        .filter(|a| a.connected && under_fault(a))
        .count();
    let ask = spec.mode.ask(eligible.len()).min(eligible.len());
    let mut limits: Vec<(usize, Exclusion, String)> = vec![(
        ask,
        Exclusion::NotChosen(format!(
            "mode {} chose {ask} of {} eligible",
            spec.mode,
            eligible.len()
        )),
        format!("mode {} of {} eligible = {ask}", spec.mode, eligible.len()),
    )];
    if let Some(max) = spec.blast_radius.max_targets {
        let text = format!("blastRadius.maxTargets {max}");
        limits.push((max as usize, Exclusion::OverBlastRadius(text.clone()), text));
    }
    if let Some(p) = spec.blast_radius.max_percent {
        let n = percent_floor(connected, p);
        let text = format!("blastRadius.maxPercent {p}% of {connected} connected = {n}");
        limits.push((n, Exclusion::OverBlastRadius(text.clone()), text));
    }
    let share = percent_floor(connected, policy.max_fleet_percent_under_fault);
    let room = share.saturating_sub(busy);
    let text = format!(
        "policy.max_fleet_percent_under_fault {}% of {connected} connected = {share}, {busy} already under fault, room {room}",
        policy.max_fleet_percent_under_fault
    );
    limits.push((room, Exclusion::OverFleetShare(text.clone()), text));

    let n = limits.iter().map(|l| l.0).min().unwrap_or(0);
    if n == 0 {
        let zero: Vec<String> = limits
            .iter()
            .filter(|l| l.0 == 0)
            .map(|l| l.2.clone())
            .collect();
        return Err(Refusal::LimitAllowsNone {
            limit: zero.join(" and "),
        });
    }
    let binding = limits
        .iter()
        .find(|l| l.0 == n)
        .map(|l| l.1.clone())
        .unwrap_or(Exclusion::NotChosen(String::new()));
    let selection = format!(
        "{} -> {n} selected",
        limits
            .iter()
            .map(|l| l.2.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );

    stable_shuffle(&mut eligible, &spec.name);
    let mut selected: Vec<String> = eligible[..n].to_vec();
    selected.sort();
    excluded.extend(eligible[n..].iter().map(|a| (a.clone(), binding.clone())));
    excluded.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Plan {
        selected,
        excluded,
        selection,
    })
}
