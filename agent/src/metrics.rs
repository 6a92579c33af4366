//! The agent's observable events: each function here both logs and counts one event, so a log
//! line and its metric never drift apart.

use std::time::Duration;

use faultline_core::fault::{FaultKind, FaultSpec};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::faults::{reason_label, RevertReason};

pub const SESSION_CONNECTED: &str = "faultline_agent_session_connected";
pub const RECONNECTS: &str = "faultline_agent_reconnects_total";
pub const TELEMETRY_SENT: &str = "faultline_agent_telemetry_sent_total";
pub const LEASE_RENEWALS: &str = "faultline_agent_lease_renewals_total";
pub const LEASE_LAPSES: &str = "faultline_agent_lease_lapses_total";
pub const UNVOUCHED: &str = "faultline_agent_faults_unvouched_total";
pub const VOUCH_EXPIRED: &str = "faultline_agent_fault_vouch_expired_total";
pub const REVERT_ALL: &str = "faultline_agent_revert_all_total";
pub const FAULTS_ACTIVE: &str = "faultline_agent_faults_active";
pub const FAULTS_OVERDUE: &str = "faultline_agent_faults_overdue";
pub const INJECTIONS: &str = "faultline_agent_fault_injections_total";
pub const REVERTS: &str = "faultline_agent_fault_reverts_total";
pub const REVERT_FAILURES: &str = "faultline_agent_fault_revert_failures_total";
pub const INJECT_SECONDS: &str = "faultline_agent_fault_inject_seconds";
pub const REVERT_SECONDS: &str = "faultline_agent_fault_revert_seconds";
pub const SWEPT: &str = "faultline_agent_sweep_artifacts_total";

/// Histogram buckets for every `*_seconds` metric: 1 ms .. 10 s.
pub const SECONDS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const REASONS: [RevertReason; 5] = [
    RevertReason::Recovery,
    RevertReason::Lease,
    RevertReason::Shutdown,
    RevertReason::Abort,
    RevertReason::Unvouched,
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
        UNVOUCHED,
        "Faults reverted because the coordinator stopped vouching for them (a Welcome or renewal did not name them)."
    );
    describe_counter!(
        VOUCH_EXPIRED,
        "Faults reverted because no renewal vouched for them for a whole lease while the session stayed up."
    );
    describe_counter!(
        REVERT_ALL,
        "Times every fault on this node was reverted, by reason (recovery at start-up, lease lapse, shutdown, abort from the coordinator)."
    );
    describe_gauge!(
        FAULTS_ACTIVE,
        "Faults in effect on this node now, by kind (applied, or reverting after a failed revert)."
    );
    describe_gauge!(
        FAULTS_OVERDUE,
        "Faults this node still holds that should be gone (past their end, or their revert failed and is being retried), by kind; updated every few seconds."
    );
    describe_counter!(
        INJECTIONS,
        "Fault injections by kind and outcome: applied, failed (the system refused or the driver failed; what half-happened was reverted) or refused (bad spec or a local limit; nothing changed)."
    );
    describe_counter!(
        REVERTS,
        "Faults reverted by kind and reason (deadline, lease, abort, shutdown, recovery, unvouched, failed = the fault stopped working)."
    );
    describe_counter!(
        REVERT_FAILURES,
        "Reverts that failed, by kind; the fault stays journaled and the revert is retried."
    );
    describe_histogram!(
        INJECT_SECONDS,
        metrics::Unit::Seconds,
        "Time from receiving a fault to having it applied (limits, plan, journal, apply)."
    );
    describe_histogram!(
        REVERT_SECONDS,
        metrics::Unit::Seconds,
        "Time the driver took to revert a fault."
    );
    describe_counter!(
        SWEPT,
        "Orphaned artifacts (workers, guards, files) that the start-up sweep removed."
    );
    for kind in FaultKind::ALL {
        gauge!(FAULTS_ACTIVE, "kind" => kind.as_str()).set(0.0);
        gauge!(FAULTS_OVERDUE, "kind" => kind.as_str()).set(0.0);
    }
    gauge!(SESSION_CONNECTED).set(0.0);
    for name in [
        RECONNECTS,
        TELEMETRY_SENT,
        LEASE_RENEWALS,
        LEASE_LAPSES,
        UNVOUCHED,
        VOUCH_EXPIRED,
        SWEPT,
    ] {
        counter!(name).absolute(0);
    }
    for reason in REASONS {
        counter!(REVERT_ALL, "reason" => reason_label(reason)).absolute(0);
    }
    describe_kills();
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

