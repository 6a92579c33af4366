//! The engine's mutations: apply, revert, revert-all and recovery, and the reactions to a
//! deadline, a failed health check and the retry timer. Each runs under `Inner::op`.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use faultline_core::fault::{FaultKind, FaultSpec};
use faultline_proto::convert::spec_from_pb;
use faultline_proto::pb;
use prost::Message;

use super::driver::{Driver, DriverError, FaultCtx};
use super::journal::{Entry, EntryState};
use super::{watch, Held, Inner};
use crate::faults::{kind_of, status, RevertReason};
use crate::metrics;
use crate::telemetry::unix_ms;

/// Why a driver call failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The driver refused (nothing changed).
    Refused(String),
    Error(String),
}

impl Failure {
    pub(super) fn text(&self) -> &str {
        match self {
            Failure::Refused(t) | Failure::Error(t) => t,
        }
    }
}

/// Runs a blocking driver call off the async executor, for at most `limit`; a panic becomes an
/// error, and so does a call that overruns (it keeps running on its own thread: see
/// [`call_or_late`]).
pub(super) async fn call<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, Failure> {
    call_or_late(what, limit, f, |_| {}).await
}

/// [`call`], and when the call overruns `limit`, `late` runs with its result once it finally
/// returns (to undo what a late apply did).
pub(super) async fn call_or_late<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
    late: impl FnOnce(Result<T, DriverError>) + Send + 'static,
) -> Result<T, Failure> {
    let span = tracing::debug_span!("driver_call", op = what);
    let mut handle = tokio::task::spawn_blocking(move || span.in_scope(f));
    let joined = match tokio::time::timeout(limit, &mut handle).await {
        Ok(joined) => joined,
        Err(_) => {
            tokio::spawn(async move {
                if let Ok(r) = handle.await {
                    late(r);
                }
            });
            return Err(Failure::Error(format!(
                "driver {what} did not return within {limit:?}"
            )));
        }
    };
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(DriverError::Refused(why))) => Err(Failure::Refused(why)),
        Ok(Err(e)) => Err(Failure::Error(e.to_string())),
        Err(join) if join.is_panic() => {
            let p = join.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(Failure::Error(format!("driver {what} panicked: {msg}")))
        }
        Err(_) => Err(Failure::Error(format!("driver {what} was cancelled"))),
    }
}

/// A validated fault that passed the limits, ready to plan.
struct Prepared {
    spec: FaultSpec,
    spec_pb: pb::FaultSpec,
    kind: FaultKind,
    driver: Arc<dyn Driver>,
    ctx: FaultCtx,
    /// The fault's end on the monotonic clock, counted from the order's arrival.
    until: tokio::time::Instant,
    /// Counts this apply against max_faults until it is in the fault table.
    _slot: Slot,
}

/// One apply between the limits check and the fault table.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = self.0.applying.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
    }
}

/// How long the fault may last from its arrival: `remaining_ms`, counted on this agent's
/// monotonic clock, so a skewed clock neither stretches nor blocks a fault. A coordinator that
/// sends no `remaining_ms` (older ones) gets `deadline_unix_ms` read against this agent's clock.
fn remaining_of(req: &pb::ApplyFault) -> Result<Duration, String> {
    if req.remaining_ms > 0 {
        return Ok(Duration::from_millis(req.remaining_ms));
    }
    let now = now_ms();
    if req.deadline_unix_ms <= now {
        return Err(format!(
            "remaining_ms: 0 leaves the fault no time (and deadline_unix_ms {} is not in the future; now is {now})",
            req.deadline_unix_ms
        ));
    }
    Ok(Duration::from_millis((req.deadline_unix_ms - now) as u64))
}

/// An apply that overran its time limit returned after all: whatever it did is undone again,
/// unless the fault is held as applied now (a later apply of the same id that succeeded).
fn late_apply(
    engine: std::sync::Weak<Inner>,
    driver: Arc<dyn Driver>,
    fault_id: String,
    late: Result<super::driver::Recipe, DriverError>,
) {
    let recipe = match late {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("the late apply of fault {fault_id} failed after all: {e}");
            return;
        }
    };
    let Some(inner) = engine.upgrade() else {
        return;
    };
    tokio::spawn(async move {
        let _op = inner.locks.fault(&fault_id).await;
        let held = inner
            .faults()
            .get(&fault_id)
            .is_some_and(|h| h.entry.state == EntryState::Applied);
        if held {
            return;
        }
        let limit = inner.driver_timeout;
        match call("revert", limit, move || driver.revert(&recipe)).await {
            Ok(_) => tracing::warn!(
                "fault {fault_id}: its apply returned after the time limit; reverted what it did"
            ),
            Err(f) => metrics::fault_revert_failed(
                "late-apply",
                &fault_id,
                &format!("undoing a late apply: {}", f.text()),
            ),
        }
    });
}

