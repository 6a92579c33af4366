//! The fault-manager port: how the session hands faults to whatever applies and reverts them.
//!
//! The contract every implementation keeps (the fault engine builds on it):
//! - `apply` and `revert` are idempotent: applying a fault twice is one fault; reverting a fault
//!   that was never applied, or half applied, succeeds.
//! - `revert_all` reverts everything the agent holds, whoever asked: it is called at start-up
//!   (reason RECOVERY, before the first Hello), when the session lease lapses (LEASE), on
//!   SIGTERM (SHUTDOWN), and when the coordinator says RevertAll.
//! - The session calls the manager from one task, one call at a time, in the order the
//!   coordinator sent the messages; `held` and `capabilities` must be cheap.
//! - Statuses the manager produces on its own (a deadline revert, a fault that stopped working,
//!   a retried revert that finally succeeded) go out through [`FaultManager::take_events`]; the
//!   session forwards them while connected and queues them while not.

#[cfg(any(test, feature = "test-util"))]
mod recording;

use faultline_proto::pb;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

pub use faultline_proto::pb::RevertReason;
#[cfg(any(test, feature = "test-util"))]
pub use recording::{Call, RecordingManager};

/// The safety hook the fault issues build on. Implementations must be idempotent.
pub trait FaultManager: Send + Sync + 'static {
    /// Fault kinds this agent can inject here (`"network"`, `"cpu"`, ...), sent in Hello.
    fn capabilities(&self) -> Vec<String>;
    /// Faults currently applied, sent in Hello so the coordinator knows after a reconnect.
    fn held(&self) -> Vec<pb::HeldFault>;
    fn apply(&self, req: pb::ApplyFault) -> BoxFuture<'_, pb::FaultStatus>;
    fn revert(&self, fault_id: String, reason: RevertReason) -> BoxFuture<'_, pb::FaultStatus>;
    /// Reverts every fault the agent holds; called on lease lapse, shutdown (SIGTERM) and start-up.
    fn revert_all(&self, reason: RevertReason) -> BoxFuture<'_, Vec<pb::FaultStatus>>;
    /// The session lease now runs until `until` (Welcome, every renewal and every ApplyFault):
    /// kernel-side deadlines (eBPF maps) follow it, so a wedged agent's network faults still end
    /// with the lease. Must not block, and faults applied after it returns are bounded by
    /// `until`, not by the lease's previous end.
    fn lease_renewed(&self, _until: std::time::SystemTime) {}

    /// The receiver of unsolicited statuses, handed out once (to the session or the standalone
    /// runner); `None` for managers that never produce any, or when already taken.
    fn take_events(&self) -> Option<mpsc::Receiver<pb::FaultStatus>> {
        None
    }
}

/// The label value for a revert reason in metrics and logs: `lease`, `shutdown`, ...
pub fn reason_label(reason: RevertReason) -> &'static str {
    match faultline_proto::convert::revert_reason_name(reason as i32) {
        "" => "unspecified",
        name => name,
    }
}

/// A fault status stamped now.
pub fn status(
    fault_id: String,
    experiment_id: String,
    state: pb::FaultState,
    reason: RevertReason,
    error: String,
) -> pb::FaultStatus {
    pb::FaultStatus {
        fault_id,
        experiment_id,
        state: state as i32,
        at_unix_ms: crate::telemetry::unix_ms(std::time::SystemTime::now()),
        reason: reason as i32,
        error,
        counters: Default::default(),
    }
}

/// The kind of fault a spec asks for (`"network"`, `"cpu"`, ...), or `"unspecified"`.
pub fn kind_of(spec: Option<&pb::FaultSpec>) -> &'static str {
    use pb::fault_spec::Kind;
    match spec.and_then(|s| s.kind.as_ref()) {
        Some(Kind::Network(_)) => "network",
        Some(Kind::Drop(_)) => "drop",
        Some(Kind::Partition(_)) => "partition",
        Some(Kind::Cpu(_)) => "cpu",
        Some(Kind::Memory(_)) => "memory",
        Some(Kind::Io(_)) => "io",
        Some(Kind::Process(_)) => "process",
        Some(Kind::DiskFill(_)) => "disk-fill",
        Some(Kind::IoLimit(_)) => "io-limit",
        // dns (issue 13)
        Some(Kind::Dns(_)) => "dns",
        // Kill faults (issue 13).
        Some(Kind::PodKill(_)) => "pod-kill",
        Some(Kind::ContainerKill(_)) => "container-kill",
        None => "unspecified",
    }
}