/// The coordinator no longer vouches for a fault this agent holds (a renewal or Welcome did
/// not name it, or an apply finished after it was withdrawn): it is reverted now.
pub fn unvouched(fault_id: &str) {
    tracing::warn!(
        fault_id,
        "fault {fault_id}: the coordinator no longer vouches for it; reverting it"
    );
    counter!(UNVOUCHED).increment(1);
}

/// A held fault's vouch ran out (no renewal named it for a whole lease): it is reverted now.
pub fn vouch_expired(fault_id: &str, lease_ms: u64) {
    tracing::warn!(
        fault_id,
        "fault {fault_id}: no renewal vouched for it within the lease ({lease_ms} ms); reverting it"
    );
    counter!(VOUCH_EXPIRED).increment(1);
}

/// The lease lapsed; every fault is about to be reverted.
pub fn lease_lapsed(lease_ms: u64) {
    tracing::error!("lease lapsed: reverting all faults (no renewal within {lease_ms} ms)");
    counter!(LEASE_LAPSES).increment(1);
    gauge!(SESSION_CONNECTED).set(0.0);
}

/// SIGTERM's revert-all did not finish within its bound: these faults are left (journaled; the
/// next start reverts them).
pub fn shutdown_revert_overran(bound: std::time::Duration, left: &[String]) {
    tracing::error!(
        "shutdown: reverting every fault took longer than {bound:?}; exiting with {} fault(s) not reverted (they stay in the journal and the next start reverts them): {}",
        left.len(),
        left.join(", ")
    );
    counter!(REVERT_ALL, "reason" => "shutdown-overran").increment(1);
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

/// A fault was refused before anything changed (bad spec, local limit, driver refusal).
pub fn fault_refused(kind: &str, fault_id: &str, why: &str) {
    tracing::warn!("refused fault {fault_id} ({kind}): {why}");
    counter!(INJECTIONS, "kind" => kind.to_string(), "outcome" => "refused").increment(1);
}

/// Applying a fault failed; what half-happened was reverted (or is being retried).
pub fn fault_apply_failed(kind: &str, fault_id: &str, error: &str) {
    tracing::error!("could not apply fault {fault_id} ({kind}): {error}");
    counter!(INJECTIONS, "kind" => kind.to_string(), "outcome" => "failed").increment(1);
}

/// A fault is applied and journaled.
pub fn fault_applied(kind: &str, fault_id: &str, spec: &FaultSpec, took: Duration) {
    tracing::info!(
        "applied fault {fault_id} ({}) in {} ms",
        spec.describe(),
        took.as_millis()
    );
    counter!(INJECTIONS, "kind" => kind.to_string(), "outcome" => "applied").increment(1);
    histogram!(INJECT_SECONDS).record(took.as_secs_f64());
}

/// A fault was reverted and removed from the journal. `reason` is a reason label.
pub fn fault_reverted(
    kind: &str,
    fault_id: &str,
    reason: &str,
    already_gone: bool,
    took: Duration,
) {
    let gone = if already_gone {
        " (nothing was left)"
    } else {
        ""
    };
    if reason == "recovery" {
        tracing::info!("recovery: reverted fault {fault_id} ({kind}){gone}");
    } else {
        tracing::info!(
            "reverted fault {fault_id} ({kind}, reason {reason}) in {} ms{gone}",
            took.as_millis()
        );
    }
    counter!(REVERTS, "kind" => kind.to_string(), "reason" => reason.to_string()).increment(1);
    histogram!(REVERT_SECONDS).record(took.as_secs_f64());
}

/// A revert failed; the fault stays journaled and is retried.
pub fn fault_revert_failed(kind: &str, fault_id: &str, error: &str) {
    tracing::error!(
        "could not revert fault {fault_id} ({kind}): {error}; it stays journaled and is retried"
    );
    counter!(REVERT_FAILURES, "kind" => kind.to_string()).increment(1);
}

/// The number of faults of `kind` in effect changed.
/// Faults of `kind` held past their end or with a failed revert.
pub fn faults_overdue(kind: &str, n: usize) {
    gauge!(FAULTS_OVERDUE, "kind" => kind.to_string()).set(n as f64);
}

pub fn faults_active(kind: &str, n: usize) {
    gauge!(FAULTS_ACTIVE, "kind" => kind.to_string()).set(n as f64);
}

/// A fault stopped working before its end (e.g. its worker was OOM-killed).
pub fn fault_health_failed(kind: &str, fault_id: &str, error: &str) {
    tracing::error!("fault {fault_id} ({kind}) failed: {error}; reverting what is left");
}

/// Recovery met something it could not clean up completely.
pub fn recovery_problem(line: &str) {
    tracing::error!("{line}");
}

/// The sweep removed an orphaned artifact.
pub fn swept(line: &str) {
    tracing::warn!("sweep: {line}");
    counter!(SWEPT).increment(1);
}

// Kill faults (issue 13).
pub const CONTAINER_KILLS: &str = "faultline_agent_container_kills_total";
pub const CONTAINER_KILL_SECONDS: &str = "faultline_agent_container_kill_seconds";

/// Registers the container-kill series (called from [`describe`]).
fn describe_kills() {
    describe_counter!(
        CONTAINER_KILLS,
        "Container init processes SIGKILLed by container-kill faults."
    );
    describe_histogram!(
        CONTAINER_KILL_SECONDS,
        "Time from a container-kill's SIGKILL until the container's init process was gone."
    );
    counter!(CONTAINER_KILLS).absolute(0);
}

/// A container-kill sent SIGKILL to a container's init process.
pub fn container_killed(container: &str, id: &str, pid: u32, gone_after_us: Option<u64>) {
    let short: String = id.chars().take(12).collect();
    match gone_after_us {
        Some(us) => {
            tracing::info!("container-kill: SIGKILL to pid {pid} of container {container} ({short}): gone after {us} us");
            histogram!(CONTAINER_KILL_SECONDS).record(us as f64 / 1e6);
        }
        None => tracing::warn!(
            "container-kill: SIGKILL to pid {pid} of container {container} ({short}): still there after 2 s"
        ),
    }
    counter!(CONTAINER_KILLS).increment(1);
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

    #[test]
    fn fault_events_count_by_kind_outcome_and_reason_with_histograms() {
        use metrics_exporter_prometheus::Matcher;
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let spec = faultline_core::fault::doc::parse_fault("{kind: cpu, load: 50}").expect("cpu");
        metrics::with_local_recorder(&recorder, || {
            describe();
            fault_applied("cpu", "f-1", &spec, Duration::from_millis(12));
            faults_active("cpu", 1);
            fault_refused("memory", "f-2", "limit");
            fault_apply_failed("io", "f-3", "disk full");
            fault_reverted("cpu", "f-1", "deadline", false, Duration::from_millis(3));
            fault_revert_failed("process", "f-4", "EPERM");
            swept("killed orphan cpu worker pid 1234 (fault f-9)");
        });
        let text = handle.render();
        for want in [
            "faultline_agent_faults_active{kind=\"cpu\"} 1",
            "faultline_agent_faults_active{kind=\"network\"} 0",
            "faultline_agent_fault_injections_total{kind=\"cpu\",outcome=\"applied\"} 1",
            "faultline_agent_fault_injections_total{kind=\"memory\",outcome=\"refused\"} 1",
            "faultline_agent_fault_injections_total{kind=\"io\",outcome=\"failed\"} 1",
            "faultline_agent_fault_reverts_total{kind=\"cpu\",reason=\"deadline\"} 1",
            "faultline_agent_fault_revert_failures_total{kind=\"process\"} 1",
            "faultline_agent_sweep_artifacts_total 1",
            "# TYPE faultline_agent_fault_inject_seconds histogram",
            "faultline_agent_fault_inject_seconds_bucket{le=\"0.025\"} 1",
            "faultline_agent_fault_inject_seconds_bucket{le=\"0.01\"} 0",
            "faultline_agent_fault_revert_seconds_bucket{le=\"0.005\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }
}
