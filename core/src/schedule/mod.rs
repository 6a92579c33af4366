//! Schedules: an experiment or a workflow run again and again on a cron schedule, each run an
//! ordinary experiment or workflow named `<schedule>-<UTC timestamp>`. Pure: the coordinator
//! keeps the clock and the records.
//!
//! - [`cron`]: the one grammar (5/6-field cron, `@every`, descriptors) and next fire times in
//!   a time zone, daylight saving time included.
//! - [`doc`]: the `kind: Schedule` document, validated into a [`ScheduleSpec`].
//! - [`fires`]: which fire times are due, run, missed or skipped.

pub mod cron;
pub mod doc;
pub mod fires;

#[cfg(test)]
mod cron_tests;

use std::time::Duration;

use chrono_tz::Tz;
use serde_yaml_ng::Value;

pub use cron::{name_stamp, Cron, CronError};
pub use doc::parse_schedule;

/// The `kind` of a schedule document.
pub const KIND: &str = "Schedule";
/// Default and range of `spec.historyLimit` (runs whose records are kept).
pub const DEFAULT_HISTORY_LIMIT: u32 = 10;
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// Range of `spec.startingDeadline`.
pub const MIN_STARTING_DEADLINE: Duration = Duration::from_secs(1);
pub const MAX_STARTING_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a fire does while an earlier run of the schedule is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// Skip the new run (recorded).
    #[default]
    Forbid,
    /// Start it anyway.
    Allow,
    /// Abort the running one, then start the new one.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

/// What each run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunTemplate {
    /// `spec.experiment`: the body of an Experiment document's `spec`.
    Experiment(Value),
    /// `spec.workflow`: the body of a Workflow document's `spec`.
    Workflow(Value),
}

impl RunTemplate {
    pub fn kind(&self) -> &'static str {
        match self {
            RunTemplate::Experiment(_) => "experiment",
            RunTemplate::Workflow(_) => "workflow",
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    /// As written (`@every 30s`, `0 3 * * *`).
    pub expression: String,
    pub cron: Cron,
    pub time_zone: Tz,
    pub concurrency: ConcurrencyPolicy,
    /// A run that could not start within this of its fire time is skipped (recorded);
    /// `None`: it runs however late.
    pub starting_deadline: Option<Duration>,
    pub history_limit: u32,
    pub suspend: bool,
    pub run: RunTemplate,
}

/// The name of the run fired at `fire_ms`.
pub fn run_name(schedule: &str, fire_ms: i64) -> String {
    format!("{schedule}-{}", name_stamp(fire_ms))
}