/// Fault ids name artifacts, so they must be short and plain.
pub(super) fn check_fault_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fault_id: {id:?} must be 1..=64 characters of a-z, 0-9 and '-'"
        ))
    }
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

pub(super) fn with_counters(mut s: pb::FaultStatus, counters: &[(String, u64)]) -> pb::FaultStatus {
    s.counters = counters.iter().cloned().collect();
    s
}

fn failed(req: &pb::ApplyFault, error: String) -> pb::FaultStatus {
    status(
        req.fault_id.clone(),
        req.experiment_id.clone(),
        pb::FaultState::Failed,
        RevertReason::Unspecified,
        error,
    )
}

impl Inner {
    pub(super) async fn apply(self: &Arc<Self>, req: pb::ApplyFault) -> pb::FaultStatus {
        let started = StdInstant::now();
        let received = tokio::time::Instant::now();
        let _op = self.locks.fault(&req.fault_id).await;
        if let Some(s) = self.current_status(&req.fault_id) {
            return s;
        }
        let label = kind_of(req.spec.as_ref());
        let p = match self.prepare(&req, received) {
            Ok(p) => p,
            Err(why) => {
                metrics::fault_refused(label, &req.fault_id, &why);
                return failed(&req, why);
            }
        };
        let plan = {
            let (d, ctx, spec) = (p.driver.clone(), p.ctx.clone(), p.spec.clone());
            call("plan", self.driver_timeout, move || d.plan(&ctx, &spec)).await
        };
        let recipe = match plan {
            Ok(r) => r,
            Err(Failure::Refused(why)) => {
                metrics::fault_refused(label, &req.fault_id, &why);
                return failed(&req, why);
            }
            Err(Failure::Error(e)) => {
                let e = format!("planning failed (nothing was changed): {e}");
                metrics::fault_apply_failed(label, &req.fault_id, &e);
                return failed(&req, e);
            }
        };
        let mut entry = Entry {
            fault_id: req.fault_id.clone(),
            experiment_id: req.experiment_id.clone(),
            kind: p.kind.as_str().to_string(),
            spec: p.spec_pb.encode_to_vec(),
            recipe,
            state: EntryState::Planned,
            applied_unix_ms: 0,
            deadline_unix_ms: unix_ms(p.ctx.deadline),
            last_error: String::new(),
            revert_reason: None,
        };
        if let Err(e) = self.put(&entry).await {
            let e = format!("{e} (nothing was changed)");
            metrics::fault_apply_failed(label, &req.fault_id, &e);
            return failed(&req, e);
        }
        self.faults().insert(
            entry.fault_id.clone(),
            Held {
                entry: entry.clone(),
                spec: Some(p.spec_pb.clone()),
                watch: None,
                counters: Vec::new(),
                until: Some(p.until),
            },
        );
        let applied = {
            let (d, ctx, spec, r) = (
                p.driver.clone(),
                p.ctx.clone(),
                p.spec.clone(),
                entry.recipe.clone(),
            );
            let (undo, weak) = (p.driver.clone(), Arc::downgrade(self));
            let id = req.fault_id.clone();
            call_or_late(
                "apply",
                self.driver_timeout,
                move || d.apply(&ctx, &spec, &r),
                move |late| late_apply(weak, undo, id, late),
            )
            .await
        };
        let done = match applied {
            Ok(done) => done,
            Err(f) => return self.undo_apply(entry, f).await,
        };
        entry.recipe = done;
        entry.state = EntryState::Applied;
        entry.applied_unix_ms = now_ms();
        if let Err(e) = self.put(&entry).await {
            return self.undo_apply(entry, Failure::Error(e.to_string())).await;
        }
        // The deadline counts from the order's arrival on the monotonic clock: apply took time.
        let token = watch::spawn_watch(self, entry.fault_id.clone(), p.until);
        if let Some(h) = self.faults().get_mut(&entry.fault_id) {
            h.entry = entry.clone();
            h.watch = Some(token);
        }
        self.update_active(label);
        metrics::fault_applied(label, &entry.fault_id, &p.spec, started.elapsed());
        let mut s = status(
            entry.fault_id,
            entry.experiment_id,
            pb::FaultState::Applied,
            RevertReason::Unspecified,
            String::new(),
        );
        s.at_unix_ms = entry.applied_unix_ms;
        s
    }

