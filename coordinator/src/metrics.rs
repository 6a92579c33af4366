//! The coordinator's observable events: each function here is the one place that both logs an
//! event and counts it in the `faultline_coordinator_*` Prometheus metrics.

use std::time::Duration;

use faultline_identity::tls::{HandshakeFailure, HandshakeObserver, HandshakeRefusal};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const AGENTS_CONNECTED: &str = "faultline_coordinator_agents_connected";
pub const ENROLLMENTS: &str = "faultline_coordinator_enrollments_total";
pub const CERTIFICATES_ISSUED: &str = "faultline_coordinator_certificates_issued_total";
pub const SESSIONS_OPENED: &str = "faultline_coordinator_sessions_opened_total";
pub const SESSIONS_CLOSED: &str = "faultline_coordinator_sessions_closed_total";
pub const LEASE_RENEWALS: &str = "faultline_coordinator_lease_renewals_total";
pub const AUTH_REFUSALS: &str = "faultline_coordinator_auth_refusals_total";
pub const HANDSHAKE_FAILURES: &str = "faultline_coordinator_tls_handshake_failures_total";
pub const HANDSHAKES_IN_FLIGHT: &str = "faultline_coordinator_tls_handshakes_in_flight";
pub const HALTED: &str = "faultline_coordinator_halted";
pub const AUDIT_ENTRIES: &str = "faultline_coordinator_audit_entries_total";
pub const UNVOUCHED_ON_HELLO: &str = "faultline_coordinator_unvouched_faults_total";
pub const AUDIT_FAILURES: &str = "faultline_coordinator_audit_failures_total";
pub const STORE_WRITE_FAILURES: &str = "faultline_coordinator_store_write_failures_total";
pub const STORE_COMMIT_SECONDS: &str = "faultline_coordinator_store_commit_seconds";
pub const STORE_PRUNED: &str = "faultline_coordinator_store_pruned_total";

/// Why a session stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The agent closed its stream or the connection broke.
    Disconnect,
    /// Nothing arrived from the agent for a whole lease.
    Silent,
    /// A newer session for the same node took over.
    Replaced,
    /// The coordinator is shutting down.
    Shutdown,
    /// Ended before Welcome: no valid Hello, or a Hello for another node.
    Refused,
    /// The node was revoked (`Fleet.RevokeAgent`).
    Revoked,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Disconnect,
        CloseReason::Silent,
        CloseReason::Replaced,
        CloseReason::Shutdown,
        CloseReason::Refused,
        CloseReason::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Disconnect => "disconnect",
            CloseReason::Silent => "silent",
            CloseReason::Replaced => "replaced",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Refused => "refused",
            CloseReason::Revoked => "revoked",
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No client certificate in the TLS handshake.
    NoCertificate,
    /// Unknown CA, expired, not yet valid, not for client authentication (in the handshake).
    CertificateRejected,
    /// A valid certificate without a Faultline identity (in the handshake).
    NoIdentity,
    /// The caller's role may not call the method.
    Role,
    /// An agent said Hello for a node that is not its own.
    NodeName,
    /// A revoked certificate (in the handshake).
    Revoked,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::NoCertificate,
        RefusalReason::CertificateRejected,
        RefusalReason::NoIdentity,
        RefusalReason::Role,
        RefusalReason::NodeName,
        RefusalReason::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoCertificate => "no_certificate",
            RefusalReason::CertificateRejected => "certificate_rejected",
            RefusalReason::NoIdentity => "no_identity",
            RefusalReason::Role => "role",
            RefusalReason::NodeName => "node_name",
            RefusalReason::Revoked => "revoked",
        }
    }
}

/// Why a TLS handshake failed for a reason other than the client's credentials (those are
/// [`RefusalReason`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailureReason {
    /// Not finished within `--handshake-timeout`.
    Timeout,
    /// Not TLS, an old protocol version, the client's own alert, closed mid-handshake.
    Error,
}

impl HandshakeFailureReason {
    pub const ALL: [HandshakeFailureReason; 2] = [
        HandshakeFailureReason::Timeout,
        HandshakeFailureReason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailureReason::Timeout => "timeout",
            HandshakeFailureReason::Error => "error",
        }
    }
}

