//! Example experiments for the rendering tests (built by hand, as the coordinator sends them).

use faultline_proto::pb;

/// 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

fn cpu() -> pb::FaultSpec {
    pb::FaultSpec {
        target: None,
        kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
            load_percent: 80,
            workers: 1,
        })),
    }
}

fn pause() -> pb::FaultSpec {
    pb::FaultSpec {
        target: None,
        kind: Some(pb::fault_spec::Kind::Process(pb::ProcessFault {
            action: Some(pb::process_fault::Action::Pause(true)),
            selector: Some(pb::process_fault::Selector::NamePattern(
                "fl-demo-service".into(),
            )),
            count: 0,
        })),
    }
}

pub fn plan() -> pb::Plan {
    pb::Plan {
        selected: ["node-a", "node-b"]
            .into_iter()
            .map(|a| pb::PlannedTarget {
                agent: a.into(),
                target: None,
                description: "zone=a".into(),
            })
            .collect(),
        excluded: vec![pb::ExcludedTarget {
            agent: "node-c".into(),
            description: "zone=b".into(),
            reason: "over blast radius (maxTargets 2)".into(),
        }],
        faults: vec![pause(), cpu()],
        selection: String::new(),
    }
}

fn result(agent: &str, fault: usize, state: pb::FaultState, reverted: i64) -> pb::TargetResult {
    pb::TargetResult {
        agent: agent.into(),
        fault_id: format!("checkout-loss-{agent}-{fault}"),
        state: state as i32,
        applied_unix_ms: T0 + 150,
        reverted_unix_ms: reverted,
        revert_reason: if reverted > 0 {
            pb::RevertReason::Abort as i32
        } else {
            0
        },
        error: String::new(),
        counters: Default::default(),
        ..Default::default()
    }
}

fn sample(at: i64, value: f64, breached: bool) -> pb::GuardSample {
    pb::GuardSample {
        guard: "error-rate".into(),
        at_unix_ms: at,
        value,
        breached,
        error: String::new(),
        ..Default::default()
    }
}

/// Running for 3 s of 60 s, every fault applied, one guard sample per second.
pub fn running() -> pb::Experiment {
    pb::Experiment {
        id: "exp-0001".into(),
        name: "checkout-loss".into(),
        phase: pb::ExperimentPhase::Running as i32,
        document: "apiVersion: faultline.dev/v1\nkind: Experiment\n".into(),
        created_by: "operator/operator".into(),
        created_unix_ms: T0 - 100,
        started_unix_ms: T0,
        ended_unix_ms: 0,
        duration_ms: 60_000,
        verdict_reason: String::new(),
        targets: vec![
            result("node-a", 0, pb::FaultState::Applied, 0),
            result("node-a", 1, pb::FaultState::Applied, 0),
            result("node-b", 0, pb::FaultState::Applied, 0),
            result("node-b", 1, pb::FaultState::Applied, 0),
        ],
        guard_timeline: vec![
            sample(T0 + 1000, 0.0, false),
            sample(T0 + 2000, 0.01, false),
            sample(T0 + 3000, 0.02, false),
        ],
        plan: Some(plan()),
        ..Default::default()
    }
}

/// Aborted by the error-rate guard 4 s in; the last revert was acknowledged 83 ms after the
/// breach.
pub fn aborted() -> pb::Experiment {
    let mut e = running();
    e.phase = pb::ExperimentPhase::Aborted as i32;
    e.ended_unix_ms = T0 + 4_083;
    e.verdict_reason = "guard error-rate breached: 0.9 above 0.05 for 2s".into();
    e.targets = vec![
        result("node-a", 0, pb::FaultState::Reverted, T0 + 4_020),
        result("node-a", 1, pb::FaultState::Reverted, T0 + 4_031),
        result("node-b", 0, pb::FaultState::Reverted, T0 + 4_083),
        result("node-b", 1, pb::FaultState::Reverted, T0 + 4_050),
    ];
    e.targets[3].counters = [("paused".to_string(), 1u64)].into_iter().collect();
    e.guard_timeline.push(sample(T0 + 4_000, 0.9, true));
    e
}

/// An event carrying `e` at `at`.
pub fn event(e: pb::Experiment, at: i64, message: &str) -> pb::ExperimentEvent {
    pb::ExperimentEvent {
        at_unix_ms: at,
        experiment: Some(e),
        message: message.into(),
        ..Default::default()
    }
}
