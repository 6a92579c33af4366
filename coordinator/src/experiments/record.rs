//! The durable record of one experiment (stored as JSON in sled, and served as the JSON
//! report): document, plan, per-target results, guard timeline, abort, telemetry summary, log.

use std::collections::{BTreeMap, VecDeque};

use faultline_core::experiment::impact::Impact;
use faultline_core::experiment::steady::Hypothesis;
use faultline_core::experiment::Phase;
use serde::{Deserialize, Serialize};

pub use super::kill_record::PodKillRecord;
pub use super::plan_record::{ExcludedAgent, PlanRecord, PlannedAgent, PodRef};

/// Guard samples kept per experiment (oldest dropped first).
pub const MAX_GUARD_SAMPLES: usize = 3600;
/// Log entries kept per experiment (oldest dropped first).
pub const MAX_LOG: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    /// The document as submitted.
    pub document: String,
    pub created_by: String,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub started_unix_ms: i64,
    #[serde(default)]
    pub ended_unix_ms: i64,
    pub duration_ms: u64,
    pub guard_interval_ms: u64,
    pub on_target_failure: String,
    #[serde(default)]
    pub verdict_reason: String,
    pub plan: PlanRecord,
    #[serde(default)]
    pub guards: Vec<GuardInfo>,
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    #[serde(default)]
    pub guard_timeline: VecDeque<Sample>,
    #[serde(default)]
    pub abort: Option<AbortRecord>,
    /// Per agent, sampled from its telemetry while running.
    #[serde(default)]
    pub telemetry: BTreeMap<String, TelemetrySummary>,
    #[serde(default)]
    pub log: VecDeque<LogEntry>,
    /// Times the coordinator was down while the experiment ran, and resumed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
    /// The steady-state hypothesis (`spec.steadyState`) and its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<Hypothesis>,
    /// Per guard and check, written when the run is over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impact: Vec<Impact>,
    /// Rule-based sentences from the impact and the hypothesis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// pod-kill (issue 13): every pod deleted, with its replacement's time to Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_kills: Vec<PodKillRecord>,
}

/// The coordinator was down from `from_unix_ms` (its last heartbeat in the store) to
/// `to_unix_ms` (its restart), and resumed the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub guard_type: String,
    pub description: String,
    pub on_error: String,
}

/// Where one fault on one target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// ApplyFault not sent or not acknowledged yet.
    Pending,
    Applied,
    Reverted,
    Failed,
}

/// One fault on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub agent: String,
    pub fault_index: usize,
    pub fault_id: String,
    /// `cpu 50% x 1`.
    pub fault: String,
    pub state: TargetState,
    #[serde(default)]
    pub apply_sent_unix_ms: i64,
    #[serde(default)]
    pub applied_unix_ms: i64,
    #[serde(default)]
    pub revert_sent_unix_ms: i64,
    #[serde(default)]
    pub reverted_unix_ms: i64,
    /// `deadline`, `lease`, `abort`, `shutdown`, `recovery`.
    #[serde(default)]
    pub revert_reason: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// For pod targets: the pod or container this fault is aimed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

impl TargetRecord {
    /// Nothing more is expected from the agent for this fault.
    pub fn settled(&self) -> bool {
        self.reverted_unix_ms > 0 || self.state == TargetState::Failed
    }
}

/// One guard evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub guard: String,
    pub at_unix_ms: i64,
    /// None: no data or not evaluable.
    pub value: Option<f64>,
    /// `ok`, `no_data`, `breached`, `error`.
    pub outcome: String,
    pub breached: bool,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub detail: String,
    /// Within its threshold (or the expected status); `None` when not judged (an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// How an experiment was aborted and how long the revert took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbortRecord {
    /// `api`, `guard`, `halt`, `target-failure`, `agent-lost`, `shutdown`.
    pub trigger: String,
    pub by: String,
    pub reason: String,
    #[serde(default)]
    pub guard: String,
    #[serde(default)]
    pub guard_type: String,
    #[serde(default)]
    pub observed_value: Option<f64>,
    pub triggered_unix_ms: i64,
    #[serde(default)]
    pub sent_unix_ms: i64,
    #[serde(default)]
    pub last_revert_ack_unix_ms: i64,
    /// Trigger -> last revert acknowledged; None while some are outstanding.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub unacknowledged: u32,
}

