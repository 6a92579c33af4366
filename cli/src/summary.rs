//! Pure summaries of an experiment as the coordinator sends it: phase names, target counts,
//! guard statistics, elapsed/remaining time and abort latency.

use faultline_proto::pb::{self, ExperimentPhase, FaultState};

use crate::targets::{self, Kind};

/// The short phase name (`"running"`), as `faultctl` prints and `--phase` accepts it.
pub fn phase_name(phase: i32) -> &'static str {
    match ExperimentPhase::try_from(phase) {
        Ok(ExperimentPhase::Pending) => "pending",
        Ok(ExperimentPhase::Running) => "running",
        Ok(ExperimentPhase::Completed) => "completed",
        Ok(ExperimentPhase::Aborted) => "aborted",
        Ok(ExperimentPhase::Failed) => "failed",
        Ok(ExperimentPhase::Interrupted) => "interrupted",
        Ok(ExperimentPhase::Unspecified) | Err(_) => "unknown",
    }
}

/// Whether the experiment has ended (nothing more will happen to it).
pub fn is_terminal(phase: i32) -> bool {
    matches!(
        ExperimentPhase::try_from(phase),
        Ok(ExperimentPhase::Completed
            | ExperimentPhase::Aborted
            | ExperimentPhase::Failed
            | ExperimentPhase::Interrupted)
    )
}

/// The short fault state name (`"applied"`); `"pending"` before the agent answered.
pub fn state_name(state: i32) -> &'static str {
    match FaultState::try_from(state) {
        Ok(FaultState::Applied) => "applied",
        Ok(FaultState::Reverted) => "reverted",
        Ok(FaultState::Failed) => "failed",
        Ok(FaultState::Unspecified) | Err(_) => "pending",
    }
}

/// The short revert reason (`"abort"`); `"-"` when unset.
pub fn reason_name(reason: i32) -> &'static str {
    match faultline_proto::convert::revert_reason_name(reason) {
        "" => "-",
        name => name,
    }
}

/// How the (agent, fault) pairs of an experiment stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounts {
    /// Distinct agents among the targets (for pod targets: the pods' nodes).
    pub agents: usize,
    /// What the targets are.
    pub kind: Kind,
    /// Distinct pods among the targets; 0 for agent targets.
    pub pods: usize,
    /// Distinct targets: agents, pods, or containers.
    pub targets: usize,
    /// (agent, fault) pairs.
    pub faults: usize,
    /// Pairs the agent acknowledged as applied at some point.
    pub applied: usize,
    /// Pairs applied right now.
    pub holding: usize,
    pub reverted: usize,
    pub failed: usize,
    /// Pairs without an answer yet.
    pub pending: usize,
}

pub fn counts(e: &pb::Experiment) -> TargetCounts {
    let kind = targets::experiment_kind(e);
    let (mut n, mut pods, mut agents) = targets::distinct(
        e.targets
            .iter()
            .map(|t| (t.agent.as_str(), targets::container(t.target.as_ref()))),
    );
    // Before the first fault goes out (or from a coordinator that does not name the pod of
    // each result), the plan tells.
    if agents == 0 || (kind.is_pods() && pods == 0) {
        if let Some(p) = &e.plan {
            (n, pods, agents) = targets::distinct(
                p.selected
                    .iter()
                    .map(|s| (s.agent.as_str(), targets::container(s.target.as_ref()))),
            );
        }
    }
    let mut c = TargetCounts {
        agents,
        kind,
        pods,
        targets: n,
        faults: e.targets.len(),
        ..Default::default()
    };
    for t in &e.targets {
        if t.applied_unix_ms > 0 {
            c.applied += 1;
        }
        match FaultState::try_from(t.state) {
            Ok(FaultState::Applied) => c.holding += 1,
            Ok(FaultState::Reverted) => c.reverted += 1,
            Ok(FaultState::Failed) => c.failed += 1,
            _ => c.pending += 1,
        }
    }
    c
}

