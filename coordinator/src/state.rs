//! State shared by every service of one running coordinator: policy, registry, store, halt
//! flag, experiments table and the shutdown signal, plus the authorize-and-audit step every RPC
//! starts with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_core::Identity;
use faultline_identity::tls;
use faultline_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::authz::{self, Method};
use crate::config::Policy;
use crate::experiments::Table;
use crate::kube::PodAccess;
use crate::metrics;
use crate::registry::Registry;
use crate::store::{AuditRecord, HaltRecord, StoreError, StoreHandle};
use crate::vouch::Vouches;

/// The telemetry interval the coordinator asks agents for, in Welcome.
pub const TELEMETRY_INTERVAL_MS: u64 = 1000;

pub use faultline_core::clock::now_ms;

/// A mutation refused because its audit entry could not be written: nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("the audit log could not be written ({source}), so {action} was refused and nothing changed; retry once the coordinator's store is writable")]
pub struct Unaudited {
    pub action: &'static str,
    pub source: StoreError,
}

impl Unaudited {
    /// `UNAVAILABLE`: nothing was done, and a retry may succeed.
    pub fn status(&self) -> Status {
        Status::unavailable(self.to_string())
    }
}

pub struct State {
    pub policy: Policy,
    pub lease: Duration,
    pub renew_interval: Duration,
    /// The store thread; no store I/O happens on the async threads.
    pub store: Arc<StoreHandle>,
    pub registry: Registry,
    pub halt: Mutex<Option<HaltRecord>>,
    pub shutdown: CancellationToken,
    /// Experiments: every one's phase, and the running ones.
    pub experiments: Table,
    /// Schedules (all, in memory as in the store) and running workflows.
    pub schedules: crate::schedules::Table,
    pub workflows: crate::workflows::Table,
    /// The faults each agent should hold: what every Welcome and LeaseRenewal names.
    pub vouches: Vouches,
    /// The Kubernetes API for pod targets, or why there is none (none unless set after
    /// [`State::new`]).
    pub pods: PodAccess,
    /// Where run events go (none unless set after [`State::new`]).
    pub notifier: crate::notify::Notifier,
    /// Each session task holds a clone; shutdown drops this one and waits for the channel to
    /// close, which tells it every session has ended.
    session_guard: Mutex<Option<mpsc::Sender<()>>>,
    sessions: AtomicU64,
}

impl State {
    pub fn new(
        policy: Policy,
        lease: Duration,
        renew_interval: Duration,
        store: Arc<StoreHandle>,
        registry: Registry,
        halt: Option<HaltRecord>,
        session_guard: mpsc::Sender<()>,
    ) -> Self {
        State {
            policy,
            lease,
            renew_interval,
            store,
            registry,
            halt: Mutex::new(halt),
            shutdown: CancellationToken::new(),
            experiments: Table::default(),
            schedules: Default::default(),
            workflows: Default::default(),
            vouches: Vouches::default(),
            pods: PodAccess::none(),
            notifier: crate::notify::Notifier::none(),
            session_guard: Mutex::new(Some(session_guard)),
            sessions: AtomicU64::new(0),
        }
    }

    /// A guard for a new session task; `None` once shutdown has begun.
    pub fn session_guard(&self) -> Option<mpsc::Sender<()>> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        self.session_guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops the original guard: the guard channel closes when the last session ends.
    pub fn release_session_guard(&self) {
        self.session_guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    pub fn new_session_id(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:x}-{n}", now_ms())
    }

    pub fn halted(&self) -> Option<HaltRecord> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The faults `node` should hold now: nothing while the fleet is halted.
    pub fn vouched_for(&self, node: &str) -> Vec<String> {
        if self.halted().is_some() {
            return Vec::new();
        }
        self.vouches.wanted(node)
    }

    pub fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }

    /// Queues an audit entry, logged and counted once it is written (or could not be); never
    /// waits. The entry of a mutation, which must be on disk before the mutation, goes through
    /// [`State::audit_first`] instead.
    pub fn audit(
        &self,
        identity: &Identity,
        action: &str,
        detail: impl Into<String>,
        allowed: bool,
    ) -> Result<(), StoreError> {
        let rec = entry(identity, action, detail.into(), allowed);
        let (who, what, detail) = (rec.identity.clone(), rec.action.clone(), rec.detail.clone());
        let then = move |r: &Result<(), StoreError>| match r {
            Ok(()) => metrics::audit_written(&who, &what, &detail, allowed),
            Err(e) => metrics::audit_failed(&who, &what, &e.to_string()),
        };
        self.store
            .append_audit(rec.clone(), then)
            .inspect_err(|e| metrics::audit_failed(&rec.identity, action, &e.to_string()))
    }

    /// Writes an audit entry and returns once it is durable (logged and counted either way).
    pub async fn audit_durable(
        &self,
        identity: &Identity,
        action: &str,
        detail: impl Into<String>,
        allowed: bool,
    ) -> Result<(), StoreError> {
        let rec = entry(identity, action, detail.into(), allowed);
        match self.store.append_audit_durable(rec.clone()).await {
            Ok(()) => {
                metrics::audit_written(&rec.identity, action, &rec.detail, allowed);
                Ok(())
            }
            Err(e) => {
                metrics::audit_failed(&rec.identity, action, &e.to_string());
                Err(e)
            }
        }
    }

    /// The audit entry of a mutation `method` is about to carry out (`detail` says what),
    /// durable before it returns: when it cannot be written the mutation is refused.
    pub async fn audit_first(
        &self,
        identity: &Identity,
        method: Method,
        detail: impl Into<String>,
    ) -> Result<(), Unaudited> {
        self.audit_durable(identity, method.name(), detail, true)
            .await
            .map_err(|source| Unaudited {
                action: method.name(),
                source,
            })
    }

    /// The caller of `req` when its role may call `method`; refusals of mutations and of
    /// session opens are audited with `allowed = false`.
    #[allow(clippy::result_large_err)]
    pub fn authorize<T>(&self, req: &Request<T>, method: Method) -> Result<Identity, Status> {
        let identity = tls::caller(req)?;
        if let Err(status) = authz::check(&identity, method) {
            if method.is_mutation() || method == Method::Connect {
                let _ = self.audit(
                    &identity,
                    method.name(),
                    format!("refused: {}", status.message()),
                    false,
                );
            }
            return Err(status);
        }
        Ok(identity)
    }

    /// The policy as served by `Fleet.GetPolicy`.
    pub fn policy_pb(&self) -> pb::Policy {
        let halt = self.halted();
        let p = &self.policy;
        pb::Policy {
            max_fleet_percent_under_fault: p.max_fleet_percent_under_fault,
            max_concurrent_experiments: p.max_concurrent_experiments,
            allowed_fault_kinds: p.allowed_fault_kinds.clone(),
            max_duration_ms: p.max_duration.as_millis() as u64,
            protected_agent_labels: p.protected_agent_labels.0.clone().into_iter().collect(),
            halted: halt.is_some(),
            halted_reason: halt.map(|h| h.reason).unwrap_or_default(),
            lease_ms: self.lease_ms(),
            protected_namespaces: p.protected_namespaces.clone(),
            max_pod_percent_per_namespace: p.max_pod_percent_per_namespace,
        }
    }
}

fn entry(identity: &Identity, action: &str, detail: String, allowed: bool) -> AuditRecord {
    AuditRecord {
        at_unix_ms: now_ms(),
        identity: identity.to_string(),
        action: action.to_string(),
        detail,
        allowed,
    }
}

/// The one conversion of store failures into a gRPC status.
pub fn store_status(e: StoreError) -> Status {
    Status::internal(e.to_string())
}
