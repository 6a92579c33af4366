//! The states of a workflow run and of its steps, and the actions the state machine of
//! [`super::progress`] asks the coordinator to carry out.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

/// Where a workflow run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Aborted,
}

impl WorkflowPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowPhase::Pending => "pending",
            WorkflowPhase::Running => "running",
            WorkflowPhase::Succeeded => "succeeded",
            WorkflowPhase::Failed => "failed",
            WorkflowPhase::Aborted => "aborted",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, WorkflowPhase::Pending | WorkflowPhase::Running)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Waiting,
    Running,
    AwaitingApproval,
    Succeeded,
    Failed,
    Aborted,
    Skipped,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Running => "running",
            StepState::AwaitingApproval => "awaiting-approval",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Aborted => "aborted",
            StepState::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            StepState::Waiting | StepState::Running | StepState::AwaitingApproval
        )
    }

    /// Running or awaiting approval.
    pub fn is_active(self) -> bool {
        matches!(self, StepState::Running | StepState::AwaitingApproval)
    }
}

/// The state of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    pub name: String,
    /// The parallel step it belongs to.
    pub parent: Option<String>,
    /// `experiment`, `parallel`, `suspend` or `approval`.
    pub kind: String,
    pub state: StepState,
    pub started_unix_ms: i64,
    pub ended_unix_ms: i64,
    /// Effective deadline (unix ms; 0: none).
    pub deadline_unix_ms: i64,
    /// End of a timed suspend (unix ms).
    pub until_unix_ms: i64,
    /// The experiment it runs (experiment steps).
    pub experiment: String,
    pub message: String,
}

/// What the coordinator is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create and start experiment `run` from the inline `spec`; stop it at `deadline_unix_ms`
    /// (0: none) if it still runs.
    StartExperiment {
        step: String,
        run: String,
        spec: Value,
        deadline_unix_ms: i64,
    },
    /// Abort experiment `run` (fleet-wide revert).
    StopExperiment {
        step: String,
        run: String,
        reason: String,
    },
    /// The workflow is over.
    Finished {
        phase: WorkflowPhase,
        reason: String,
    },
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    #[error("step: {0:?} is not a step of this workflow")]
    NoSuchStep(String),
    #[error("step: {step:?} is {state}, not awaiting approval")]
    NotWaiting { step: String, state: &'static str },
}
