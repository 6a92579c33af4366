//! The end of a run: RevertFault to every target at once, failed targets and
//! `onTargetFailure`, the verdict, the abort latency and the final record.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_core::experiment::{OnTargetFailure, Phase};
use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tokio::time::Instant;

use super::{dispatch, Breach, End, Ending, Run, Trigger, REVERT_WAIT, SHUTDOWN_REVERT_WAIT};
use crate::experiments::events;
use crate::experiments::record::{AbortRecord, TargetState};
use crate::state::now_ms;

impl Run {
    /// Ends the experiment. Write-ahead: the decision (phase, verdict, abort) is stored first,
    /// so a coordinator that dies right after never resumes what it was ending; then the vouches
    /// are withdrawn and RevertFault goes to every target at once.
    pub(super) async fn end(&mut self, end: End) {
        if self.ending.is_some() {
            return;
        }
        self.guard_stop.cancel();
        // pod-kill (issue 13): no delete once the end is decided.
        self.pod_kills.stop();
        let (reason, wait) = match &end {
            End::Completed => (pb::RevertReason::Deadline, REVERT_WAIT),
            End::Abort {
                trigger: Trigger::Shutdown,
                ..
            } => (pb::RevertReason::Shutdown, SHUTDOWN_REVERT_WAIT),
            End::Abort { .. } => (pb::RevertReason::Abort, REVERT_WAIT),
        };
        let now = now_ms();
        let (phase, verdict) = match end {
            End::Completed => {
                let ran = Duration::from_millis((now - self.rec.started_unix_ms).max(0) as u64);
                let verdict = if ran + Duration::from_secs(1) < self.spec.duration {
                    // Control::Complete: a workflow's instant step whose kills are done.
                    format!(
                        "completed after {}: every fault is instant and was carried out",
                        humantime::format_duration(Duration::from_millis(
                            ran.as_millis() as u64 / 100 * 100
                        ))
                    )
                } else {
                    format!(
                        "completed: ran for {}",
                        humantime::format_duration(self.spec.duration)
                    )
                };
                (Phase::Completed, verdict)
            }
            End::Abort {
                trigger,
                by,
                reason,
                at,
                breach,
            } => {
                let phase = trigger.phase();
                let breach = breach.unwrap_or(Breach {
                    guard: String::new(),
                    guard_type: String::new(),
                    value: None,
                });
                self.rec.abort = Some(AbortRecord {
                    trigger: trigger.as_str().to_string(),
                    by,
                    reason: reason.clone(),
                    guard: breach.guard,
                    guard_type: breach.guard_type,
                    observed_value: breach.value,
                    triggered_unix_ms: at,
                    ..Default::default()
                });
                (phase, format!("{phase}: {reason}"))
            }
        };
        self.rec.phase = phase;
        self.rec.ended_unix_ms = now;
        self.rec.verdict_reason = verdict.clone();
        self.ending = Some(Ending {
            wait_until: Instant::now() + wait,
            reason,
        });
        // Durable before anything is reverted: a crash from here on never resumes this run.
        self.persist_durable().await;
        self.state.vouches.withdraw_experiment(&self.rec.name);
        let sent = self.send_reverts(reason).await;
        let sent_at = now_ms();
        if let Some(a) = self.rec.abort.as_mut() {
            a.sent_unix_ms = sent_at;
        }
        self.rec.log(
            sent_at,
            format!("{verdict}; RevertFault sent for {sent} fault(s)"),
        );
        self.dirty = true;
        self.state.experiments.set_phase(&self.rec.name, phase);
        events::phase_changed(&self.rec.name, phase, &verdict);
        // Queued for delivery elsewhere; never waits (RevertFault is already out).
        self.notify_end();
        self.publish(verdict, false);
    }

    pub(super) async fn send_reverts(&mut self, reason: pb::RevertReason) -> usize {
        let unsettled: Vec<usize> = (0..self.rec.targets.len())
            .filter(|i| !self.rec.targets[*i].settled())
            .collect();
        self.revert_targets(&unsettled, reason).await
    }

    /// RevertFault for the targets `idx`, every agent in parallel; returns how many went out.
    pub(super) async fn revert_targets(
        &mut self,
        idx: &[usize],
        reason: pb::RevertReason,
    ) -> usize {
        let mut batches: BTreeMap<String, Vec<CoordMsg>> = BTreeMap::new();
        for t in idx.iter().map(|i| &self.rec.targets[*i]) {
            // Withdrawn first: the next renewal carries the revert even if this order is lost.
            self.state.vouches.withdraw(&t.agent, &t.fault_id);
            batches
                .entry(t.agent.clone())
                .or_default()
                .push(CoordMsg::Revert(pb::RevertFault {
                    fault_id: t.fault_id.clone(),
                    reason: reason as i32,
                }));
        }
        let results = dispatch::send_all(&self.state, batches).await;
        let at = now_ms();
        // The targets' revert-sent times and errors change: stored within a tick.
        if !idx.is_empty() {
            self.dirty = true;
        }
        let mut sent = 0;
        for i in idx {
            let t = &mut self.rec.targets[*i];
            match results.get(&t.agent) {
                Some(Ok(())) => {
                    t.revert_sent_unix_ms = at;
                    sent += 1;
                }
                Some(Err(e)) => {
                    t.error = format!(
                        "could not send RevertFault ({e}); it is sent again, and the agent's next lease renewal no longer vouches for the fault"
                    )
                }
                None => {}
            }
        }
        sent
    }

