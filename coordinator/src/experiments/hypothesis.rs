//! The steady-state hypothesis in the coordinator: observing its checks before anything is
//! injected, and watching them (and the guards) after the revert until every check holds again
//! or `recoveryWithin` passes. The decisions are core's ([`steady`]); these functions only
//! observe and keep the clock, so any run (an experiment, a workflow) can call them.

use std::time::Duration;

use faultline_core::experiment::steady::{self, Held, Hypothesis, HypothesisVerdict, SteadyState};
use faultline_core::experiment::Guard;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::guards::observe_all;
use crate::state::{now_ms, State};

/// One round of observations: each check's and guard's judgement, by name.
#[derive(Debug, Clone)]
pub struct Round {
    pub at_unix_ms: i64,
    /// (name, type, judgement), checks first, then guards.
    pub held: Vec<(String, &'static str, Held)>,
}

fn judge(
    at: i64,
    probes: &[Guard],
    observed: Vec<faultline_core::experiment::eval::Observation>,
) -> Round {
    Round {
        at_unix_ms: at,
        held: probes
            .iter()
            .zip(observed)
            .map(|(g, obs)| (g.name.clone(), g.kind.type_name(), steady::holds(g, &obs)))
            .collect(),
    }
}

/// Observes `checks` and `guards` once, together. Checks come first in the round.
pub async fn observe_round(
    state: &State,
    checks: &[Guard],
    guards: &[Guard],
    targets: &[String],
) -> Round {
    let probes: Vec<Guard> = checks.iter().chain(guards).cloned().collect();
    let (at, observed) = observe_all(state, &probes, targets).await;
    judge(at, &probes, observed)
}

/// Before injection: observes every check (and, for the record, every guard) once and judges
/// the hypothesis. `Err` names each check that did not hold; then nothing may be injected.
pub async fn check_before(
    state: &State,
    steady: &SteadyState,
    hypothesis: &mut Hypothesis,
    guards: &[Guard],
    targets: &[String],
) -> (Round, Result<(), String>) {
    let round = observe_round(state, &steady.checks, guards, targets).await;
    for (i, (_, _, held)) in round.held.iter().take(steady.checks.len()).enumerate() {
        hypothesis.observe_before(i, held);
    }
    let verdict = hypothesis.judge_before();
    (round, verdict)
}

/// How a recovery watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// Every check held again, or `recoveryWithin` passed: the verdict is decided.
    Decided,
    /// `cancel` fired first (an abort, a shutdown): the caller decides what that means.
    Cancelled,
}

/// What a recovery watch observes, and how often.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub state: &'a State,
    pub steady: &'a SteadyState,
    /// Observed alongside the checks, for the record (their values after the revert).
    pub guards: &'a [Guard],
    /// The agents whose telemetry telemetry checks read.
    pub targets: &'a [String],
    pub interval: Duration,
}

/// After the revert (acknowledged at `from_unix_ms`): observes the checks and guards every
/// `interval` until every check has held again or `recoveryWithin` has passed, then concludes
/// the hypothesis. `on_round` sees every round (to record samples and show progress).
pub async fn watch_recovery(
    w: &Watch<'_>,
    hypothesis: &mut Hypothesis,
    from_unix_ms: i64,
    cancel: &CancellationToken,
    mut on_round: impl FnMut(&Round, &Hypothesis),
) -> Watched {
    hypothesis.start_recovery(from_unix_ms);
    let deadline_ms = hypothesis.recovery_deadline();
    let mut tick = tokio::time::interval(w.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Watched::Cancelled,
            _ = tick.tick() => {}
        }
        let left = u64::try_from(deadline_ms - now_ms()).unwrap_or(0);
        // The round may not outlast recoveryWithin by more than its own timeouts.
        let round = tokio::select! {
            _ = cancel.cancelled() => return Watched::Cancelled,
            r = observe_round(w.state, &w.steady.checks, w.guards, w.targets) => r,
        };
        for (i, (_, _, held)) in round.held.iter().take(w.steady.checks.len()).enumerate() {
            hypothesis.observe_recovery(i, round.at_unix_ms, held);
        }
        on_round(&round, hypothesis);
        if hypothesis.all_recovered() || left == 0 || round.at_unix_ms >= deadline_ms {
            hypothesis.conclude();
            return Watched::Decided;
        }
    }
}

/// True while the hypothesis still waits for its verdict.
pub fn pending(h: Option<&Hypothesis>) -> bool {
    h.is_some_and(|h| h.verdict == HypothesisVerdict::Pending)
}

/// While the faults are in place: observes `checks` every `interval` (for the impact report;
/// nothing here aborts) until `stop`.
pub fn spawn_during(
    state: std::sync::Arc<State>,
    checks: Vec<Guard>,
    interval: Duration,
    targets: Vec<String>,
    tx: tokio::sync::mpsc::Sender<Round>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let round = tokio::select! {
                _ = stop.cancelled() => return,
                r = observe_round(&state, &checks, &[], &targets) => r,
            };
            if tx.send(round).await.is_err() {
                return;
            }
        }
    });
}
