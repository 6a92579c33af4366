//! pod-kill rounds: re-selection under mode, blast radius and protected namespaces, pods
//! already terminating never chosen and this experiment's own still-terminating victims
//! counted once toward the limits, and a fresh draw per round.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::pod_kill::kill_round;
use super::*;
use crate::fault::{FaultKind, FaultSpec, PodKillFault, Target};

fn spec(mode: Mode, blast: BlastRadius) -> ExperimentSpec {
    ExperimentSpec {
        name: "kill".into(),
        duration: Duration::from_secs(60),
        agents: AgentSelector::default(),
        pods: Some(selector()),
        mode,
        faults: vec![FaultSpec {
            target: Target::Host,
            fault: crate::fault::Fault::PodKill(PodKillFault {
                grace_period: Some(Duration::ZERO),
                interval: Some(Duration::from_secs(10)),
            }),
        }],
        guards: vec![],
        guard_interval: Duration::from_secs(1),
        blast_radius: blast,
        on_target_failure: OnTargetFailure::Abort,
        fault_durations: Vec::new(),
        steady_state: None,
    }
}

fn selector() -> PodSelector {
    PodSelector {
        namespaces: vec!["kube-system".into(), "shop".into()],
        label_selector: Some("app=checkout".into()),
        field_selector: None,
        containers: vec![],
    }
}

fn policy() -> PlanPolicy {
    PlanPolicy {
        max_fleet_percent_under_fault: 100.0,
        max_concurrent_experiments: 3,
        allowed_fault_kinds: FaultKind::ALL.to_vec(),
        max_duration: Duration::from_secs(3600),
        protected_agent_labels: BTreeMap::new(),
        protected_namespaces: vec!["kube-system".into()],
        max_pod_percent_per_namespace: 100.0,
    }
}

fn pod(ns: &str, name: &str, node: &str, terminating: bool) -> PodView {
    PodView {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: Some(node.into()),
        phase: "Running".into(),
        terminating,
        containers: vec![ContainerView {
            name: "app".into(),
            id: "abc".into(),
            running: true,
            state: "running".into(),
        }],
    }
}

fn agents() -> Vec<AgentView> {
    ["node-a", "node-b"]
        .iter()
        .map(|n| AgentView {
            name: n.to_string(),
            labels: BTreeMap::new(),
            connected: true,
            faults_held: 0,
        })
        .collect()
}

fn round(spec: &ExperimentSpec, pods: &[PodView], n: u32, killed: &[&str]) -> pod_kill::KillRound {
    let (agents, policy, sel) = (agents(), policy(), selector());
    let none = BTreeSet::new();
    let killed: BTreeSet<String> = killed.iter().map(|k| k.to_string()).collect();
    kill_round(
        &PodPlanInput {
            spec,
            selector: &sel,
            pods,
            nodes: &[],
            agents: &agents,
            policy: &policy,
            running_experiments: 0,
            under_fault: &none,
            pods_under_fault: &none,
        },
        n,
        &killed,
    )
}

fn names(r: &pod_kill::KillRound) -> Vec<&str> {
    r.victims.iter().map(|v| v.name.as_str()).collect()
}

#[test]
fn terminating_pods_are_never_chosen_and_count_once() {
    // Round 1 deleted web-1 and web-2; web-1 is still terminating, web-2 is gone; web-4 and
    // web-5 are their replacements; web-3 is terminating for another reason.
    let pods = vec![
        pod("kube-system", "coredns", "node-a", false),
        pod("shop", "web-1", "node-a", true),
        pod("shop", "web-3", "node-b", true),
        pod("shop", "web-4", "node-a", false),
        pod("shop", "web-5", "node-b", false),
        pod("shop", "web-6", "node-b", false),
    ];
    let fixed2 = spec(Mode::Fixed(2), BlastRadius::default());
    let r = round(&fixed2, &pods, 2, &["uid-web-1", "uid-web-2"]);
    assert_eq!(r.in_flight, 1, "{r:?}");
    assert_eq!(r.victims.len(), 1, "one more: web-1 still counts: {r:?}");
    let name = names(&r)[0];
    assert!(["web-4", "web-5", "web-6"].contains(&name), "{r:?}");
    assert!(
        r.selection.ends_with(
            "1 pod(s) deleted earlier still terminating count toward mode fixed 2 of 4 pod(s) -> delete 1"
        ),
        "{}",
        r.selection
    );
    // Without the in-flight victim both slots are free; never coredns (protected), never web-3.
    let r = round(&fixed2, &pods, 2, &[]);
    assert_eq!(r.victims.len(), 2, "{r:?}");
    for v in &r.victims {
        assert!(
            !["coredns", "web-1", "web-3"].contains(&v.name.as_str()),
            "{r:?}"
        );
    }
    // mode one while the last victim still terminates: nothing this round.
    let one = spec(Mode::One, BlastRadius::default());
    let r = round(&one, &pods, 3, &["uid-web-1"]);
    assert!(r.victims.is_empty(), "{r:?}");
    // mode all takes every live pod; maxTargets 3 with one in flight leaves 2.
    let all = spec(Mode::All, BlastRadius::default());
    assert_eq!(
        names(&round(&all, &pods, 2, &["uid-web-1"])),
        ["web-4", "web-5", "web-6"]
    );
    let capped = spec(
        Mode::All,
        BlastRadius {
            max_targets: Some(3),
            max_percent: None,
        },
    );
    assert_eq!(round(&capped, &pods, 2, &["uid-web-1"]).victims.len(), 2);
    // maxPercent 50 of (3 live + 1 in flight) = 2, minus the one in flight = 1.
    let pct = spec(
        Mode::All,
        BlastRadius {
            max_targets: None,
            max_percent: Some(50.0),
        },
    );
    assert_eq!(round(&pct, &pods, 2, &["uid-web-1"]).victims.len(), 1);
}

#[test]
fn nothing_eligible_is_a_quiet_round_and_rounds_draw_afresh() {
    let gone = vec![
        pod("kube-system", "coredns", "node-a", false),
        pod("shop", "web-1", "node-a", true),
    ];
    let one = spec(Mode::One, BlastRadius::default());
    let r = round(&one, &gone, 2, &["uid-web-1"]);
    assert!(r.victims.is_empty());
    assert!(
        r.selection.starts_with("nothing to delete: "),
        "{}",
        r.selection
    );
    let many: Vec<PodView> = (0..12)
        .map(|i| pod("shop", &format!("web-{i:02}"), "node-a", false))
        .collect();
    let picks: BTreeSet<String> = (1..=8)
        .map(|n| names(&round(&one, &many, n, &[]))[0].to_string())
        .collect();
    assert!(picks.len() > 1, "rounds pick different pods: {picks:?}");
    // The same round draws the same pod (deterministic).
    assert_eq!(
        names(&round(&one, &many, 5, &[])),
        names(&round(&one, &many, 5, &[]))
    );
}
