//! FaultStatus from the agents, routed to the experiment: apply acks, failures (the agent's
//! local limits included), revert acks with their reason and counters.

use faultline_core::experiment::Phase;
use faultline_proto::pb;

use super::{Run, Trigger, PUBLISH_EACH_STATUS_UP_TO};
use crate::experiments::convert::reason_name;
use crate::experiments::record::TargetState;
use crate::state::now_ms;
use crate::store::{Store, StoreError};

impl Run {
    pub(super) async fn on_status(&mut self, node: &str, s: pb::FaultStatus) {
        // Only the agent that holds a fault may report on it.
        let Some(i) = self.progress.target(&self.rec.targets, &s.fault_id, node) else {
            tracing::warn!(
                experiment = %self.rec.name,
                node,
                fault_id = %s.fault_id,
                "ignoring a status for a fault this experiment did not give this agent"
            );
            return;
        };
        let now = now_ms();
        let state = pb::FaultState::try_from(s.state).unwrap_or(pb::FaultState::Unspecified);
        let mut message = String::new();
        let mut failure: Option<String> = None;
        {
            let t = &mut self.rec.targets[i];
            t.counters.extend(s.counters.clone());
            match state {
                pb::FaultState::Applied => {
                    if t.state == TargetState::Pending {
                        t.state = TargetState::Applied;
                        t.applied_unix_ms = now;
                        message = format!("{} applied on {node}", t.fault_id);
                    }
                }
                pb::FaultState::Failed => {
                    let error = if s.error.is_empty() {
                        "the agent reported FAILED without a reason".to_string()
                    } else {
                        s.error.clone()
                    };
                    if self.ending.is_some() || t.applied_unix_ms > 0 {
                        // A revert (or a late apply) went wrong: keep the record, no new end.
                        t.state = TargetState::Failed;
                        t.error = error.clone();
                        message = format!("{} failed on {node}: {error}", t.fault_id);
                    } else if t.state == TargetState::Failed {
                        // Already given up (no answer in time): the agent's late word is
                        // logged, not counted as a second failure.
                        message = format!(
                            "{} failed on {node} after it was given up: {error}",
                            t.fault_id
                        );
                    } else {
                        failure = Some(error);
                    }
                }
                pb::FaultState::Reverted => {
                    if t.reverted_unix_ms == 0 {
                        t.reverted_unix_ms = now;
                        // A renewal without the fault can overtake the RevertFault it follows:
                        // the agent then says "unvouched", but the revert is the one we ordered.
                        let ordered = self.ending.as_ref().map(|e| e.reason);
                        let reason = match ordered {
                            Some(r) if s.reason == pb::RevertReason::Unvouched as i32 => r as i32,
                            _ => s.reason,
                        };
                        t.revert_reason = reason_name(reason);
                        if !s.error.is_empty() && t.error.is_empty() {
                            t.error = s.error.clone();
                        }
                        if t.state != TargetState::Failed {
                            t.state = TargetState::Reverted;
                        }
                        message =
                            format!("{} reverted on {node} ({})", t.fault_id, t.revert_reason);
                        let early = s.reason != pb::RevertReason::Deadline as i32
                            && t.state != TargetState::Failed;
                        if self.ending.is_none() && early {
                            failure = Some(format!(
                                "the agent reverted the fault before the experiment ended ({}){}",
                                t.revert_reason,
                                if s.error.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", s.error)
                                }
                            ));
                        }
                    }
                }
                pb::FaultState::Unspecified => {
                    tracing::warn!(node, fault_id = %s.fault_id, "ignoring a status without a state");
                }
            }
        }
        if !message.is_empty() && self.rec.targets[i].state == TargetState::Failed {
            self.rec.log(now, message.clone());
        }
        self.dirty = true;
        if let Some(error) = failure {
            message = format!("{} failed on {node}: {error}", s.fault_id);
            self.target_failed(i, error, Trigger::TargetFailure).await;
        }
        self.check_dispatched();
        if self.rec.targets.len() <= PUBLISH_EACH_STATUS_UP_TO || self.all_settled() {
            let message = if message.is_empty() {
                "status".to_string()
            } else {
                message
            };
            self.publish(message, false);
        }
    }
}

/// A status for an experiment whose run is over (a late revert ack, an agent that reconnects
/// after an interruption): recorded in the stored target if it tells something new.
pub fn late_status(store: &dyn Store, node: &str, s: &pb::FaultStatus) -> Result<(), StoreError> {
    let Some(mut rec) = store.experiment(&s.experiment_id)? else {
        return Ok(());
    };
    if !rec.phase.is_terminal() && rec.phase != Phase::Pending {
        return Ok(());
    }
    let Some(t) = rec
        .targets
        .iter_mut()
        .find(|t| t.fault_id == s.fault_id && t.agent == node)
    else {
        return Ok(());
    };
    let now = now_ms();
    if s.state == pb::FaultState::Reverted as i32 && t.reverted_unix_ms == 0 {
        t.reverted_unix_ms = now;
        t.revert_reason = reason_name(s.reason);
        t.counters.extend(s.counters.clone());
        if t.state != TargetState::Failed {
            t.state = TargetState::Reverted;
        }
        let line = format!(
            "late acknowledgement: {} reverted on {node} ({})",
            s.fault_id, t.revert_reason
        );
        rec.log(now, line);
        store.put_experiment(&rec)?;
    }
    Ok(())
}
