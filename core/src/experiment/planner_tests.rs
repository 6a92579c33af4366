//! The planner: worked examples with their exclusion reasons and refusals, and property tests
//! over many seeded random fleets, modes and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::shuffle::SplitMix64;
use super::*;
use crate::fault::{CpuFault, Fault, FaultKind, FaultSpec, Target};

fn cpu() -> FaultSpec {
    FaultSpec {
        target: Target::Host,
        fault: Fault::Cpu(CpuFault {
            load_percent: 10,
            workers: 1,
        }),
    }
}

fn spec(name: &str, mode: Mode) -> ExperimentSpec {
    ExperimentSpec {
        steady_state: None,
        name: name.into(),
        duration: Duration::from_secs(30),
        agents: AgentSelector::default(),
        pods: None,
        mode,
        faults: vec![cpu()],
        guards: vec![],
        guard_interval: Duration::from_secs(1),
        blast_radius: BlastRadius::default(),
        on_target_failure: OnTargetFailure::Abort,
        fault_durations: Vec::new(),
    }
}

fn policy(fleet_pct: f64) -> PlanPolicy {
    PlanPolicy {
        max_fleet_percent_under_fault: fleet_pct,
        max_concurrent_experiments: 3,
        allowed_fault_kinds: FaultKind::ALL.to_vec(),
        max_duration: Duration::from_secs(3600),
        protected_agent_labels: BTreeMap::from([("tier".to_string(), "db".to_string())]),
        protected_namespaces: vec!["kube-system".into()],
        max_pod_percent_per_namespace: 50.0,
    }
}

fn agent(name: &str, labels: &[(&str, &str)], connected: bool) -> AgentView {
    AgentView {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        connected,
        faults_held: 0,
    }
}

fn run(spec: &ExperimentSpec, agents: &[AgentView], policy: &PlanPolicy) -> Result<Plan, Refusal> {
    plan(&PlanInput {
        spec,
        agents,
        policy,
        running_experiments: 0,
        under_fault: &BTreeSet::new(),
    })
}

#[test]
fn exclusions_say_why() {
    let agents = vec![
        agent("node-a", &[("zone", "a")], true),
        agent("node-b", &[("zone", "a")], false),
        agent("node-c", &[("zone", "a"), ("tier", "db")], true),
        agent("node-d", &[("zone", "b")], true),
        agent("node-e", &[("zone", "a")], true),
        AgentView {
            faults_held: 2,
            ..agent("node-f", &[("zone", "a")], true)
        },
    ];
    let mut s = spec("demo", Mode::All);
    s.agents.labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
    s.agents.names = ["node-a", "node-b", "node-c", "node-e", "node-f", "node-z"]
        .iter()
        .map(|n| n.parse().expect("name"))
        .collect();
    s.blast_radius.max_targets = Some(1);
    let p = run(&s, &agents, &policy(100.0)).expect("plan");
    assert_eq!(p.selected.len(), 1);
    let reasons: BTreeMap<&str, String> = p
        .excluded
        .iter()
        .map(|(a, why)| (a.as_str(), why.to_string()))
        .collect();
    assert_eq!(reasons["node-b"], "not connected");
    assert_eq!(reasons["node-c"], "protected label (tier=db)");
    assert_eq!(
        reasons["node-d"],
        "not matching: not in targets.agents.names"
    );
    assert_eq!(
        reasons["node-f"],
        "already under fault (another experiment or held faults)"
    );
    assert_eq!(
        reasons["node-z"],
        "unknown agent: never connected to this coordinator"
    );
    let other = if p.selected[0] == "node-a" {
        "node-e"
    } else {
        "node-a"
    };
    assert_eq!(
        reasons[other],
        "over blast radius (blastRadius.maxTargets 1)"
    );
    assert!(p.selection.ends_with("-> 1 selected"), "{}", p.selection);
}