/// Registers HELP text and starts every series at zero, so `/metrics` shows all of them from
/// the first scrape.
pub fn describe() {
    describe_gauge!(AGENTS_CONNECTED, "Agents with a live session.");
    describe_counter!(SESSIONS_OPENED, "Agent sessions opened (Welcome sent).");
    describe_counter!(
        SESSIONS_CLOSED,
        "Agent session streams ended, by reason (disconnect, silent, replaced, shutdown, refused, revoked)."
    );
    describe_counter!(LEASE_RENEWALS, "Lease renewals sent to agents.");
    describe_counter!(
        AUTH_REFUSALS,
        "Calls refused by authentication or authorization, by reason."
    );
    describe_counter!(
        HANDSHAKE_FAILURES,
        "TLS handshakes that failed for another reason than the client certificate, by reason (timeout, error)."
    );
    describe_gauge!(
        HANDSHAKES_IN_FLIGHT,
        "TLS handshakes in progress; at --max-handshakes further connections wait unaccepted."
    );
    describe_gauge!(
        HALTED,
        "1 while the fleet is halted (Fleet.HaltAll), else 0."
    );
    describe_counter!(AUDIT_ENTRIES, "Entries appended to the audit log.");
    describe_counter!(
        UNVOUCHED_ON_HELLO,
        "Faults an agent said it held (Hello) that no running experiment vouched for; the agent reverts them on Welcome."
    );
    counter!(UNVOUCHED_ON_HELLO).increment(0);
    describe_counter!(
        ENROLLMENTS,
        "Enrollment attempts on the enrollment listener, by outcome (enrolled, refused)."
    );
    describe_counter!(
        CERTIFICATES_ISSUED,
        "Agent certificates issued, by how (enroll, renew)."
    );
    for outcome in ["enrolled", "refused"] {
        counter!(ENROLLMENTS, "outcome" => outcome).increment(0);
    }
    for via in ["enroll", "renew"] {
        counter!(CERTIFICATES_ISSUED, "via" => via).increment(0);
    }
    gauge!(AGENTS_CONNECTED).set(0.0);
    counter!(SESSIONS_OPENED).increment(0);
    for r in CloseReason::ALL {
        counter!(SESSIONS_CLOSED, "reason" => r.as_str()).increment(0);
    }
    counter!(LEASE_RENEWALS).increment(0);
    for r in RefusalReason::ALL {
        counter!(AUTH_REFUSALS, "reason" => r.as_str()).increment(0);
    }
    for r in HandshakeFailureReason::ALL {
        counter!(HANDSHAKE_FAILURES, "reason" => r.as_str()).increment(0);
    }
    gauge!(HANDSHAKES_IN_FLIGHT).set(0.0);
    counter!(AUDIT_ENTRIES).increment(0);
    describe_counter!(
        AUDIT_FAILURES,
        "Audit entries that could not be written. The mutation they were for was refused, except a halt or the abort of a running experiment, which went ahead."
    );
    counter!(AUDIT_FAILURES).increment(0);
    describe_counter!(
        STORE_WRITE_FAILURES,
        "Store writes that failed (applied or made durable), including refusals by a full store queue."
    );
    counter!(STORE_WRITE_FAILURES).increment(0);
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Group commits of the store thread: one flush for every write queued since the last."
    );
    describe_counter!(
        STORE_PRUNED,
        "Records removed by retention, by kind (audit, experiment)."
    );
    for kind in ["audit", "experiment"] {
        counter!(STORE_PRUNED, "kind" => kind).increment(0);
    }
    crate::experiments::describe_metrics();
    crate::experiments::run::describe_pod_kill_metrics();
    crate::runs::describe();
}

/// An agent's Hello named faults nobody vouches for (a restarted coordinator, a lost store, an
/// experiment that ended while the agent was away): the Welcome omits them.
pub fn unvouched_on_hello(node: &str, faults: &[String]) {
    if faults.is_empty() {
        return;
    }
    tracing::warn!(
        node,
        count = faults.len(),
        "agent {node} holds {} fault(s) that no running experiment vouches for; it reverts them on Welcome: {}",
        faults.len(),
        faults.join(", ")
    );
    counter!(UNVOUCHED_ON_HELLO).increment(faults.len() as u64);
}

pub fn session_opened(node: &str, session_id: &str, remote: &str, connected: usize) {
    tracing::info!(node, session_id, %remote, "agent {node} connected from {remote} (session {session_id})");
    counter!(SESSIONS_OPENED).increment(1);
    gauge!(AGENTS_CONNECTED).set(connected as f64);
}

pub fn session_closed(
    node: &str,
    session_id: &str,
    reason: CloseReason,
    detail: &str,
    connected: usize,
) {
    match reason {
        CloseReason::Refused => {
            tracing::warn!(
                node,
                session_id,
                reason = reason.as_str(),
                "agent session refused: {detail}"
            )
        }
        _ => tracing::info!(
            node,
            session_id,
            reason = reason.as_str(),
            "agent {node} disconnected ({}): {detail}",
            reason.as_str()
        ),
    }
    counter!(SESSIONS_CLOSED, "reason" => reason.as_str()).increment(1);
    gauge!(AGENTS_CONNECTED).set(connected as f64);
}

pub fn lease_renewed(node: &str, sequence: u64) {
    tracing::trace!(node, sequence, "lease renewed");
    counter!(LEASE_RENEWALS).increment(1);
}

pub fn auth_refused(reason: RefusalReason, message: &str) {
    tracing::warn!(reason = reason.as_str(), "refused: {message}");
    counter!(AUTH_REFUSALS, "reason" => reason.as_str()).increment(1);
}

/// The TLS listener's events: a refused client certificate is an auth refusal (logged at warn
/// with the peer address and the identity the certificate claims); a timed-out or broken
/// handshake is counted apart and logged at debug (port scanners and TCP health checks do it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Handshakes;

