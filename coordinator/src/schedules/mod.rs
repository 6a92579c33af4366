//! Schedules in the coordinator: the `Schedules` gRPC service and one scheduler task that
//! fires every schedule on time, each run an ordinary experiment (through `experiments::ops`)
//! or workflow (through `workflows::ops`) named `<schedule>-<UTC timestamp>`. Schedules are
//! stored in the sled store (tree `schedules`) and survive restarts.
//!
//! - [`service`]: the gRPC edge.
//! - [`ops`]: apply, suspend, resume, trigger, delete, read.
//! - [`fire`]: one fire — the concurrency policy, starting the run, the history.
//! - [`scheduler`]: the clock: due fire times, the catch-up after a restart.

pub mod fire;
pub mod ops;
pub mod scheduler;
pub mod service;

use std::collections::BTreeMap;
use std::sync::Mutex;

use faultline_core::schedule::ScheduleSpec;
use faultline_proto::pb;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Skipped fire times kept per schedule (the total is counted).
pub const MAX_SKIPS: usize = 50;

/// One run a schedule started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub name: String,
    /// `experiment` or `workflow`.
    pub kind: String,
    pub fire_unix_ms: i64,
    pub started_unix_ms: i64,
    /// `schedule` or `manual`.
    pub trigger: String,
}

/// A fire time that did not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub fire_unix_ms: i64,
    pub at_unix_ms: i64,
    pub reason: String,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub name: String,
    pub document: String,
    pub created_by: String,
    pub created_unix_ms: i64,
    /// Where `@every` intervals count from (when the expression was last set).
    pub anchor_unix_ms: i64,
    pub suspended: bool,
    /// 0 while suspended or when it never fires again.
    pub next_fire_unix_ms: i64,
    pub last_fire_unix_ms: i64,
    /// The latest runs (at most `historyLimit`), oldest first.
    pub runs: Vec<RunRef>,
    /// The latest skipped fire times, oldest first.
    pub skipped: Vec<Skip>,
    pub runs_total: u64,
    pub skipped_total: u64,
}

impl ScheduleRecord {
    pub fn skip(&mut self, fire_unix_ms: i64, at_unix_ms: i64, reason: String) {
        tracing::info!(schedule = %self.name, fire_unix_ms, "fire skipped: {reason}");
        crate::runs::schedule_fire("skipped");
        self.skipped.push(Skip {
            fire_unix_ms,
            at_unix_ms,
            reason,
        });
        self.skipped_total += 1;
        if self.skipped.len() > MAX_SKIPS {
            let excess = self.skipped.len() - MAX_SKIPS;
            self.skipped.drain(..excess);
        }
    }

    /// The wire form; `phase` says where each run is now.
    pub fn to_pb(&self, spec: &ScheduleSpec, phase: impl Fn(&RunRef) -> String) -> pb::Schedule {
        pb::Schedule {
            name: self.name.clone(),
            document: self.document.clone(),
            schedule: spec.expression.clone(),
            time_zone: spec.time_zone.name().to_string(),
            concurrency_policy: spec.concurrency.as_str().to_string(),
            starting_deadline_ms: spec.starting_deadline.map_or(0, |d| d.as_millis() as u64),
            history_limit: spec.history_limit,
            suspended: self.suspended,
            run_kind: spec.run.kind().to_string(),
            created_by: self.created_by.clone(),
            created_unix_ms: self.created_unix_ms,
            next_fire_unix_ms: self.next_fire_unix_ms,
            last_fire_unix_ms: self.last_fire_unix_ms,
            runs: self
                .runs
                .iter()
                .map(|r| pb::ScheduleRun {
                    name: r.name.clone(),
                    kind: r.kind.clone(),
                    fire_unix_ms: r.fire_unix_ms,
                    started_unix_ms: r.started_unix_ms,
                    phase: phase(r),
                    trigger: r.trigger.clone(),
                })
                .collect(),
            skipped: self
                .skipped
                .iter()
                .map(|s| pb::ScheduleSkip {
                    fire_unix_ms: s.fire_unix_ms,
                    at_unix_ms: s.at_unix_ms,
                    reason: s.reason.clone(),
                })
                .collect(),
            runs_total: self.runs_total,
            skipped_total: self.skipped_total,
        }
    }
}

/// Every schedule, in memory (the store has the same, durably), and the scheduler's wake-up.
#[derive(Debug, Default)]
pub struct Table {
    inner: Mutex<BTreeMap<String, (ScheduleRecord, ScheduleSpec)>>,
    /// Held while a schedule is changed or fired, so that the scheduler and the API never
    /// interleave on one schedule.
    pub lock: tokio::sync::Mutex<()>,
    /// Wakes the scheduler when a schedule changed.
    pub changed: Notify,
}

impl Table {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (ScheduleRecord, ScheduleSpec)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<(ScheduleRecord, ScheduleSpec)> {
        self.map().get(name).cloned()
    }

    pub fn all(&self) -> Vec<(ScheduleRecord, ScheduleSpec)> {
        self.map().values().cloned().collect()
    }

    pub fn put(&self, rec: ScheduleRecord, spec: ScheduleSpec) {
        self.map().insert(rec.name.clone(), (rec, spec));
    }

    pub fn remove(&self, name: &str) -> bool {
        self.map().remove(name).is_some()
    }

    /// The earliest next fire time of the schedules not suspended.
    pub fn earliest(&self) -> Option<i64> {
        self.map()
            .values()
            .filter(|(r, _)| !r.suspended && r.next_fire_unix_ms > 0)
            .map(|(r, _)| r.next_fire_unix_ms)
            .min()
    }
}