#[test]
fn refusals_say_why() {
    let agents = vec![agent("a", &[], true), agent("b", &[], true)];
    let s = spec("x", Mode::One);
    let p = policy(50.0);
    let refused = |r: Result<Plan, Refusal>| r.expect_err("refused").to_string();
    let err = refused(plan(&PlanInput {
        spec: &s,
        agents: &agents,
        policy: &p,
        running_experiments: 3,
        under_fault: &BTreeSet::new(),
    }));
    assert_eq!(err, "3 experiments are running and the policy allows 3 at once (policy.max_concurrent_experiments)");
    let mut long = s.clone();
    long.duration = Duration::from_secs(7200);
    assert_eq!(
        refused(run(&long, &agents, &p)),
        "spec.duration: 2h is longer than the policy allows (1h, policy.max_duration)"
    );
    let mut only_net = p.clone();
    only_net.allowed_fault_kinds = vec![FaultKind::Network, FaultKind::Drop];
    assert_eq!(
        refused(run(&s, &agents, &only_net)),
        "spec.faults[0].kind: cpu is not allowed by the policy (policy.allowed_fault_kinds: network, drop)"
    );
    let offline = vec![agent("a", &[], false)];
    assert_eq!(
        refused(run(&s, &offline, &p)),
        "no agent can be selected: a: not connected"
    );
    assert_eq!(
        refused(run(&s, &[], &p)),
        "no agent can be selected: no agent has ever connected to this coordinator"
    );
    // One connected agent at 50% leaves room for none.
    let one = vec![agent("a", &[], true)];
    assert_eq!(
        refused(run(&s, &one, &p)),
        "no agent can be selected: policy.max_fleet_percent_under_fault 50% of 1 connected = 0, 0 already under fault, room 0 allows 0 targets"
    );
    // The same fleet with room, but another experiment holds b.
    let busy = BTreeSet::from(["b".to_string()]);
    let r = plan(&PlanInput {
        spec: &s,
        agents: &agents,
        policy: &p,
        running_experiments: 1,
        under_fault: &busy,
    });
    assert!(refused(r).contains("1 already under fault, room 0"));
}

#[test]
fn dry_run_and_run_agree_and_names_seed_the_choice() {
    let agents: Vec<AgentView> = (0..20)
        .map(|i| agent(&format!("n{i:02}"), &[], true))
        .collect();
    let s = spec("checkout-loss", Mode::Fixed(3));
    let a = run(&s, &agents, &policy(100.0)).expect("plan");
    let b = run(&s, &agents, &policy(100.0)).expect("plan");
    assert_eq!(a, b);
    let mut reversed = agents.clone();
    reversed.reverse();
    assert_eq!(
        run(&s, &reversed, &policy(100.0)).expect("plan"),
        a,
        "input order does not matter"
    );
    let picks: BTreeSet<Vec<String>> = (0..10)
        .map(|i| {
            run(
                &spec(&format!("exp-{i}"), Mode::Fixed(3)),
                &agents,
                &policy(100.0),
            )
            .expect("plan")
            .selected
        })
        .collect();
    assert!(picks.len() > 1, "different names pick different agents");
}

