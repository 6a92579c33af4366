//! The agent's observable events: each function here both logs and counts one event, so a log
//! line and its metric never drift apart.

use metrics::{counter, describe_counter, describe_gauge, gauge};

use crate::faults::{reason_label, RevertReason};

pub const SESSION_CONNECTED: &str = "faultline_agent_session_connected";
pub const RECONNECTS: &str = "faultline_agent_reconnects_total";
pub const TELEMETRY_SENT: &str = "faultline_agent_telemetry_sent_total";
pub const LEASE_RENEWALS: &str = "faultline_agent_lease_renewals_total";
pub const LEASE_LAPSES: &str = "faultline_agent_lease_lapses_total";
pub const REVERT_ALL: &str = "faultline_agent_revert_all_total";

const REASONS: [RevertReason; 4] = [
    RevertReason::Recovery,
    RevertReason::Lease,
    RevertReason::Shutdown,
    RevertReason::Abort,
];

/// Registers HELP text and zero values, so every series is visible from the first scrape.
pub fn describe() {
    describe_gauge!(
        SESSION_CONNECTED,
        "1 while the agent has a session with the coordinator (Welcome received), else 0."
    );
    describe_counter!(
        RECONNECTS,
        "Connection attempts to the coordinator after the first one (retries after a failed or ended session)."
    );
    describe_counter!(TELEMETRY_SENT, "Telemetry reports sent to the coordinator.");
    describe_counter!(
        LEASE_RENEWALS,
        "Lease renewals received from the coordinator."
    );
    describe_counter!(
        LEASE_LAPSES,
        "Times the session lease lapsed, each of which reverted every fault."
    );
    describe_counter!(
        REVERT_ALL,
        "Times every fault on this node was reverted, by reason (recovery at start-up, lease lapse, shutdown, abort from the coordinator)."
    );
    gauge!(SESSION_CONNECTED).set(0.0);
    for name in [RECONNECTS, TELEMETRY_SENT, LEASE_RENEWALS, LEASE_LAPSES] {
        counter!(name).absolute(0);
    }
    for reason in REASONS {
        counter!(REVERT_ALL, "reason" => reason_label(reason)).absolute(0);
    }
}

/// A session got its Welcome.
pub fn connected(url: &str, node: &str, session_id: &str, lease_ms: u64) {
    tracing::info!(
        lease_ms,
        "connected to {url} as {node} (session {session_id})"
    );
    gauge!(SESSION_CONNECTED).set(1.0);
}

/// A session that had its Welcome ended.
pub fn disconnected(reason: &str) {
    tracing::warn!("disconnected: {reason}");
    gauge!(SESSION_CONNECTED).set(0.0);
}

/// How loudly a connection failure is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLevel {
    /// The coordinator refused this agent (certificate, identity): an operator must act.
    Refused,
    /// A new or different failure.
    New,
    /// The same failure again, still going on after many attempts.
    Repeated { attempts: u64 },
    /// The same failure again; only in debug logs.
    Quiet,
}

/// A connection attempt failed (before or while waiting for Welcome).
pub fn connect_failed(url: &str, reason: &str, level: FailureLevel) {
    match level {
        FailureLevel::Refused => {
            tracing::error!("coordinator {url} refused this agent: {reason}")
        }
        FailureLevel::New => tracing::warn!("cannot connect to {url}: {reason}; retrying"),
        FailureLevel::Repeated { attempts } => {
            tracing::warn!("still cannot connect to {url} after {attempts} attempts: {reason}")
        }
        FailureLevel::Quiet => tracing::debug!("connect attempt failed: {reason}"),
    }
}

/// A new connection attempt after the first.
pub fn reconnecting(delay: std::time::Duration) {
    tracing::debug!(?delay, "reconnecting after {delay:?}");
    counter!(RECONNECTS).increment(1);
}

pub fn telemetry_sent() {
    counter!(TELEMETRY_SENT).increment(1);
}

/// Telemetry could not be sampled (the report is skipped).
pub fn telemetry_failed(error: &str, first: bool) {
    if first {
        tracing::warn!("cannot sample telemetry: {error}");
    } else {
        tracing::debug!("cannot sample telemetry: {error}");
    }
}

pub fn lease_renewed(sequence: u64, lease_ms: u64) {
    tracing::trace!(sequence, lease_ms, "lease renewed");
    counter!(LEASE_RENEWALS).increment(1);
}

/// The lease lapsed; every fault is about to be reverted.
pub fn lease_lapsed(lease_ms: u64) {
    tracing::error!("lease lapsed: reverting all faults (no renewal within {lease_ms} ms)");
    counter!(LEASE_LAPSES).increment(1);
    gauge!(SESSION_CONNECTED).set(0.0);
}

/// `revert_all(reason)` finished with these statuses.
pub fn reverted_all(reason: RevertReason, statuses: &[faultline_proto::pb::FaultStatus]) {
    let label = reason_label(reason);
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| s.state == faultline_proto::pb::FaultState::Failed as i32)
        .map(|s| format!("{}: {}", s.fault_id, s.error))
        .collect();
    if failed.is_empty() {
        tracing::info!(
            "reverted all faults (reason {label}): {} reverted",
            statuses.len()
        );
    } else {
        tracing::error!(
            "reverted all faults (reason {label}) with {} failures: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    counter!(REVERT_ALL, "reason" => label).increment(1);
}

/// A fault operation ordered by the coordinator finished.
pub fn fault_status(op: &str, s: &faultline_proto::pb::FaultStatus) {
    let state = faultline_proto::pb::FaultState::try_from(s.state)
        .map(|st| st.as_str_name())
        .unwrap_or("FAULT_STATE_UNKNOWN");
    if s.error.is_empty() {
        tracing::info!(experiment_id = %s.experiment_id, "{op} {}: {state}", s.fault_id);
    } else {
        tracing::warn!(experiment_id = %s.experiment_id, "{op} {}: {state}: {}", s.fault_id, s.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn every_series_has_help_and_a_value_from_the_start() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            reverted_all(RevertReason::Lease, &[]);
            lease_lapsed(5000);
        });
        let text = handle.render();
        for name in [
            SESSION_CONNECTED,
            RECONNECTS,
            TELEMETRY_SENT,
            LEASE_RENEWALS,
            LEASE_LAPSES,
            REVERT_ALL,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        assert!(
            text.contains("faultline_agent_session_connected 0"),
            "{text}"
        );
        assert!(
            text.contains("faultline_agent_lease_lapses_total 1"),
            "{text}"
        );
        assert!(
            text.contains("faultline_agent_revert_all_total{reason=\"lease\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("faultline_agent_revert_all_total{reason=\"shutdown\"} 0"),
            "{text}"
        );
    }
}