    /// Records a failed target and applies `onTargetFailure`.
    pub(super) async fn target_failed(&mut self, i: usize, error: String, trigger: Trigger) {
        let now = now_ms();
        let t = &mut self.rec.targets[i];
        t.state = TargetState::Failed;
        t.error = error.clone();
        // A failed target holds nothing we want: whatever half-arrived is reverted by the
        // agent at its next renewal.
        self.state.vouches.withdraw(&t.agent, &t.fault_id);
        let (agent, id, fault) = (t.agent.clone(), t.fault_id.clone(), t.fault.clone());
        events::target_failed(&self.rec.name, &agent, &id, &error);
        self.rec.log(
            now,
            format!("fault {id} ({fault}) failed on {agent}: {error}"),
        );
        self.dirty = true;
        if self.ending.is_some() {
            return;
        }
        let all_failed = self
            .rec
            .targets
            .iter()
            .all(|t| t.state == TargetState::Failed);
        let reason = match self.spec.on_target_failure {
            OnTargetFailure::Abort => {
                format!("fault {id} ({fault}) failed on {agent}: {error} (onTargetFailure: abort)")
            }
            OnTargetFailure::Continue if all_failed => {
                format!("every target failed; the last: {agent}: {error}")
            }
            OnTargetFailure::Continue => return,
        };
        self.end(End::Abort {
            trigger,
            by: agent,
            reason,
            at: now,
            breach: None,
        })
        .await;
    }

    /// The coordinator is going away without a graceful abort: record it as interrupted.
    pub(super) async fn interrupt(&mut self) {
        let now = now_ms();
        let why = "interrupted: the coordinator shut down while the experiment ran; nothing vouches for its faults, so its agents revert them at their next Hello or when their lease lapses";
        self.guard_stop.cancel();
        self.state.vouches.withdraw_experiment(&self.rec.name);
        self.rec.phase = Phase::Interrupted;
        self.rec.ended_unix_ms = now;
        self.rec.verdict_reason = why.into();
        if let Some(h) = self.rec.hypothesis.as_mut() {
            h.fail("the coordinator shut down while the experiment ran");
        }
        self.rec.log(now, why);
        self.state
            .experiments
            .set_phase(&self.rec.name, Phase::Interrupted);
        events::phase_changed(&self.rec.name, Phase::Interrupted, why);
        self.persist_durable().await;
        self.publish(why, true);
        self.state.experiments.remove_live(&self.rec.name);
    }

    /// The run is over: abort latency, unacknowledged reverts, the final record.
    pub(super) async fn finish(mut self) {
        let now = now_ms();
        self.state.vouches.withdraw_experiment(&self.rec.name);
        let unsettled = self.rec.targets.iter().filter(|t| !t.settled()).count();
        let last_ack = self
            .rec
            .targets
            .iter()
            .map(|t| t.reverted_unix_ms)
            .max()
            .unwrap_or(0);
        for t in self.rec.targets.iter_mut().filter(|t| !t.settled()) {
            if t.error.is_empty() {
                t.error = format!(
                    "RevertFault not acknowledged within {} s; nothing vouches for the fault any more, so a connected agent reverts it at its next lease renewal and a disconnected one when its lease lapses",
                    REVERT_WAIT.as_secs()
                );
            }
        }
        if let Some(a) = self.rec.abort.as_mut() {
            a.last_revert_ack_unix_ms = last_ack;
            a.unacknowledged = unsettled as u32;
            if unsettled == 0 && last_ack > 0 {
                let latency = u64::try_from(last_ack - a.triggered_unix_ms).unwrap_or(0);
                a.latency_ms = Some(latency);
                events::abort_acknowledged(
                    &self.rec.name,
                    &a.trigger,
                    Duration::from_millis(latency),
                );
            } else if unsettled > 0 {
                let waited = u64::try_from(now - a.triggered_unix_ms).unwrap_or(0);
                events::abort_unacknowledged(
                    &self.rec.name,
                    &a.trigger,
                    unsettled,
                    Duration::from_millis(waited),
                );
            }
        }
        let reverted = self
            .rec
            .targets
            .iter()
            .filter(|t| t.reverted_unix_ms > 0)
            .count();
        let failed = self
            .rec
            .targets
            .iter()
            .filter(|t| t.state == TargetState::Failed)
            .count();
        let mut summary = format!("{reverted} of {} fault(s) reverted", self.rec.targets.len());
        if failed > 0 {
            summary.push_str(&format!(", {failed} failed"));
        }
        if unsettled > 0 {
            summary.push_str(&format!(", {unsettled} revert(s) not acknowledged"));
        }
        if self.rec.phase == Phase::Completed {
            self.rec.verdict_reason = format!("{}; {summary}", self.rec.verdict_reason);
        }
        if let Some(h) = &self.rec.hypothesis {
            self.rec.verdict_reason = format!(
                "{}; steady-state hypothesis {}",
                self.rec.verdict_reason,
                h.verdict.as_str()
            );
        }
        self.conclude_impact();
        if let Some(ms) = self.rec.abort.as_ref().and_then(|a| a.latency_ms) {
            summary.push_str(&format!("; abort latency {ms} ms"));
        }
        self.rec.log(now, format!("finished: {summary}"));
        self.persist_durable().await;
        self.notify_finish();
        self.publish(format!("finished: {summary}"), true);
        self.state.experiments.remove_live(&self.rec.name);
    }
}