/// Statistics of one guard over the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSummary {
    pub name: String,
    pub samples: usize,
    pub breaches: usize,
    pub errors: usize,
    /// Over the samples that have a value (no error).
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub last: pb::GuardSample,
    pub first_breach_unix_ms: Option<i64>,
}

/// One summary per guard, in the order the guards first appear in the timeline.
pub fn guards(e: &pb::Experiment) -> Vec<GuardSummary> {
    let mut out: Vec<GuardSummary> = Vec::new();
    for s in &e.guard_timeline {
        let idx = match out.iter().position(|g| g.name == s.guard) {
            Some(i) => i,
            None => {
                out.push(GuardSummary {
                    name: s.guard.clone(),
                    samples: 0,
                    breaches: 0,
                    errors: 0,
                    min: None,
                    max: None,
                    last: s.clone(),
                    first_breach_unix_ms: None,
                });
                out.len() - 1
            }
        };
        let g = &mut out[idx];
        g.samples += 1;
        if s.at_unix_ms >= g.last.at_unix_ms {
            g.last = s.clone();
        }
        if !s.error.is_empty() {
            g.errors += 1;
        } else {
            g.min = Some(g.min.map_or(s.value, |m| m.min(s.value)));
            g.max = Some(g.max.map_or(s.value, |m| m.max(s.value)));
        }
        if s.breached {
            g.breaches += 1;
            let first = g
                .first_breach_unix_ms
                .map_or(s.at_unix_ms, |f| f.min(s.at_unix_ms));
            g.first_breach_unix_ms = Some(first);
        }
    }
    out
}

/// A guard value for display: `0.0523`, `12.5`, `n/a` for NaN.
pub fn value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() < 10.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}

/// Milliseconds the experiment has run at `now_ms` (until its end once it ended); `None` before
/// it started.
pub fn elapsed_ms(e: &pb::Experiment, now_ms: i64) -> Option<u64> {
    if e.started_unix_ms <= 0 {
        return None;
    }
    let end = if e.ended_unix_ms > 0 {
        e.ended_unix_ms
    } else {
        now_ms
    };
    Some(u64::try_from(end.saturating_sub(e.started_unix_ms)).unwrap_or(0))
}

/// Milliseconds left of the planned duration at `now_ms` (0 once it is over).
pub fn remaining_ms(e: &pb::Experiment, now_ms: i64) -> Option<u64> {
    elapsed_ms(e, now_ms).map(|elapsed| e.duration_ms.saturating_sub(elapsed))
}

/// When an aborted experiment's trigger fired and when its last revert was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortTiming {
    /// The first guard breach, when a guard caused the abort.
    pub breach_unix_ms: Option<i64>,
    /// The latest revert acknowledgement among the targets.
    pub last_revert_unix_ms: i64,
}

impl AbortTiming {
    /// Breach detected -> last target's revert acknowledged.
    pub fn latency_ms(&self) -> Option<i64> {
        self.breach_unix_ms
            .map(|b| self.last_revert_unix_ms.saturating_sub(b).max(0))
    }
}

