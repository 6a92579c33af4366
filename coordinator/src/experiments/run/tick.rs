//! The run's one-second tick: telemetry sampling for the summary, the ApplyFault answer
//! timeout, agents lost for longer than their lease, and persisting what changed.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_proto::pb;
use tokio::time::Instant;

use super::{Run, Trigger, APPLY_ACK_TIMEOUT, REVERT_RESEND_EVERY};
use crate::experiments::events;
use crate::experiments::record::TargetState;
use crate::state::now_ms;

impl Run {
    /// [`APPLY_ACK_TIMEOUT`], or the lease and a second more if that is longer.
    pub(super) fn apply_ack_timeout(&self) -> Duration {
        APPLY_ACK_TIMEOUT.max(self.state.lease + Duration::from_secs(1))
    }

    pub(super) async fn on_tick(&mut self) {
        self.sample_telemetry();
        if !self.dispatched
            && self.ending.is_none()
            && self.apply_queued_at.elapsed() >= self.apply_ack_timeout()
        {
            let late: Vec<usize> = (0..self.rec.targets.len())
                .filter(|i| self.rec.targets[*i].state == TargetState::Pending)
                .collect();
            // The fault may still arrive late: revert it to be sure (best effort, no wait).
            self.revert_targets(&late, pb::RevertReason::Abort).await;
            for i in late {
                let e = format!(
                    "no answer to ApplyFault within {} s",
                    self.apply_ack_timeout().as_secs()
                );
                self.target_failed(i, e, Trigger::TargetFailure).await;
            }
            self.check_dispatched();
        }
        self.check_lost().await;
        // A per-fault end whose RevertFault could not be sent is tried again.
        self.end_due_faults().await;
        self.check_returns().await;
        self.resend_reverts().await;
        if self.store_due() {
            self.persist();
            self.publish("running", false);
        }
    }

    /// While the run waits for revert acks: RevertFault again for every fault not acknowledged
    /// within [`REVERT_RESEND_EVERY`] (or whose order could not be sent).
    pub(super) async fn resend_reverts(&mut self) {
        let Some(reason) = self.ending.as_ref().map(|e| e.reason) else {
            return;
        };
        let now = now_ms();
        let every = REVERT_RESEND_EVERY.as_millis() as i64;
        let due: Vec<usize> = (0..self.rec.targets.len())
            .filter(|i| {
                let t = &self.rec.targets[*i];
                !t.settled() && now - t.revert_sent_unix_ms >= every
            })
            .collect();
        if due.is_empty() {
            return;
        }
        events::reverts_resent(&self.rec.name, due.len());
        self.revert_targets(&due, reason).await;
    }

    pub(super) fn sample_telemetry(&mut self) {
        for agent in self.rec.agents() {
            let Some(t) = self.state.registry.telemetry_of(&agent) else {
                continue;
            };
            let s = self.rec.telemetry.entry(agent).or_default();
            if s.samples_seen(t.timestamp_unix_ms) {
                continue;
            }
            s.cpu_busy_ratio.add(t.cpu_busy_ratio);
            s.memory_used_bytes.add(t.memory_used_bytes as f64);
            if t.memory_total_bytes > 0 {
                s.memory_used_ratio
                    .add(t.memory_used_bytes as f64 / t.memory_total_bytes as f64);
            }
            self.sampled();
        }
    }

    /// Agents gone for longer than their lease have reverted by themselves: they failed.
    pub(super) async fn check_lost(&mut self) {
        let lease = self.state.lease;
        let mut unsettled: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, t) in self.rec.targets.iter().enumerate() {
            if !t.settled() {
                unsettled.entry(t.agent.as_str()).or_default().push(i);
            }
        }
        let mut lost = Vec::new();
        for agent in self.rec.agents() {
            let waiting = unsettled.get(agent.as_str());
            if waiting.is_none() || self.state.registry.is_connected(&agent) {
                self.lost_since.remove(&agent);
                continue;
            }
            let since = *self
                .lost_since
                .entry(agent.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() > lease {
                lost.push((agent, waiting.cloned().unwrap_or_default()));
            }
        }
        for (agent, idx) in lost {
            self.lost_since.remove(&agent);
            let e = format!(
                "the agent was disconnected for longer than its lease ({}): its lease lapsed, so it reverted its faults",
                humantime::format_duration(lease)
            );
            for i in idx {
                self.target_failed(i, e.clone(), Trigger::AgentLost).await;
            }
        }
    }
}