/// min / avg / max of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub samples: u32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

impl Stat {
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.samples == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.samples += 1;
        self.sum += v;
    }

    pub fn avg(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.sum / f64::from(self.samples)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    pub cpu_busy_ratio: Stat,
    pub memory_used_bytes: Stat,
    pub memory_used_ratio: Stat,
    /// The agent's timestamp of the last sample taken (to count each sample once).
    #[serde(default)]
    pub last_sample_unix_ms: i64,
}

impl TelemetrySummary {
    /// True when the sample stamped `ts` (the agent's clock) was counted already; remembers
    /// it otherwise.
    pub fn samples_seen(&mut self, ts: i64) -> bool {
        if self.cpu_busy_ratio.samples > 0 && ts == self.last_sample_unix_ms {
            return true;
        }
        self.last_sample_unix_ms = ts;
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at_unix_ms: i64,
    pub message: String,
}

impl ExperimentRecord {
    /// Appends to the log, dropping the oldest entries beyond [`MAX_LOG`].
    pub fn log(&mut self, at_unix_ms: i64, message: impl Into<String>) {
        self.log.push_back(LogEntry {
            at_unix_ms,
            message: message.into(),
        });
        while self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
    }

    /// Appends a guard sample, dropping the oldest beyond [`MAX_GUARD_SAMPLES`].
    pub fn sample(&mut self, s: Sample) {
        self.guard_timeline.push_back(s);
        while self.guard_timeline.len() > MAX_GUARD_SAMPLES {
            self.guard_timeline.pop_front();
        }
    }

    /// UIDs of the pods this experiment targets, sorted, without repeats.
    pub fn pod_uids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .plan
            .selected
            .iter()
            .filter_map(|p| p.pod.as_ref().map(|p| p.uid.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The agents this experiment targets (for pods: their nodes), sorted, without repeats.
    pub fn agents(&self) -> Vec<String> {
        let mut v: Vec<String> = self.plan.selected.iter().map(|p| p.agent.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every fault reverted or failed: nothing more is expected from the agents.
    pub fn settled(&self) -> bool {
        self.targets.iter().all(TargetRecord::settled)
    }

    /// The latest sample of each guard, in guard order.
    pub fn latest_samples(&self) -> Vec<Sample> {
        self.guards
            .iter()
            .filter_map(|g| {
                self.guard_timeline
                    .iter()
                    .rev()
                    .find(|s| s.guard == g.name)
                    .cloned()
            })
            .collect()
    }

    /// A copy for streaming and listing: the timeline cut to each guard's latest sample plus
    /// every breach, the log to its last `log_entries` entries.
    pub fn trimmed(&self, log_entries: usize) -> ExperimentRecord {
        let mut out = ExperimentRecord {
            guard_timeline: VecDeque::new(),
            log: self
                .log
                .iter()
                .skip(self.log.len().saturating_sub(log_entries))
                .cloned()
                .collect(),
            ..self.clone_without_bulk()
        };
        let latest = self.latest_samples();
        out.guard_timeline = self
            .guard_timeline
            .iter()
            .filter(|s| s.breached || latest.contains(s))
            .cloned()
            .collect();
        out
    }

    fn clone_without_bulk(&self) -> ExperimentRecord {
        ExperimentRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            phase: self.phase,
            document: self.document.clone(),
            created_by: self.created_by.clone(),
            created_unix_ms: self.created_unix_ms,
            started_unix_ms: self.started_unix_ms,
            ended_unix_ms: self.ended_unix_ms,
            duration_ms: self.duration_ms,
            guard_interval_ms: self.guard_interval_ms,
            on_target_failure: self.on_target_failure.clone(),
            verdict_reason: self.verdict_reason.clone(),
            plan: self.plan.clone(),
            guards: self.guards.clone(),
            targets: self.targets.clone(),
            guard_timeline: VecDeque::new(),
            abort: self.abort.clone(),
            telemetry: self.telemetry.clone(),
            log: VecDeque::new(),
            gaps: self.gaps.clone(),
            hypothesis: self.hypothesis.clone(),
            impact: self.impact.clone(),
            findings: self.findings.clone(),
            pod_kills: self.pod_kills.clone(),
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
