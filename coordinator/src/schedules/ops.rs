//! What can be done to schedules — apply (create or replace), suspend, resume, trigger,
//! delete, read. Every mutation is audited before it changes anything.

use std::sync::Arc;

use faultline_core::fault::SpecError;
use faultline_core::schedule::{parse_schedule, ScheduleSpec};
use faultline_core::Identity;
use tonic::Status;

use super::{fire, ScheduleRecord};
use crate::authz::Method;
use crate::state::{now_ms, State, Unaudited};
use crate::store::{ItemTree, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(SpecError),
    #[error("name: schedule {0:?} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
}

impl ScheduleError {
    pub fn is_audit(&self) -> bool {
        matches!(self, ScheduleError::Unaudited(_))
    }

    /// The one conversion into a gRPC status.
    pub fn status(&self) -> Status {
        let m = self.to_string();
        match self {
            ScheduleError::Invalid(_) => Status::invalid_argument(m),
            ScheduleError::NotFound(_) => Status::not_found(m),
            ScheduleError::Store(_) => Status::internal(m),
            ScheduleError::Unaudited(e) => e.status(),
        }
    }
}

/// A schedule and its validated spec.
pub type Entry = (ScheduleRecord, ScheduleSpec);

fn next_fire(rec: &ScheduleRecord, spec: &ScheduleSpec, now: i64) -> i64 {
    if rec.suspended {
        return 0;
    }
    spec.cron
        .next_after(now, rec.anchor_unix_ms, spec.time_zone)
        .unwrap_or(0)
}

async fn save(
    state: &State,
    rec: ScheduleRecord,
    spec: ScheduleSpec,
) -> Result<Entry, ScheduleError> {
    state
        .store
        .put_item(ItemTree::Schedules, &rec.name, &rec)
        .await?;
    state.schedules.put(rec.clone(), spec.clone());
    state.schedules.changed.notify_one();
    Ok((rec, spec))
}

/// Creates the schedule of `document`, or replaces the one of the same name (keeping its
/// history; `@every` keeps counting from where it did unless the expression changed).
pub async fn apply(
    state: &State,
    identity: &Identity,
    document: &str,
) -> Result<Entry, ScheduleError> {
    let spec =
        parse_schedule(document, state.policy.max_duration).map_err(ScheduleError::Invalid)?;
    let _one = state.schedules.lock.lock().await;
    let old = state.schedules.get(&spec.name);
    let verb = if old.is_some() { "replaced" } else { "created" };
    state
        .audit_first(
            identity,
            Method::ScheduleApply,
            format!(
                "{verb} schedule {}: {} ({}) runs a {}{}",
                spec.name,
                spec.expression,
                spec.time_zone.name(),
                spec.run.kind(),
                if spec.suspend { ", suspended" } else { "" }
            ),
        )
        .await?;
    let now = now_ms();
    let mut rec = match old {
        Some((mut rec, old_spec)) => {
            if old_spec.expression != spec.expression || old_spec.time_zone != spec.time_zone {
                rec.anchor_unix_ms = now;
            }
            rec.document = document.to_string();
            rec
        }
        None => ScheduleRecord {
            name: spec.name.clone(),
            document: document.to_string(),
            created_by: identity.to_string(),
            created_unix_ms: now,
            anchor_unix_ms: now,
            suspended: false,
            next_fire_unix_ms: 0,
            last_fire_unix_ms: 0,
            runs: Vec::new(),
            skipped: Vec::new(),
            runs_total: 0,
            skipped_total: 0,
        },
    };
    rec.suspended = spec.suspend;
    rec.next_fire_unix_ms = next_fire(&rec, &spec, now);
    save(state, rec, spec).await
}

pub fn get(state: &State, name: &str) -> Result<Entry, ScheduleError> {
    state
        .schedules
        .get(name)
        .ok_or_else(|| ScheduleError::NotFound(name.to_string()))
}

/// Suspends (`true`) or resumes a schedule. A resumed schedule fires from now on; what it
/// missed while suspended does not run.
pub async fn set_suspended(
    state: &State,
    identity: &Identity,
    name: &str,
    suspend: bool,
) -> Result<Entry, ScheduleError> {
    let _one = state.schedules.lock.lock().await;
    let (mut rec, spec) = get(state, name)?;
    let (method, verb) = if suspend {
        (Method::ScheduleSuspend, "suspended")
    } else {
        (Method::ScheduleResume, "resumed")
    };
    state
        .audit_first(identity, method, format!("{verb} schedule {name}"))
        .await?;
    rec.suspended = suspend;
    if !suspend {
        // Intervals count from the resume.
        rec.anchor_unix_ms = now_ms();
    }
    rec.next_fire_unix_ms = next_fire(&rec, &spec, now_ms());
    save(state, rec, spec).await
}

/// Starts a run now, under the schedule's concurrency policy; the run's name, or `None` when
/// the fire was skipped (the record says why).
pub async fn trigger(
    state: &Arc<State>,
    identity: &Identity,
    name: &str,
) -> Result<(Entry, Option<String>), ScheduleError> {
    let _one = state.schedules.lock.lock().await;
    let (mut rec, spec) = get(state, name)?;
    state
        .audit_first(
            identity,
            Method::ScheduleTrigger,
            format!("triggered schedule {name}"),
        )
        .await?;
    // Whole seconds, as the run's name has them.
    let at = now_ms() / 1000 * 1000;
    let run = fire::fire(state, &mut rec, &spec, at, "manual").await;
    let entry = save(state, rec, spec).await?;
    Ok((entry, run))
}

/// Removes the schedule; runs in progress go on (each can be aborted by name).
pub async fn delete(state: &State, identity: &Identity, name: &str) -> Result<(), ScheduleError> {
    let _one = state.schedules.lock.lock().await;
    get(state, name)?;
    state
        .audit_first(
            identity,
            Method::ScheduleDelete,
            format!("deleted schedule {name}"),
        )
        .await?;
    state.store.remove_item(ItemTree::Schedules, name).await?;
    state.schedules.remove(name);
    Ok(())
}