    /// The status of a fault this engine already holds (apply twice = one fault).
    fn current_status(&self, fault_id: &str) -> Option<pb::FaultStatus> {
        let faults = self.faults();
        let h = faults.get(fault_id)?;
        let e = &h.entry;
        let (state, error) = match e.state {
            EntryState::Applied => (pb::FaultState::Applied, String::new()),
            EntryState::Planned => (
                pb::FaultState::Failed,
                format!("fault {fault_id} was being applied when the agent stopped; recovery reverts it"),
            ),
            EntryState::RevertFailed => (
                pb::FaultState::Failed,
                format!("revert failed: {}; retried every {:?}", e.last_error, self.retry_every),
            ),
        };
        let mut s = status(
            e.fault_id.clone(),
            e.experiment_id.clone(),
            state,
            RevertReason::Unspecified,
            error,
        );
        if e.state == EntryState::Applied {
            s.at_unix_ms = e.applied_unix_ms;
        }
        Some(with_counters(s, &h.counters))
    }

    /// Validation and local limits: an error here means nothing was changed.
    fn prepare(
        self: &Arc<Self>,
        req: &pb::ApplyFault,
        received: tokio::time::Instant,
    ) -> Result<Prepared, String> {
        check_fault_id(&req.fault_id)?;
        let spec_pb = req
            .spec
            .as_ref()
            .ok_or_else(|| "spec: is required (a fault kind and its parameters)".to_string())?;
        let spec = spec_from_pb(spec_pb, "spec").map_err(|e| e.to_string())?;
        let kind = spec.kind();
        self.limits.check_kind(kind)?;
        if let Some(why) = self.unavailable.get(&kind) {
            return Err(format!(
                "fault kind {kind} is unavailable on this host: {why}"
            ));
        }
        let driver = self
            .driver_for(kind.as_str())
            .ok_or_else(|| format!("fault kind {kind} is not supported by this agent yet"))?;
        let remaining = remaining_of(req)?;
        let slot = {
            let mut applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
            let held = self.faults().len() + *applying;
            self.limits.check(&spec, "spec", remaining, held)?;
            *applying += 1;
            Slot(self.clone())
        };
        let ctx = FaultCtx {
            fault_id: req.fault_id.clone(),
            // On this agent's clock, whatever the coordinator's says.
            deadline: SystemTime::now() + remaining,
        };
        Ok(Prepared {
            spec_pb: faultline_proto::convert::spec_to_pb(&spec),
            spec,
            kind,
            driver,
            ctx,
            until: received + remaining,
            _slot: slot,
        })
    }

    /// Apply failed (or its result could not be journaled): revert whatever half-happened.
    async fn undo_apply(self: &Arc<Self>, mut entry: Entry, why: Failure) -> pb::FaultStatus {
        let id = entry.fault_id.clone();
        let kind = entry.kind.clone();
        let refused = matches!(why, Failure::Refused(_));
        let mut error = why.text().to_string();
        let undone = match self.driver_for(&kind) {
            Some(d) => {
                let r = entry.recipe.clone();
                call("revert", self.driver_timeout, move || d.revert(&r)).await
            }
            None => Err(Failure::Error(format!("no driver for kind {kind}"))),
        };
        match undone {
            Ok(_) => {
                if let Err(e) = self.remove(&id).await {
                    self.mark_failed(&mut entry, "unspecified", e.to_string())
                        .await;
                }
                if entry.state != EntryState::RevertFailed {
                    self.faults().remove(&id);
                }
            }
            Err(f) => {
                error = format!(
                    "{error}; undoing what was applied failed too: {} (it stays in the journal and is retried every {:?})",
                    f.text(),
                    self.retry_every
                );
                self.mark_failed(&mut entry, "unspecified", f.text().to_string())
                    .await;
            }
        }
        self.update_active(&kind);
        if refused {
            metrics::fault_refused(&kind, &id, &error);
        } else {
            metrics::fault_apply_failed(&kind, &id, &error);
        }
        status(
            id,
            entry.experiment_id,
            pb::FaultState::Failed,
            RevertReason::Unspecified,
            error,
        )
    }
}
