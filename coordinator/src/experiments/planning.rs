//! Planning against the live fleet: the planner's input from the registry, the policy, the
//! running experiments and (for pod targets) the Kubernetes API, and the plan as recorded (with
//! each agent's labels, or each pod).

use std::collections::BTreeMap;

use faultline_core::experiment::pods::describe_pod_fault;
use faultline_core::experiment::{
    aim, fault_id, plan, plan_pods, AgentView, ExperimentSpec, OnError, Phase, PlanInput,
    PlanPolicy, PodPlanInput, PodSelector,
};
use faultline_core::fault::FaultKind;
use faultline_core::Labels;

use super::ops::OpError;
use super::record::{
    ExcludedAgent, ExperimentRecord, GuardInfo, PlanRecord, PlannedAgent, PodRef, TargetRecord,
    TargetState,
};
use crate::config::Policy;
use crate::kube::{self, PodAccess};
use crate::state::State;

/// The policy in the planner's terms.
pub fn plan_policy(p: &Policy) -> PlanPolicy {
    PlanPolicy {
        max_fleet_percent_under_fault: p.max_fleet_percent_under_fault,
        max_concurrent_experiments: p.max_concurrent_experiments,
        allowed_fault_kinds: p
            .allowed_fault_kinds
            .iter()
            .filter_map(|k| k.parse::<FaultKind>().ok())
            .collect(),
        max_duration: p.max_duration,
        protected_agent_labels: p.protected_agent_labels.0.clone(),
        protected_namespaces: p.protected_namespaces.clone(),
        max_pod_percent_per_namespace: p.max_pod_percent_per_namespace,
    }
}

pub(crate) fn agent_views(state: &State) -> Vec<AgentView> {
    let mut views = state.registry.map_all(|a| AgentView {
        name: a.node_name.clone(),
        labels: a.labels.clone(),
        connected: a.connected,
        faults_held: a.held_faults.len(),
    });
    views.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    views
}

/// Plans `spec` against the fleet (and for pod targets, the cluster) as it is now.
pub async fn plan_now(state: &State, spec: &ExperimentSpec) -> Result<PlanRecord, OpError> {
    match &spec.pods {
        Some(selector) => plan_pods_now(state, spec, selector).await,
        None => plan_agents_now(state, spec),
    }
}

/// Resolves the pod selector through the Kubernetes API and plans the pods.
async fn plan_pods_now(
    state: &State,
    spec: &ExperimentSpec,
    selector: &PodSelector,
) -> Result<PlanRecord, OpError> {
    let cluster = match &state.pods {
        PodAccess::Cluster(c) => c.clone(),
        PodAccess::Unavailable(why) => return Err(OpError::NoKubernetes(why.clone())),
    };
    let view = kube::resolve(cluster.as_ref(), selector)
        .await
        .map_err(OpError::Kubernetes)?;
    let agents = agent_views(state);
    let policy = plan_policy(&state.policy);
    let under_fault = state.experiments.under_fault();
    let pods_under_fault = state.experiments.pods_under_fault();
    let p = plan_pods(&PodPlanInput {
        spec,
        selector,
        pods: &view.pods,
        nodes: &view.nodes,
        agents: &agents,
        policy: &policy,
        running_experiments: state.experiments.running_count() as u32,
        under_fault: &under_fault,
        pods_under_fault: &pods_under_fault,
    })
    .map_err(OpError::Refused)?;
    Ok(PlanRecord {
        selected: p
            .targets
            .iter()
            .map(|t| {
                let pod = PodRef::from_container(&t.container);
                PlannedAgent {
                    agent: t.node.clone(),
                    description: pod.describe(),
                    pod: Some(pod),
                }
            })
            .collect(),
        excluded: p
            .excluded
            .iter()
            .map(|x| ExcludedAgent {
                agent: if x.node.is_empty() {
                    "-".to_string()
                } else {
                    x.node.clone()
                },
                description: format!("pod {}", x.pod),
                reason: x.reason.to_string(),
                pod: Some(x.pod.clone()),
            })
            .collect(),
        faults: spec
            .faults
            .iter()
            .map(|f| describe_pod_fault(f, selector))
            .collect(),
        selection: format!("pods ({selector}): {}", p.selection),
    })
}

