//! The experiments' observable events: each function here is the one place that logs an event
//! and counts it in the `faultline_coordinator_*` experiment metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_core::experiment::eval::{Outcome, Verdict};
use faultline_core::experiment::Phase;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const EXPERIMENTS: &str = "faultline_coordinator_experiments";
pub const GUARD_EVALUATIONS: &str = "faultline_coordinator_guard_evaluations_total";
pub const GUARD_BREACHES: &str = "faultline_coordinator_guard_breaches_total";
pub const ABORT_SECONDS: &str = "faultline_coordinator_abort_seconds";
pub const ABORT_UNACKNOWLEDGED: &str = "faultline_coordinator_abort_unacknowledged_total";
pub const DISPATCH_SECONDS: &str = "faultline_coordinator_fault_dispatch_seconds";
pub const RESUMED: &str = "faultline_coordinator_experiments_resumed_total";
pub const REVERTS_RESENT: &str = "faultline_coordinator_reverts_resent_total";
pub const STATUSES_COALESCED: &str = "faultline_coordinator_fault_statuses_coalesced_total";
pub const STATUSES_DROPPED: &str = "faultline_coordinator_fault_statuses_dropped_total";
pub const HYPOTHESES: &str = "faultline_coordinator_hypotheses_total";

/// Why a FaultStatus was not handed to any experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// About a fault of a running experiment that the sending agent does not hold.
    Foreign,
    /// A late revert acknowledgement while too many are being recorded already.
    LateBusy,
}

impl Dropped {
    pub const ALL: [Dropped; 2] = [Dropped::Foreign, Dropped::LateBusy];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Foreign => "foreign",
            Dropped::LateBusy => "late_busy",
        }
    }
}

/// Bucket bounds for the `_seconds` histograms (installed by main.rs).
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];

const GUARD_TYPES: [&str; 3] = ["prometheus", "telemetry", "http"];
const OUTCOMES: [&str; 4] = ["ok", "no_data", "breached", "error"];

/// Registers HELP text and starts the series at zero.
pub fn describe() {
    describe_gauge!(
        EXPERIMENTS,
        "Experiments known to the coordinator, by phase."
    );
    describe_counter!(
        HYPOTHESES,
        "Steady-state hypotheses decided, by verdict (passed, failed)."
    );
    for v in ["passed", "failed"] {
        counter!(HYPOTHESES, "verdict" => v).increment(0);
    }
    describe_counter!(
        GUARD_EVALUATIONS,
        "Guard evaluations, by guard type and outcome (ok, no_data, breached, error)."
    );
    describe_counter!(
        GUARD_BREACHES,
        "Guard breaches that aborted an experiment, by guard type."
    );
    describe_histogram!(
        ABORT_SECONDS,
        metrics::Unit::Seconds,
        "Abort latency: trigger (guard breach detected, Abort called) to the last target's revert acknowledged."
    );
    describe_counter!(
        ABORT_UNACKNOWLEDGED,
        "Aborts in which some target did not acknowledge its revert within the wait, by trigger. Nothing vouches for those faults any more: a connected agent reverts them at its next lease renewal, a disconnected one when its lease lapses."
    );
    describe_counter!(
        RESUMED,
        "Experiments found running at start-up and resumed (their end had not passed)."
    );
    describe_counter!(
        REVERTS_RESENT,
        "RevertFault orders sent again because the first was not acknowledged."
    );
    describe_counter!(
        STATUSES_COALESCED,
        "FaultStatus messages that replaced a waiting one of the same fault and state because the experiment's queue was full."
    );
    describe_counter!(
        STATUSES_DROPPED,
        "FaultStatus messages handed to no experiment, by reason: foreign (a fault the sending agent does not hold), late_busy (a late revert acknowledgement while 64 are being recorded)."
    );
    counter!(RESUMED).increment(0);
    counter!(REVERTS_RESENT).increment(0);
    counter!(STATUSES_COALESCED).increment(0);
    for d in Dropped::ALL {
        counter!(STATUSES_DROPPED, "reason" => d.as_str()).increment(0);
    }
    describe_histogram!(
        DISPATCH_SECONDS,
        metrics::Unit::Seconds,
        "Fault dispatch: ApplyFault sent to every target to the last acknowledgement."
    );
    for p in Phase::ALL {
        gauge!(EXPERIMENTS, "phase" => p.as_str()).set(0.0);
    }
    for t in super::run::Trigger::ALL {
        counter!(ABORT_UNACKNOWLEDGED, "trigger" => t.as_str()).increment(0);
    }
    for t in GUARD_TYPES {
        for o in OUTCOMES {
            counter!(GUARD_EVALUATIONS, "guard_type" => t, "outcome" => o).increment(0);
        }
        counter!(GUARD_BREACHES, "guard_type" => t).increment(0);
    }
}

