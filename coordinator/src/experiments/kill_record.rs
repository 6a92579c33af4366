//! What the pod-kills of an experiment did, as recorded (in the stored record and the JSON
//! report) and as the Markdown report shows it: per deleted pod its node, when, the answer of
//! the API server, when the pod object was gone, and which replacement became Ready when, so
//! the report shows the time to recover.

use serde::{Deserialize, Serialize};

use super::record::ExperimentRecord;

/// One pod deleted by a pod-kill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodKillRecord {
    /// Index of the pod-kill in `spec.faults`.
    pub fault_index: usize,
    /// 0: the planned pods at the start; 1, 2, ...: every `interval` after.
    pub round: u32,
    /// `namespace/name`.
    pub pod: String,
    pub uid: String,
    pub node: String,
    pub killed_unix_ms: i64,
    /// As sent; `None`: the pod's own.
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    /// `deleted` (accepted), `gone` (no longer there, or the name is another pod's now),
    /// `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Who replaces it (`ReplicaSet/checkout-7d4f9b6c5`); empty: nothing does (a bare pod),
    /// or unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub controller: String,
    /// When the watch saw the pod object removed.
    #[serde(default)]
    pub gone_unix_ms: i64,
    /// The replacement that became Ready first (`namespace/name`), its UID and node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replacement: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replacement_uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replacement_node: String,
    /// When the watch saw the replacement Ready (the coordinator's clock).
    #[serde(default)]
    pub ready_unix_ms: i64,
}

impl PodKillRecord {
    /// From the delete to the replacement Ready.
    pub fn recover_ms(&self) -> Option<i64> {
        (self.ready_unix_ms > 0).then(|| self.ready_unix_ms - self.killed_unix_ms)
    }

    /// Still waiting for a replacement to become Ready.
    pub fn awaiting_replacement(&self) -> bool {
        self.outcome == "deleted" && !self.controller.is_empty() && self.ready_unix_ms == 0
    }
}

fn secs(ms: i64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

/// The `## Pod kills` section of the Markdown report (nothing without pod kills).
pub fn markdown(o: &mut String, rec: &ExperimentRecord) {
    if rec.pod_kills.is_empty() {
        return;
    }
    let rel = |ms: i64| {
        if ms <= 0 {
            "-".to_string()
        } else {
            format!("+{}", secs(ms - rec.started_unix_ms))
        }
    };
    o.push_str("## Pod kills\n\n");
    o.push_str("| Round | Pod | Node | Killed | Grace | Outcome | Gone | Replacement | Ready | Time to recover |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for k in &rec.pod_kills {
        let grace = k
            .grace_period_seconds
            .map_or("pod's own".to_string(), |g| format!("{g}s"));
        let outcome = if k.error.is_empty() {
            k.outcome.clone()
        } else {
            format!("{}: {}", k.outcome, k.error.replace('|', "\\|"))
        };
        let replacement = if k.replacement.is_empty() {
            match (k.outcome.as_str(), k.controller.is_empty()) {
                ("deleted", true) => "none (no controller)".to_string(),
                ("deleted", false) => format!("not Ready yet ({})", k.controller),
                _ => "-".to_string(),
            }
        } else {
            format!("{} on {}", k.replacement, k.replacement_node)
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {grace} | {outcome} | {} | {replacement} | {} | {} |\n",
            k.round,
            k.pod,
            k.node,
            rel(k.killed_unix_ms),
            rel(k.gone_unix_ms),
            rel(k.ready_unix_ms),
            k.recover_ms().map_or("-".to_string(), secs),
        ));
    }
    let recovered: Vec<i64> = rec
        .pod_kills
        .iter()
        .filter_map(PodKillRecord::recover_ms)
        .collect();
    if !recovered.is_empty() {
        let max = recovered.iter().max().copied().unwrap_or(0);
        let avg = recovered.iter().sum::<i64>() / recovered.len() as i64;
        o.push_str(&format!(
            "\nTime to recover (delete to replacement Ready): {} of {} kill(s) recovered, average {}, longest {}.\n",
            recovered.len(),
            rec.pod_kills.len(),
            secs(avg),
            secs(max)
        ));
    }
    o.push('\n');
}