fn plan_agents_now(state: &State, spec: &ExperimentSpec) -> Result<PlanRecord, OpError> {
    let views = agent_views(state);
    let labels: BTreeMap<&str, String> = views
        .iter()
        .map(|a| (a.name.as_str(), Labels(a.labels.clone()).to_string()))
        .collect();
    let policy = plan_policy(&state.policy);
    let under_fault = state.experiments.under_fault();
    let running = state.experiments.running_count() as u32;
    let p = plan(&PlanInput {
        spec,
        agents: &views,
        policy: &policy,
        running_experiments: running,
        under_fault: &under_fault,
    })
    .map_err(OpError::Refused)?;
    let describe = |a: &str| labels.get(a).cloned().unwrap_or_default();
    Ok(PlanRecord {
        selected: p
            .selected
            .iter()
            .map(|a| PlannedAgent {
                agent: a.clone(),
                description: describe(a),
                pod: None,
            })
            .collect(),
        excluded: p
            .excluded
            .iter()
            .map(|(a, why)| ExcludedAgent {
                agent: a.clone(),
                description: describe(a),
                reason: why.to_string(),
                pod: None,
            })
            .collect(),
        faults: spec.faults.iter().map(|f| f.describe()).collect(),
        selection: p.selection,
    })
}

/// A new, pending record for `spec` with `plan`.
pub fn new_record(
    spec: &ExperimentSpec,
    document: &str,
    created_by: &str,
    now: i64,
    plan: PlanRecord,
) -> ExperimentRecord {
    ExperimentRecord {
        id: spec.name.clone(),
        name: spec.name.clone(),
        phase: Phase::Pending,
        document: document.to_string(),
        created_by: created_by.to_string(),
        created_unix_ms: now,
        started_unix_ms: 0,
        ended_unix_ms: 0,
        duration_ms: spec.duration.as_millis() as u64,
        guard_interval_ms: spec.guard_interval.as_millis() as u64,
        on_target_failure: spec.on_target_failure.as_str().to_string(),
        verdict_reason: String::new(),
        plan,
        guards: spec
            .guards
            .iter()
            .map(|g| GuardInfo {
                name: g.name.clone(),
                guard_type: g.kind.type_name().to_string(),
                description: g.describe(),
                on_error: match g.on_error {
                    OnError::Abort => "abort".into(),
                    OnError::Ignore => "ignore".into(),
                },
            })
            .collect(),
        targets: Vec::new(),
        guard_timeline: Default::default(),
        abort: None,
        gaps: Vec::new(),
        hypothesis: spec
            .steady_state
            .as_ref()
            .map(faultline_core::experiment::steady::Hypothesis::new),
        impact: Vec::new(),
        findings: Vec::new(),
        telemetry: BTreeMap::new(),
        log: Default::default(),
        pod_kills: Vec::new(),
    }
}

/// One target record per (selected agent, fault), or (selected pod or container, fault), all
/// pending.
pub fn targets(spec: &ExperimentSpec, plan: &PlanRecord) -> Vec<TargetRecord> {
    let mut out = Vec::new();
    for agent in &plan.selected {
        for (i, f) in spec.faults.iter().enumerate() {
            // pod-kill (issue 13): the coordinator carries it out; no agent holds it.
            if f.kind() == FaultKind::PodKill {
                continue;
            }
            let (id, fault) = match &agent.pod {
                None => (fault_id(&spec.name, &agent.agent, i), f.describe()),
                Some(p) => (
                    fault_id(&spec.name, &p.key(), i),
                    aim(f, &p.to_container()).describe(),
                ),
            };
            out.push(TargetRecord {
                agent: agent.agent.clone(),
                fault_index: i,
                fault_id: id,
                fault,
                state: TargetState::Pending,
                apply_sent_unix_ms: 0,
                applied_unix_ms: 0,
                revert_sent_unix_ms: 0,
                reverted_unix_ms: 0,
                revert_reason: String::new(),
                error: String::new(),
                counters: BTreeMap::new(),
                pod: agent.pod.clone(),
            });
        }
    }
    out
}