/// Property test: many random fleets and specs, with a seeded generator.
#[test]
fn selected_count_and_eligibility_hold_for_random_inputs() {
    let mut rng = SplitMix64::new(0x5eed);
    for case in 0..3000 {
        let n = rng.below(40);
        let agents: Vec<AgentView> = (0..n)
            .map(|i| {
                let mut labels = vec![("zone", if rng.below(2) == 0 { "a" } else { "b" })];
                if rng.below(8) == 0 {
                    labels.push(("tier", "db"));
                }
                AgentView {
                    faults_held: usize::from(rng.below(10) == 0),
                    ..agent(&format!("node-{i}"), &labels, rng.below(6) != 0)
                }
            })
            .collect();
        let mode = match rng.below(4) {
            0 => Mode::One,
            1 => Mode::All,
            2 => Mode::Fixed(1 + rng.below(15) as u32),
            _ => Mode::Percent(1 + rng.below(100) as u32),
        };
        let mut s = spec(&format!("exp-{case}"), mode);
        if rng.below(2) == 0 {
            s.agents.labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        }
        if rng.below(2) == 0 {
            s.blast_radius.max_targets = Some(1 + rng.below(10) as u32);
        }
        if rng.below(2) == 0 {
            s.blast_radius.max_percent = Some(1.0 + rng.below(100) as f64);
        }
        let fleet_pct = 1.0 + rng.below(100) as f64;
        let under: BTreeSet<String> = agents
            .iter()
            .filter(|_| rng.below(10) == 0)
            .map(|a| a.name.clone())
            .collect();
        let p = policy(fleet_pct);
        let input = PlanInput {
            spec: &s,
            agents: &agents,
            policy: &p,
            running_experiments: 0,
            under_fault: &under,
        };
        let result = plan(&input);
        assert_eq!(result, plan(&input), "deterministic");

        // The expected count, computed independently.
        let busy = |a: &AgentView| a.faults_held > 0 || under.contains(&a.name);
        let eligible: Vec<&AgentView> = agents
            .iter()
            .filter(|a| {
                a.labels.get("zone").map(String::as_str) == Some("a") || s.agents.labels.is_empty()
            })
            .filter(|a| a.connected && !a.labels.contains_key("tier") && !busy(a))
            .collect();
        let connected = agents.iter().filter(|a| a.connected).count();
        let busy_connected = agents.iter().filter(|a| a.connected && busy(a)).count();
        let ask = match mode {
            Mode::One => 1,
            Mode::All => eligible.len(),
            Mode::Fixed(k) => k as usize,
            Mode::Percent(pc) => {
                ((eligible.len() as f64 * f64::from(pc) / 100.0).ceil() as usize).max(1)
            }
        };
        let mut want = ask.min(eligible.len());
        if let Some(m) = s.blast_radius.max_targets {
            want = want.min(m as usize);
        }
        if let Some(mp) = s.blast_radius.max_percent {
            want = want.min((connected as f64 * mp / 100.0 + 1e-9) as usize);
        }
        let share = (connected as f64 * fleet_pct / 100.0 + 1e-9) as usize;
        want = want.min(share.saturating_sub(busy_connected));

        match result {
            Ok(plan) => {
                assert_eq!(
                    plan.selected.len(),
                    want,
                    "case {case}: {mode} {:?} {}",
                    s.blast_radius,
                    plan.selection
                );
                assert!(want >= 1);
                for name in &plan.selected {
                    let a = agents
                        .iter()
                        .find(|a| &a.name == name)
                        .expect("selected agent exists");
                    assert!(a.connected, "case {case}: disconnected {name} selected");
                    assert!(
                        !a.labels.contains_key("tier"),
                        "case {case}: protected {name} selected"
                    );
                    assert!(!busy(a), "case {case}: busy {name} selected");
                    assert!(eligible.iter().any(|e| &e.name == name));
                }
                let mut all: Vec<&String> = plan
                    .selected
                    .iter()
                    .chain(plan.excluded.iter().map(|e| &e.0))
                    .collect();
                all.sort();
                assert_eq!(
                    all.len(),
                    agents.len(),
                    "case {case}: every agent is selected or excluded"
                );
            }
            Err(refusal) => {
                assert_eq!(
                    want, 0,
                    "case {case}: refused ({refusal}) although {want} could run"
                );
            }
        }
    }
}

#[test]
fn a_fault_naming_a_pod_of_a_protected_namespace_is_refused() {
    use crate::fault::{ContainerRef, ProcessAction, ProcessFault, ProcessSelector};
    let agents = vec![agent("node-a", &[], true)];
    let pod = |ns: &str| ContainerRef {
        pod_uid: "11111111-2222-3333-4444-555555555555".into(),
        pod_namespace: ns.into(),
        ..ContainerRef::default()
    };
    let mut s = spec("protected-ns", Mode::All);
    s.faults = vec![
        cpu(),
        FaultSpec {
            target: Target::Container(pod("kube-system")),
            ..cpu()
        },
    ];
    assert_eq!(
        run(&s, &agents, &policy(100.0)).expect_err("refused").to_string(),
        "spec.faults[1].target.podNamespace: namespace kube-system is protected (policy.protected_namespaces)"
    );
    s.faults = vec![FaultSpec {
        target: Target::Host,
        fault: Fault::Process(ProcessFault {
            action: ProcessAction::Pause,
            selector: ProcessSelector::Container(pod("kube-system")),
            count: 0,
        }),
    }];
    assert_eq!(
        run(&s, &agents, &policy(100.0)).expect_err("refused").to_string(),
        "spec.faults[0].selector.podNamespace: namespace kube-system is protected (policy.protected_namespaces)"
    );
    s.faults = vec![FaultSpec {
        target: Target::Container(pod("shop")),
        ..cpu()
    }];
    assert!(run(&s, &agents, &policy(100.0)).is_ok());
}
