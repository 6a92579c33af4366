//! Coordinator restarts and agent reconnects, seen from a run.
//!
//! A coordinator that starts and finds an experiment stored `running` resumes it when its end
//! has not passed: it vouches again for every fault that may still be held, so the agents that
//! come back within their lease keep them; evaluates the guards again; and honours the
//! remaining duration. An agent that is not back within the lease has reverted by itself (its
//! lease lapsed): its faults are recorded as reverted by lease. An experiment that cannot be
//! resumed (its end passed while the coordinator was down, or its document no longer parses)
//! ends `interrupted`; nothing vouches for its faults, so the agents revert them at their next
//! Hello. The gap (coordinator down from T1 to T2) is stored in the record and its report.
//!
//! When an agent opens a new session (after a coordinator restart or a broken stream), its
//! Hello says which faults it holds: a fault this run was still waiting for is adopted, and
//! one it counted as applied that the agent no longer holds is recorded as gone.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{parse_stored_experiment, Phase};
use tokio::time::Instant;

use super::{launch, Run, Trigger};
use crate::experiments::events;
use crate::experiments::record::{ExperimentRecord, Gap, TargetState};
use crate::experiments::Snapshot;
use crate::state::{now_ms, State};
use crate::store::StoreError;

/// How long after an agent's Hello the run judges what the Hello did not list (its queued
/// statuses, sent right after the Welcome, say more, e.g. "reverted: lease").
const JUDGE_BACK_AFTER: Duration = Duration::from_secs(1);

/// What start-up did with an experiment it found running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    Resumed,
    /// Ended `interrupted`, with the reason.
    Ended(String),
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms.max(0) as f64 / 1000.0)
}

/// Resumes or ends `rec`, found stored `running` at start-up. `down_from` is the previous
/// coordinator's last heartbeat (0 when unknown).
pub fn resume(
    state: &Arc<State>,
    mut rec: ExperimentRecord,
    down_from: i64,
) -> Result<Resumed, StoreError> {
    let now = now_ms();
    let from = if down_from > 0 {
        down_from.min(now)
    } else {
        rec.log.back().map_or(rec.started_unix_ms, |l| l.at_unix_ms)
    };
    let gap = Gap {
        from_unix_ms: from,
        to_unix_ms: now,
    };
    let down = format!(
        "the coordinator was down from {} to {} ({})",
        crate::experiments::report::stamp(from),
        crate::experiments::report::stamp(now),
        seconds(now - from)
    );
    rec.gaps.push(gap);
    let end_ms = rec.started_unix_ms + rec.duration_ms as i64;
    let spec = parse_stored_experiment(&rec.document);
    let why = match &spec {
        _ if state.halted().is_some() => Some(format!(
            "interrupted: {down}, and the fleet is halted; nothing vouches for its faults, so its \
             agents revert them at their next Hello"
        )),
        Ok(_) if end_ms > now => None,
        Ok(_) => Some(format!(
            "interrupted: {down}, past the experiment's end; its agents reverted its faults at their deadline"
        )),
        Err(e) => Some(format!(
            "interrupted: {down}, and the experiment could not be resumed ({e}); nothing vouches \
             for its faults, so its agents revert them at their next Hello"
        )),
    };
    if let Some(why) = why {
        rec.phase = Phase::Interrupted;
        rec.ended_unix_ms = now;
        rec.verdict_reason = why.clone();
        for t in rec.targets.iter_mut().filter(|t| !t.settled()) {
            t.error = "the coordinator stopped before the revert was acknowledged; nothing \
                       vouches for the fault any more, so its agent reverts it at its next Hello \
                       (or at its deadline)"
                .into();
        }
        rec.log(now, why.clone());
        state.store.put_experiment(&rec)?;
        state.experiments.set_phase(&rec.name, Phase::Interrupted);
        events::phase_changed(&rec.name, Phase::Interrupted, &why);
        return Ok(Resumed::Ended(why));
    }
    let Ok(spec) = spec else {
        unreachable!("an unparsable document ended above")
    };
    let mut vouched = 0;
    // A fault whose own duration (per-fault timing) is over is not vouched for again.
    let still_due =
        |i: usize| rec.started_unix_ms + spec.fault_duration(i).as_millis() as i64 > now;
    for t in rec
        .targets
        .iter()
        .filter(|t| !t.settled() && still_due(t.fault_index))
    {
        state.vouches.vouch(&t.agent, &t.fault_id, &rec.name);
        vouched += 1;
    }
    let left = end_ms - now;
    let message = format!(
        "resumed: {down}; {} left; {vouched} fault(s) vouched for again, their agents have {} to come back",
        seconds(left),
        humantime::format_duration(state.lease)
    );
    rec.log(now, message.clone());
    state.store.put_experiment(&rec)?;
    state.experiments.set_phase(&rec.name, Phase::Running);
    events::resumed(&rec.name, &message);
    let snapshot = Snapshot {
        record: Arc::new(rec.clone()),
        message: message.clone(),
        finished: false,
    };
    let deadline = Instant::now() + Duration::from_millis(left as u64);
    let return_by = Instant::now() + state.lease;
    launch(state, spec, rec, snapshot, deadline, Some(return_by));
    Ok(Resumed::Resumed)
}

