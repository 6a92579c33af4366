//! Experiments: the document, validation, and the planner (blast radius and policy). Pure.
//!
//! - [`doc`]: the `apiVersion: faultline.dev/v1, kind: Experiment` document, parsed into an
//!   [`ExperimentSpec`] with errors that name the field path.
//! - [`guard`], [`guard_doc`], [`access`]: SLO guards (Prometheus, agent telemetry, HTTP
//!   probes), their document form, and how they reach HTTP(S) endpoints (TLS, credentials from
//!   files, headers, method and body).
//! - [`eval`]: the guard decision logic (`above`/`below` held `for` a duration, consecutive
//!   probe failures), fed with observations by the coordinator.
//! - [`planner`]: which agents an experiment targets under its mode, its blast radius and the
//!   coordinator's policy, or why it may not run.
//! - [`pods`], [`pods_doc`], [`pod_planner`]: Kubernetes pod targets (`spec.targets.pods`), the
//!   cluster as the planner sees it, and which pods an experiment targets.
//! - [`steady`]: the steady-state hypothesis (`spec.steadyState`): checks that must hold
//!   before injection and again within `recoveryWithin`, and its verdict.
//! - [`impact`]: before / during / after values, time to deviation and to recovery, and
//!   rule-based findings, from the recorded observations.
//! - [`phase`]: the lifecycle `pending -> running -> completed | aborted | failed`
//!   (`interrupted` when the coordinator restarted mid-run) and deterministic fault ids.

pub mod access;
pub mod doc;
pub mod eval;
pub mod guard;
pub mod guard_doc;
pub mod impact;
pub mod phase;
pub mod planner;
// pod-kill (issue 13).
pub mod pod_kill;
pub mod pod_planner;
pub mod pods;
pub mod pods_doc;
mod shuffle;
pub mod steady;
mod url;

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod planner_tests;
#[cfg(test)]
mod pod_kill_tests;
#[cfg(test)]
mod pod_planner_tests;
#[cfg(test)]
mod pods_doc_tests;
// Per-fault timing (issue 13, composition).
#[cfg(test)]
mod fault_timing_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::fault::FaultSpec;
use crate::NodeName;

pub use doc::{parse_experiment, parse_stored_experiment};
pub use guard::{
    Guard, GuardKind, HttpAccess, HttpAuth, HttpMethod, HttpUrl, OnError, TelemetryMetric,
    Threshold, TlsOptions,
};
pub use phase::{fault_id, Phase};
pub use planner::{plan, AgentView, Exclusion, Plan, PlanInput, PlanPolicy, Refusal};
pub use pod_planner::{plan_pods, ExcludedPod, PodExclusion, PodPlan, PodPlanInput};
pub use pods::{aim, ContainerView, NodeView, PodSelector, PodTarget, PodView};

/// The `apiVersion` every experiment document carries.
pub const API_VERSION: &str = "faultline.dev/v1";
/// The `kind` every experiment document carries.
pub const KIND: &str = "Experiment";
/// Most faults one experiment may hold (per target).
pub const MAX_FAULTS: usize = 16;
/// Most guards one experiment may hold.
pub const MAX_GUARDS: usize = 16;
/// Most agents `mode: fixed` and `blastRadius.maxTargets` may name.
pub const MAX_FIXED: u32 = 10_000;
/// Shortest experiment.
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// Default and range of `spec.guardInterval`.
pub const DEFAULT_GUARD_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_GUARD_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_GUARD_INTERVAL: Duration = Duration::from_secs(60);

/// How many of the eligible agents an experiment takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One agent.
    One,
    /// Every eligible agent.
    All,
    /// This many agents (1..=10000).
    Fixed(u32),
    /// This percent of the eligible agents (1..=100), rounded up, at least one.
    Percent(u32),
}

impl Mode {
    /// How many agents the mode asks for out of `eligible`.
    pub fn ask(self, eligible: usize) -> usize {
        match self {
            Mode::One => 1,
            Mode::All => eligible,
            Mode::Fixed(n) => n as usize,
            Mode::Percent(p) => (eligible * p as usize).div_ceil(100).max(1),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::One => f.write_str("one"),
            Mode::All => f.write_str("all"),
            Mode::Fixed(n) => write!(f, "fixed {n}"),
            Mode::Percent(p) => write!(f, "percent {p}%"),
        }
    }
}

/// Which agents an experiment may target: by name and/or labels (both must match); both empty
/// means every agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentSelector {
    pub names: Vec<NodeName>,
    pub labels: BTreeMap<String, String>,
}

impl AgentSelector {
    /// Why an agent does not match, or `None` when it does.
    pub fn mismatch(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<String> {
        if !self.names.is_empty() && !self.names.iter().any(|n| n.as_str() == name) {
            return Some("not in targets.agents.names".into());
        }
        let missing: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, v)| labels.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !missing.is_empty() {
            return Some(format!("labels do not match {}", missing.join(",")));
        }
        None
    }
}

/// The experiment's own blast radius, on top of the coordinator's policy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BlastRadius {
    /// At most this many targets.
    pub max_targets: Option<u32>,
    /// At most this percent of the connected fleet (rounded down).
    pub max_percent: Option<f64>,
}

/// What a failure to apply a fault on one target does to the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTargetFailure {
    /// Revert everything and end the experiment as `failed`.
    #[default]
    Abort,
    /// Keep the other targets running; the failure shows in the result.
    Continue,
}

impl OnTargetFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTargetFailure::Abort => "abort",
            OnTargetFailure::Continue => "continue",
        }
    }
}

/// A validated experiment document.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub name: String,
    pub duration: Duration,
    /// Agents to target (empty when `pods` is given).
    pub agents: AgentSelector,
    /// Kubernetes pods to target instead of agents (`spec.targets.pods`).
    pub pods: Option<PodSelector>,
    pub mode: Mode,
    /// Applied on every selected agent (or pod, or container). With pod targets the faults
    /// carry no target of their own; see [`aim`].
    pub faults: Vec<FaultSpec>,
    pub guards: Vec<Guard>,
    pub guard_interval: Duration,
    pub blast_radius: BlastRadius,
    pub on_target_failure: OnTargetFailure,
    /// `spec.steadyState`, when given.
    pub steady_state: Option<steady::SteadyState>,
    /// Per-fault timing: `spec.faults[i].duration`, by index of `faults` (missing or `None`:
    /// the experiment's duration). See [`ExperimentSpec::fault_duration`].
    pub fault_durations: Vec<Option<Duration>>,
}

impl ExperimentSpec {
    /// How long fault `i` holds from injection: its own `duration`, else the experiment's.
    pub fn fault_duration(&self, i: usize) -> Duration {
        self.fault_durations
            .get(i)
            .copied()
            .flatten()
            .map_or(self.duration, |d| d.min(self.duration))
    }
}
