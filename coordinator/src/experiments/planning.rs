//! Planning against the live fleet: the planner's input from the registry, the policy and the
//! running experiments, and the plan as recorded (with each agent's labels).

use std::collections::BTreeMap;

use faultline_core::experiment::{
    fault_id, plan, AgentView, ExperimentSpec, OnError, Phase, PlanInput, PlanPolicy, Refusal,
};
use faultline_core::fault::FaultKind;
use faultline_core::Labels;

use super::record::{
    ExcludedAgent, ExperimentRecord, GuardInfo, PlanRecord, PlannedAgent, TargetRecord, TargetState,
};
use crate::config::Policy;
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
    }
}

/// Plans `spec` against the fleet as it is now.
pub fn plan_now(state: &State, spec: &ExperimentSpec) -> Result<PlanRecord, Refusal> {
    let agents = state.registry.list();
    let views: Vec<AgentView> = agents
        .iter()
        .map(|a| AgentView {
            name: a.node_name.clone(),
            labels: a.labels.clone(),
            connected: a.connected,
            faults_held: a.held_faults.len(),
        })
        .collect();
    let labels: BTreeMap<&str, String> = agents
        .iter()
        .map(|a| (a.node_name.as_str(), Labels(a.labels.clone()).to_string()))
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
    })?;
    let describe = |a: &str| labels.get(a).cloned().unwrap_or_default();
    Ok(PlanRecord {
        selected: p
            .selected
            .iter()
            .map(|a| PlannedAgent {
                agent: a.clone(),
                description: describe(a),
            })
            .collect(),
        excluded: p
            .excluded
            .iter()
            .map(|(a, why)| ExcludedAgent {
                agent: a.clone(),
                description: describe(a),
                reason: why.to_string(),
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
        telemetry: BTreeMap::new(),
        log: Default::default(),
    }
}

/// One target record per (selected agent, fault), all pending.
pub fn targets(spec: &ExperimentSpec, plan: &PlanRecord) -> Vec<TargetRecord> {
    let mut out = Vec::new();
    for agent in &plan.selected {
        for (i, f) in spec.faults.iter().enumerate() {
            out.push(TargetRecord {
                agent: agent.agent.clone(),
                fault_index: i,
                fault_id: fault_id(&spec.name, &agent.agent, i),
                fault: f.describe(),
                state: TargetState::Pending,
                apply_sent_unix_ms: 0,
                applied_unix_ms: 0,
                revert_sent_unix_ms: 0,
                reverted_unix_ms: 0,
                revert_reason: String::new(),
                error: String::new(),
                counters: BTreeMap::new(),
            });
        }
    }
    out
}