impl Run {
    /// `node` said Hello holding `held`: adopt the faults this run still waited for.
    pub(super) async fn on_agent_back(&mut self, node: String, held: Vec<String>, at: i64) {
        let now = now_ms();
        let mut adopted = Vec::new();
        for t in self
            .rec
            .targets
            .iter_mut()
            .filter(|t| t.agent == node && t.state == TargetState::Pending)
            .filter(|t| held.contains(&t.fault_id))
        {
            t.state = TargetState::Applied;
            t.applied_unix_ms = now;
            adopted.push(t.fault_id.clone());
        }
        if !adopted.is_empty() {
            self.rec.log(
                now,
                format!("{node} came back holding {}: adopted", adopted.join(", ")),
            );
            self.dirty = true;
            self.check_dispatched();
        }
        self.backs.push((node, held, at, Instant::now()));
    }

    /// The checks of the one-second tick: agents judged a moment after their Hello, and the
    /// end of the return window of a resumed run.
    pub(super) async fn check_returns(&mut self) {
        if self.ending.is_some() {
            self.backs.clear();
            return;
        }
        let due: Vec<_> = {
            let (due, wait) = std::mem::take(&mut self.backs)
                .into_iter()
                .partition(|b| b.3.elapsed() >= JUDGE_BACK_AFTER);
            self.backs = wait;
            due
        };
        for (node, held, at, _) in due {
            let gone: Vec<usize> = (0..self.rec.targets.len())
                .filter(|i| {
                    let t = &self.rec.targets[*i];
                    t.agent == node
                        && !t.settled()
                        && t.apply_sent_unix_ms > 0
                        && t.apply_sent_unix_ms < at
                        && !held.contains(&t.fault_id)
                })
                .collect();
            for i in gone {
                let what = if self.rec.targets[i].state == TargetState::Pending {
                    "the agent opened a new session without it (the ApplyFault was lost with its previous session)"
                } else {
                    "the agent no longer held it when it opened a new session"
                };
                self.target_failed(i, what.to_string(), Trigger::TargetFailure)
                    .await;
            }
        }
        let Some(by) = self.return_by else { return };
        if Instant::now() < by {
            return;
        }
        self.return_by = None;
        let lease = humantime::format_duration(self.state.lease).to_string();
        for i in 0..self.rec.targets.len() {
            let t = &self.rec.targets[i];
            if t.settled() {
                continue;
            }
            let connected = self
                .state
                .registry
                .get(&t.agent)
                .is_some_and(|e| e.connected);
            if !connected {
                let t = &mut self.rec.targets[i];
                t.reverted_unix_ms = now_ms();
                t.revert_reason = "lease".into();
                let e = format!(
                    "the agent did not come back within its lease ({lease}) after the coordinator restarted: its lease lapsed, so it reverted the fault"
                );
                self.target_failed(i, e, Trigger::AgentLost).await;
            } else if t.state == TargetState::Pending {
                let e =
                    "the agent came back without it after the coordinator restarted".to_string();
                self.target_failed(i, e, Trigger::TargetFailure).await;
            }
        }
    }
}