/// The abort timing of an experiment that has reverted targets; `None` if nothing reverted.
pub fn abort_timing(e: &pb::Experiment) -> Option<AbortTiming> {
    let last_revert_unix_ms = e
        .targets
        .iter()
        .map(|t| t.reverted_unix_ms)
        .filter(|t| *t > 0)
        .max()?;
    let breach_unix_ms = e
        .guard_timeline
        .iter()
        .filter(|s| s.breached)
        .map(|s| s.at_unix_ms)
        .min();
    Some(AbortTiming {
        breach_unix_ms,
        last_revert_unix_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(agent: &str, state: FaultState, applied: i64, reverted: i64) -> pb::TargetResult {
        pb::TargetResult {
            agent: agent.into(),
            fault_id: format!("{agent}-f"),
            state: state as i32,
            applied_unix_ms: applied,
            reverted_unix_ms: reverted,
            ..Default::default()
        }
    }

    fn sample(guard: &str, at: i64, value: f64, breached: bool, error: &str) -> pb::GuardSample {
        pb::GuardSample {
            guard: guard.into(),
            at_unix_ms: at,
            value,
            breached,
            error: error.into(),
            ..Default::default()
        }
    }

    #[test]
    fn phases_and_states_have_short_names() {
        assert_eq!(phase_name(ExperimentPhase::Running as i32), "running");
        assert_eq!(phase_name(99), "unknown");
        assert!(is_terminal(ExperimentPhase::Interrupted as i32));
        assert!(!is_terminal(ExperimentPhase::Pending as i32));
        assert_eq!(state_name(0), "pending");
        assert_eq!(reason_name(pb::RevertReason::Abort as i32), "abort");
    }

    #[test]
    fn counts_distinguish_holding_reverted_failed_and_pending() {
        let e = pb::Experiment {
            targets: vec![
                target("a", FaultState::Applied, 10, 0),
                target("a", FaultState::Reverted, 10, 20),
                target("b", FaultState::Failed, 0, 0),
                target("c", FaultState::Unspecified, 0, 0),
            ],
            ..Default::default()
        };
        let c = counts(&e);
        assert_eq!(
            c,
            TargetCounts {
                agents: 3,
                kind: Kind::Agents,
                pods: 0,
                targets: 3,
                faults: 4,
                applied: 2,
                holding: 1,
                reverted: 1,
                failed: 1,
                pending: 1
            }
        );
    }

    #[test]
    fn guard_summaries_keep_order_extremes_and_first_breach() {
        let e = pb::Experiment {
            guard_timeline: vec![
                sample("error-rate", 1000, 0.01, false, ""),
                sample("node-cpu", 1000, 0.5, false, ""),
                sample("error-rate", 2000, 0.0, false, "prometheus unreachable"),
                sample("error-rate", 3000, 0.4, true, ""),
                sample("error-rate", 4000, 0.9, true, ""),
            ],
            ..Default::default()
        };
        let g = guards(&e);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "error-rate");
        assert_eq!(
            (g[0].samples, g[0].breaches, g[0].errors),
            (4, 2, 1),
            "{g:?}"
        );
        assert_eq!((g[0].min, g[0].max), (Some(0.01), Some(0.9)));
        assert_eq!(g[0].first_breach_unix_ms, Some(3000));
        assert_eq!(g[0].last.at_unix_ms, 4000);
        assert_eq!(g[1].first_breach_unix_ms, None);
        assert_eq!(value(0.05234), "0.0523");
        assert_eq!(value(0.0), "0.0000");
        assert_eq!(value(250.0), "250.0");
    }

    #[test]
    fn time_and_abort_latency() {
        let mut e = pb::Experiment {
            started_unix_ms: 10_000,
            duration_ms: 60_000,
            ..Default::default()
        };
        assert_eq!(elapsed_ms(&e, 22_500), Some(12_500));
        assert_eq!(remaining_ms(&e, 22_500), Some(47_500));
        assert_eq!(remaining_ms(&e, 100_000), Some(0));
        e.ended_unix_ms = 15_000;
        assert_eq!(elapsed_ms(&e, 100_000), Some(5_000));
        assert_eq!(abort_timing(&e), None);
        e.targets = vec![
            target("a", FaultState::Reverted, 10_100, 14_020),
            target("b", FaultState::Reverted, 10_100, 14_083),
        ];
        e.guard_timeline = vec![
            sample("g", 13_000, 0.01, false, ""),
            sample("g", 14_000, 0.5, true, ""),
        ];
        let t = abort_timing(&e).expect("timing");
        assert_eq!(t.breach_unix_ms, Some(14_000));
        assert_eq!(t.latency_ms(), Some(83));
        assert_eq!(elapsed_ms(&pb::Experiment::default(), 5), None);
    }
}
