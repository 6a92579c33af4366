//! The clock of every schedule: one task that sleeps until the earliest fire time (or until a
//! schedule changes), fires what is due, records what was missed, and announces the end of
//! the experiments the schedules started. After a restart (once the agents known before are
//! back, or a lease has passed) the same pass catches up: of the
//! fire times missed while the coordinator was down only the latest runs, once, and only
//! within `startingDeadline`; the others are recorded as skipped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::schedule::fires::due;
use faultline_core::schedule::parse_schedule;

use super::fire::{self, is_active};
use super::ScheduleRecord;
use crate::runs::{self, RunEvent};
use crate::state::{now_ms, State};
use crate::store::{ItemTree, StoreError};

/// The longest sleep between passes (runs' ends are noticed at this pace at the latest).
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// Loads the stored schedules into the table.
pub async fn recover(state: &State) -> Result<usize, StoreError> {
    let stored: Vec<ScheduleRecord> = state.store.items(ItemTree::Schedules).await?;
    let mut n = 0;
    for rec in stored {
        match parse_schedule(&rec.document, state.policy.max_duration) {
            Ok(spec) => {
                state.schedules.put(rec, spec);
                n += 1;
            }
            Err(e) => tracing::error!(schedule = %rec.name, "cannot load the schedule: {e}"),
        }
    }
    Ok(n)
}

/// Starts the scheduler task; it ends at shutdown.
pub fn spawn(state: &Arc<State>) {
    let state = state.clone();
    tokio::spawn(async move {
        reconnect_grace(&state).await;
        let mut active = BTreeSet::new();
        loop {
            pass(&state).await;
            announce_ends(&state, &mut active).await;
            let wait = match state.schedules.earliest() {
                Some(at) => Duration::from_millis((at - now_ms()).clamp(0, 250) as u64),
                None => MAX_SLEEP,
            };
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = state.schedules.changed.notified() => {}
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            }
        }
    });
}

/// After a start, the agents known from before reconnect within moments: the first pass
/// (which runs what was missed while the coordinator was down) waits for them, at most one
/// lease, so a catch-up run is not refused for want of connected agents.
async fn reconnect_grace(state: &State) {
    let until = tokio::time::Instant::now() + state.lease;
    while tokio::time::Instant::now() < until {
        let connected = state.registry.map_all(|a| a.connected);
        if !connected.is_empty() && connected.iter().all(|c| *c) {
            return;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Fires every schedule that is due.
async fn pass(state: &Arc<State>) {
    let now = now_ms();
    let due_names: Vec<String> = state
        .schedules
        .all()
        .into_iter()
        .filter(|(r, _)| !r.suspended && r.next_fire_unix_ms > 0 && r.next_fire_unix_ms <= now)
        .map(|(r, _)| r.name)
        .collect();
    for name in due_names {
        let _one = state.schedules.lock.lock().await;
        let Some((mut rec, spec)) = state.schedules.get(&name) else {
            continue;
        };
        let now = now_ms();
        if rec.suspended || rec.next_fire_unix_ms == 0 || rec.next_fire_unix_ms > now {
            continue;
        }
        let d = due(&spec, rec.next_fire_unix_ms, rec.anchor_unix_ms, now);
        for (fire_ms, why) in d.skipped {
            rec.skip(fire_ms, now, why);
        }
        rec.skipped_total += d.more_skipped;
        if let Some(fire_ms) = d.run {
            fire::fire(state, &mut rec, &spec, fire_ms, "schedule").await;
        }
        rec.next_fire_unix_ms = d.next.unwrap_or(0);
        if let Err(e) = state.store.put_item(ItemTree::Schedules, &name, &rec).await {
            tracing::error!(schedule = %name, "could not store the schedule: {e}");
        }
        state.schedules.put(rec, spec);
    }
}

/// Announces the end of each experiment a schedule started, once.
async fn announce_ends(state: &State, active: &mut BTreeSet<String>) {
    for (rec, _) in state.schedules.all() {
        for r in rec.runs.iter().filter(|r| r.kind == "experiment") {
            if is_active(state, r) {
                active.insert(r.name.clone());
            } else if active.remove(&r.name) {
                let (phase, reason, verdict) = match state.store.experiment(&r.name).await {
                    Ok(Some(e)) => (
                        e.phase.as_str().to_string(),
                        e.verdict_reason,
                        e.hypothesis
                            .map_or("none", |h| h.verdict.as_str())
                            .to_string(),
                    ),
                    _ => ("gone".to_string(), String::new(), "none".to_string()),
                };
                runs::emit(
                    state,
                    &RunEvent::Ended {
                        kind: "experiment",
                        name: r.name.clone(),
                        phase,
                        reason,
                        verdict,
                    },
                );
            }
        }
    }
}