/// The number of experiments in each phase.
pub fn phases(counts: &BTreeMap<Phase, usize>) {
    for p in Phase::ALL {
        let n = counts.get(&p).copied().unwrap_or(0);
        gauge!(EXPERIMENTS, "phase" => p.as_str()).set(n as f64);
    }
}

/// A run's steady-state hypothesis was decided.
pub fn hypothesis(name: &str, verdict: &'static str) {
    if verdict == "failed" {
        tracing::warn!(
            experiment = name,
            verdict,
            "experiment {name}: steady-state hypothesis failed"
        );
    } else {
        tracing::info!(
            experiment = name,
            verdict,
            "experiment {name}: steady-state hypothesis {verdict}"
        );
    }
    counter!(HYPOTHESES, "verdict" => verdict).increment(1);
}

pub fn phase_changed(name: &str, phase: Phase, why: &str) {
    match phase {
        Phase::Aborted | Phase::Failed | Phase::Interrupted => {
            tracing::warn!(
                experiment = name,
                phase = phase.as_str(),
                "experiment {name} {phase}: {why}"
            )
        }
        _ => tracing::info!(
            experiment = name,
            phase = phase.as_str(),
            "experiment {name} {phase}: {why}"
        ),
    }
}

pub fn guard_evaluated(experiment: &str, guard: &str, guard_type: &'static str, v: &Verdict) {
    counter!(GUARD_EVALUATIONS, "guard_type" => guard_type, "outcome" => v.outcome.as_str())
        .increment(1);
    match v.outcome {
        Outcome::Breached => {
            tracing::warn!(experiment, guard, guard_type, value = ?v.value, "guard {guard} breached: {}", v.detail);
            counter!(GUARD_BREACHES, "guard_type" => guard_type).increment(1);
        }
        Outcome::Error { .. } => {
            tracing::warn!(experiment, guard, guard_type, "guard {guard} {}", v.detail)
        }
        _ => tracing::debug!(experiment, guard, guard_type, "guard {guard}: {}", v.detail),
    }
}

pub fn dispatched(experiment: &str, took: Duration, applied: usize, failed: usize) {
    tracing::info!(
        experiment,
        applied,
        failed,
        "experiment {experiment}: every target answered ApplyFault within {took:?} ({applied} applied, {failed} failed)"
    );
    histogram!(DISPATCH_SECONDS).record(took.as_secs_f64());
}

pub fn abort_acknowledged(experiment: &str, trigger: &str, latency: Duration) {
    tracing::warn!(
        experiment,
        trigger,
        "experiment {experiment}: every revert acknowledged {latency:?} after the abort trigger"
    );
    histogram!(ABORT_SECONDS, "trigger" => trigger.to_string()).record(latency.as_secs_f64());
}

/// An abort ended with `unacknowledged` reverts unanswered after `waited`: the abort latency is
/// unknown. Nothing vouches for those faults any more (see `vouch.rs`).
pub fn abort_unacknowledged(
    experiment: &str,
    trigger: &str,
    unacknowledged: usize,
    waited: Duration,
) {
    tracing::warn!(
        experiment,
        trigger,
        unacknowledged,
        "experiment {experiment}: {unacknowledged} revert(s) not acknowledged {waited:?} after the abort trigger; nothing vouches for those faults any more, so a connected agent reverts them at its next lease renewal and a disconnected one when its lease lapses"
    );
    counter!(ABORT_UNACKNOWLEDGED, "trigger" => trigger.to_string()).increment(1);
}

/// A run found `running` at start-up was resumed.
pub fn resumed(experiment: &str, message: &str) {
    tracing::warn!(experiment, "experiment {experiment} {message}");
    counter!(RESUMED).increment(1);
}

/// RevertFault went out again for `n` unacknowledged faults.
pub fn reverts_resent(experiment: &str, n: usize) {
    tracing::info!(
        experiment,
        n,
        "experiment {experiment}: RevertFault sent again for {n} unacknowledged fault(s)"
    );
    counter!(REVERTS_RESENT).increment(n as u64);
}

pub fn target_failed(experiment: &str, agent: &str, fault_id: &str, error: &str) {
    tracing::warn!(
        experiment,
        agent,
        fault_id,
        "fault {fault_id} failed on {agent}: {error}"
    );
}

/// A status replaced a waiting one in a full experiment queue (see `mailbox.rs`).
pub fn status_coalesced() {
    counter!(STATUSES_COALESCED).increment(1);
}

/// A status from `node` went to no experiment. Logged at debug only: a flood must not become a
/// flood of log lines; the counter shows it.
pub fn status_dropped(node: &str, fault_id: &str, why: Dropped) {
    tracing::debug!(
        node,
        fault_id,
        reason = why.as_str(),
        "ignoring a fault status from {node} for {fault_id} ({})",
        why.as_str()
    );
    counter!(STATUSES_DROPPED, "reason" => why.as_str()).increment(1);
}