impl HandshakeObserver for Handshakes {
    fn failed(&self, refusal: &HandshakeRefusal) {
        let remote = refusal.remote.to_string();
        let presented = refusal
            .presented
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let auth = match refusal.failure {
            HandshakeFailure::NoCertificate => Some(RefusalReason::NoCertificate),
            HandshakeFailure::CertificateRejected(_) => Some(RefusalReason::CertificateRejected),
            HandshakeFailure::NoIdentity => Some(RefusalReason::NoIdentity),
            HandshakeFailure::Revoked(_) => Some(RefusalReason::Revoked),
            HandshakeFailure::TimedOut(_) | HandshakeFailure::Failed(_) => None,
        };
        match auth {
            Some(reason) => {
                tracing::warn!(
                    reason = reason.as_str(),
                    %remote,
                    presented,
                    "refused in the TLS handshake: {refusal}"
                );
                counter!(AUTH_REFUSALS, "reason" => reason.as_str()).increment(1);
            }
            None => {
                let reason = match refusal.failure {
                    HandshakeFailure::TimedOut(_) => HandshakeFailureReason::Timeout,
                    _ => HandshakeFailureReason::Error,
                };
                tracing::debug!(reason = reason.as_str(), %remote, "{refusal}");
                counter!(HANDSHAKE_FAILURES, "reason" => reason.as_str()).increment(1);
            }
        }
    }

    fn in_flight(&self, handshakes: usize) {
        gauge!(HANDSHAKES_IN_FLIGHT).set(handshakes as f64);
    }
}

pub fn halted(halted: bool, by: &str, reason: &str, agents_signalled: usize) {
    if halted {
        tracing::warn!(
            by,
            reason,
            agents_signalled,
            "fleet halted by {by}: {reason}"
        );
    } else {
        tracing::warn!(by, "fleet resumed by {by}");
    }
    gauge!(HALTED).set(if halted { 1.0 } else { 0.0 });
}

/// The halted gauge as restored from the store at start-up.
pub fn halted_restored(halted: bool, reason: &str) {
    if halted {
        tracing::warn!(reason, "the fleet is halted (from the store): {reason}");
    }
    gauge!(HALTED).set(if halted { 1.0 } else { 0.0 });
}

pub fn audit_written(identity: &str, action: &str, detail: &str, allowed: bool) {
    tracing::info!(
        identity,
        action,
        allowed,
        "audit: {identity} {action}: {detail}"
    );
    counter!(AUDIT_ENTRIES).increment(1);
}

pub fn audit_failed(identity: &str, action: &str, error: &str) {
    tracing::error!(
        identity,
        action,
        "audit entry could not be written: {error}"
    );
    counter!(AUDIT_FAILURES).increment(1);
}

/// A store write failed. `told`: its caller hears of it (and says more); otherwise this is the
/// only place it shows.
pub fn store_write_failed(what: &str, error: &crate::store::StoreError, told: bool) {
    if !told {
        tracing::error!(what, "store: could not write the {what} record: {error}");
    }
    counter!(STORE_WRITE_FAILURES).increment(1);
}

/// The store thread flushed `writes` writes at once.
pub fn store_committed(writes: usize, took: Duration) {
    tracing::trace!(writes, "store: committed {writes} write(s) in {took:?}");
    histogram!(STORE_COMMIT_SECONDS).record(took.as_secs_f64());
}

/// Retention removed these.
pub fn store_pruned(audit_entries: u64, experiments: u64) {
    if audit_entries + experiments > 0 {
        tracing::info!(
            audit_entries,
            experiments,
            "retention removed {audit_entries} audit entries and {experiments} ended experiments"
        );
    }
    counter!(STORE_PRUNED, "kind" => "audit").increment(audit_entries);
    counter!(STORE_PRUNED, "kind" => "experiment").increment(experiments);
}

pub fn fault_status(node: &str, status: &faultline_proto::pb::FaultStatus) {
    let state = faultline_proto::pb::FaultState::try_from(status.state)
        .map(|s| s.as_str_name())
        .unwrap_or("FAULT_STATE_UNKNOWN");
    tracing::info!(
        node,
        fault_id = %status.fault_id,
        experiment_id = %status.experiment_id,
        state,
        error = %status.error,
        "fault status from {node}"
    );
}

/// An enrollment attempt (audited by the caller).
pub fn enrollment(ok: bool, claimed: &str, detail: &str) {
    if ok {
        tracing::info!(identity = claimed, "enrollment: {claimed} {detail}");
        counter!(ENROLLMENTS, "outcome" => "enrolled").increment(1);
        counter!(CERTIFICATES_ISSUED, "via" => "enroll").increment(1);
    } else {
        tracing::warn!(identity = claimed, "enrollment: {claimed} {detail}");
        counter!(ENROLLMENTS, "outcome" => "refused").increment(1);
    }
}

/// A certificate renewal over a session.
pub fn renewal(node: &str, outcome: Result<&str, &str>) {
    match outcome {
        Ok(not_after) => {
            tracing::info!(
                node,
                "renewed the certificate of agent/{node} (valid until {not_after})"
            );
            counter!(CERTIFICATES_ISSUED, "via" => "renew").increment(1);
        }
        Err(why) => tracing::warn!(node, "certificate renewal for agent/{node} refused: {why}"),
    }
}
