//! Workflows: several experiments run as one game day — in series, in parallel, with timed
//! pauses and approval gates — under deadlines that cascade from the workflow to its steps and
//! to the experiments inside. Pure: the coordinator feeds [`Progress`] with what happened and
//! carries out the [`Action`]s it returns.
//!
//! - [`doc`]: the `kind: Workflow` document, validated into a [`WorkflowSpec`].
//! - [`template`]: inline experiment specs made into whole documents, errors placed under
//!   their field.
//! - [`progress`]: the step state machine; [`state`]: the states and actions it deals in.
//! - [`steady`]: the workflow's own steady-state hypothesis at its start.

pub mod doc;
pub mod progress;
pub mod state;
pub mod steady;
pub mod template;
pub mod together;

#[cfg(test)]
mod progress_tests;

use std::time::Duration;

use serde_yaml_ng::Value;

pub use doc::parse_workflow;
pub use progress::{Action, Progress, StepState, StepStatus, WorkflowPhase};
/// An inline spec as written (the body of an experiment's or workflow's `spec`).
pub use serde_yaml_ng::Value as SpecValue;

/// The `kind` of a workflow document.
pub const KIND: &str = "Workflow";
/// Most top-level steps in a workflow.
pub const MAX_STEPS: usize = 64;
/// Most steps in one `parallel`.
pub const MAX_PARALLEL: usize = 16;
/// Range of `deadline` (workflow and step) and of `suspend.duration`.
pub const MIN_DEADLINE: Duration = Duration::from_secs(1);
pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a failed step does to the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStepFailure {
    /// Stop what runs, skip the rest, end the workflow `failed`.
    #[default]
    Abort,
    /// Go on with the next step; the workflow ends `failed` if any step failed.
    Continue,
}

/// A validated workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    pub name: String,
    pub steps: Vec<Step>,
    /// From the start of the workflow.
    pub deadline: Option<Duration>,
    pub on_step_failure: OnStepFailure,
    /// `spec.steadyState`: checks that must hold before the first step and again within
    /// `recoveryWithin` after the last one ended.
    pub steady_state: Option<crate::experiment::steady::SteadyState>,
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// From the start of the step; the experiment inside is stopped when it passes.
    pub deadline: Option<Duration>,
    pub action: StepAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// An inline experiment spec (the body of an Experiment document's `spec`), run as the
    /// experiment `<workflow>-<step>`.
    Experiment(Value),
    /// Steps started together; done when all are.
    Parallel(Vec<Step>),
    /// `suspend: {duration}`.
    Wait(Duration),
    /// `suspend: {approval: true}`: waits for `faultctl workflow approve`.
    Approval,
}

impl StepAction {
    pub fn kind(&self) -> &'static str {
        match self {
            StepAction::Experiment(_) => "experiment",
            StepAction::Parallel(_) => "parallel",
            StepAction::Wait(_) => "suspend",
            StepAction::Approval => "approval",
        }
    }
}

/// The experiment a step runs: `<workflow>-<step>`.
pub fn step_run_name(workflow: &str, step: &str) -> String {
    format!("{workflow}-{step}")
}
