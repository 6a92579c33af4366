//! One task per running experiment: dispatches ApplyFault to every (target, fault), follows
//! the agents' FaultStatus, the guards and the clock, and ends the experiment — completed at
//! the end of its duration, aborted (API, guard, halt, shutdown) or failed (a target failed) —
//! by sending RevertFault to every target at once and waiting (bounded) for the acks.

mod dispatch;
mod end;
// Per-fault timing (issue 13, composition).
mod fault_end;
pub mod notice;
// pod-kill (issue 13): the coordinator deletes pods itself.
mod podkill;
mod progress;
mod resume;
mod status;
mod steady;
mod tick;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{aim, ExperimentSpec, Phase};
use faultline_proto::convert::spec_to_pb;
use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

pub use podkill::describe_metrics as describe_pod_kill_metrics;
pub use resume::{resume, Resumed};
pub use status::late_status;

use super::guards::{self, GuardReport};
use super::hypothesis::{self, Round};
use super::mailbox::Mailbox;
use super::record::{ExperimentRecord, Sample};
use super::{events, planning, Live, Snapshot};
use crate::state::{now_ms, State};
use crate::store::StoreError;

/// How long ApplyFault may go unanswered before the target counts as failed, at least: never
/// less than the lease and a second more, since an agent accepts an order up to a lease after
/// the telemetry it names, and a target given up must not be applied after it ([`Run::apply_ack_timeout`]).
pub const APPLY_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of an experiment waits for revert acknowledgements.
pub const REVERT_WAIT: Duration = Duration::from_secs(10);
/// The same wait when the coordinator is shutting down.
pub const SHUTDOWN_REVERT_WAIT: Duration = Duration::from_secs(2);
/// Period of telemetry sampling, lost-agent checks and persisting.
const TICK: Duration = Duration::from_secs(1);
/// How often an unacknowledged RevertFault is sent again while the run waits for its ack.
pub const REVERT_RESEND_EVERY: Duration = Duration::from_secs(2);
/// Above this many targets, status updates are published once per tick, not each.
const PUBLISH_EACH_STATUS_UP_TO: usize = 256;
/// Above [`PUBLISH_EACH_STATUS_UP_TO`] targets, a record whose only change is new samples
/// (telemetry summaries, guard evaluations) is stored and published this often, not each tick:
/// at 10,000 targets the record is about 6 MB, and storing it every second cost about 0.04
/// cores, 90 MiB and 6 MiB/s of writes for the whole experiment. Every other change is stored
/// within a tick.
const SAMPLES_EVERY: Duration = Duration::from_secs(10);
/// Agent messages a run handles in one go before it looks at its other inputs again.
const STATUS_BATCH: usize = 256;

/// Whether a record is stored (and published) now: any change but new samples at once; in a
/// run over [`PUBLISH_EACH_STATUS_UP_TO`] targets, new samples alone once [`SAMPLES_EVERY`] has
/// passed since it was last stored.
fn store_due(dirty: bool, samples_dirty: bool, targets: usize, since_stored: Duration) -> bool {
    dirty
        || (samples_dirty
            && (targets <= PUBLISH_EACH_STATUS_UP_TO || since_stored >= SAMPLES_EVERY))
}

/// What ended (or is ending) an experiment early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Guard,
    Halt,
    TargetFailure,
    AgentLost,
    Shutdown,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Api,
        Trigger::Guard,
        Trigger::Halt,
        Trigger::TargetFailure,
        Trigger::AgentLost,
        Trigger::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Guard => "guard",
            Trigger::Halt => "halt",
            Trigger::TargetFailure => "target-failure",
            Trigger::AgentLost => "agent-lost",
            Trigger::Shutdown => "shutdown",
        }
    }

    fn phase(self) -> Phase {
        match self {
            Trigger::TargetFailure | Trigger::AgentLost => Phase::Failed,
            _ => Phase::Aborted,
        }
    }
}

/// Requests to a running experiment.
#[derive(Debug)]
pub enum Control {
    /// End it now. The reply is the record right after RevertFault went out, and whether this
    /// request ended it (false: it was ending already).
    Abort {
        trigger: Trigger,
        by: String,
        reason: String,
        reply: Option<oneshot::Sender<(ExperimentRecord, bool)>>,
    },
    /// End it now as completed (faults reverted as at the end of its duration): a workflow's
    /// instant step whose action is done. Ignored once it is ending.
    Complete { reason: String },
}

#[derive(Debug, Clone)]
struct Breach {
    guard: String,
    guard_type: String,
    value: Option<f64>,
}

#[derive(Debug, Clone)]
enum End {
    Completed,
    Abort {
        trigger: Trigger,
        by: String,
        reason: String,
        at: i64,
        breach: Option<Breach>,
    },
}

/// Set once the end is decided and RevertFault went out.
#[derive(Debug)]
struct Ending {
    wait_until: Instant,
    /// The reason of the RevertFault orders (sent again until acknowledged).
    reason: pb::RevertReason,
}

/// What an agent's session tells a running experiment.
#[derive(Debug)]
pub enum FromAgent {
    Status(String, pb::FaultStatus),
    /// The agent said Hello (a new session) holding these faults; `at` is when the Hello came.
    Back {
        node: String,
        held: Vec<String>,
        at: i64,
    },
}

struct Run {
    state: Arc<State>,
    spec: ExperimentSpec,
    rec: ExperimentRecord,
    publish: watch::Sender<Snapshot>,
    ending: Option<Ending>,
    dirty: bool,
    /// Only samples changed since the record was last stored ([`SAMPLES_EVERY`]).
    samples_dirty: bool,
    /// When the record was last stored.
    stored_at: Instant,
    apply_sent_at: Instant,
    /// When every ApplyFault had been queued: the APPLY wait counts from here. Each order names
    /// telemetry heard before its push began, so an agent accepts it no later than a lease after
    /// this instant, and the wait (a lease and a second at least) outlasts that.
    apply_queued_at: Instant,
    dispatched: bool,
    guard_stop: CancellationToken,
    /// The latest outcome per guard, to log only changes.
    guard_outcomes: BTreeMap<String, String>,
    lost_since: BTreeMap<String, Instant>,
    /// When the experiment's duration is over.
    deadline: Instant,
    /// Agents that came back with a new session, judged a tick later (their queued statuses
    /// arrive right after the Welcome and tell more than the Hello's list).
    backs: Vec<(String, Vec<String>, i64, Instant)>,
    /// Set for a run resumed after a coordinator restart: until then, its agents may come back.
    return_by: Option<Instant>,
    /// The pod-kill task, if the experiment has pod-kill faults.
    pod_kills: podkill::PodKills,
    progress: progress::Progress,
}

/// Marks the experiment running, stores it (durable before any ApplyFault goes out, so a
/// coordinator that crashes after dispatching finds it running), and starts its task. Returns
/// the first snapshot.
pub async fn start(
    state: &Arc<State>,
    spec: ExperimentSpec,
    mut rec: ExperimentRecord,
    by: &str,
) -> Result<Snapshot, StoreError> {
    let now = now_ms();
    rec.phase = Phase::Running;
    rec.started_unix_ms = now;
    rec.targets = planning::targets(&spec, &rec.plan);
    let on = rec.plan.targets_phrase();
    rec.log(
        now,
        format!(
            "started by {by}: {} fault(s) on each of {on} for {}",
            spec.faults.len(),
            humantime::format_duration(spec.duration)
        ),
    );
    state.store.put_experiment_durable(&rec).await?;
    state.experiments.set_phase(&rec.name, Phase::Running);
    events::phase_changed(&rec.name, Phase::Running, &format!("started by {by}"));
    notice::started(state, &rec, by);
    let snapshot = Snapshot {
        record: Arc::new(rec.clone()),
        message: format!("started by {by}"),
        finished: false,
    };
    let deadline = Instant::now() + spec.duration;
    launch(state, spec, rec, snapshot.clone(), deadline, None);
    Ok(snapshot)
}

/// Registers the run in the table and starts its task. `return_by` is set for a resumed run
/// (nothing is dispatched; its agents have until then to come back).
fn launch(
    state: &Arc<State>,
    spec: ExperimentSpec,
    rec: ExperimentRecord,
    snapshot: Snapshot,
    deadline: Instant,
    return_by: Option<Instant>,
) {
    let (publish, snapshot_rx) = watch::channel(snapshot);
    let (control_tx, control_rx) = mpsc::channel(16);
    let mailbox = Arc::new(Mailbox::default());
    state.experiments.insert_live(
        &rec.name,
        Live {
            control: control_tx,
            status: mailbox.clone(),
            snapshot: snapshot_rx,
            agents: rec.agents(),
            pods: rec.pod_uids(),
            faults: rec
                .targets
                .iter()
                .map(|t| (t.fault_id.clone(), t.agent.clone()))
                .collect(),
        },
    );
    let progress = progress::Progress::new(&rec.targets);
    let run = Run {
        state: state.clone(),
        spec,
        rec,
        publish,
        ending: None,
        dirty: false,
        samples_dirty: false,
        stored_at: Instant::now(),
        apply_sent_at: Instant::now(),
        apply_queued_at: Instant::now(),
        dispatched: return_by.is_some(),
        guard_stop: CancellationToken::new(),
        guard_outcomes: BTreeMap::new(),
        lost_since: BTreeMap::new(),
        deadline,
        backs: Vec::new(),
        return_by,
        pod_kills: podkill::PodKills::none(),
        progress,
    };
    tokio::spawn(run.run(control_rx, mailbox));
}

impl Run {
    async fn run(mut self, mut control: mpsc::Receiver<Control>, statuses: Arc<Mailbox>) {
        let (guard_tx, mut guard_rx) = mpsc::channel::<GuardReport>(4);
        let (check_tx, mut check_rx) = mpsc::channel::<Round>(4);
        // A halt that came while this run was being planned or started: HaltAll sets the flag
        // before it aborts the live runs, so a run it did not see sees the flag here.
        if let Some(h) = self.state.halted() {
            let reason = format!(
                "the fleet was halted by {} while it started: {}",
                h.by, h.reason
            );
            self.end(End::Abort {
                trigger: Trigger::Halt,
                by: h.by,
                reason,
                at: now_ms(),
                breach: None,
            })
            .await;
        } else if self.return_by.is_none() {
            // The steady state first: nothing is injected unless every check holds.
            if !self.before_injection(&mut control).await {
                return;
            }
            self.dispatch().await;
            self.start_pod_kills();
        }
        match &self.spec.steady_state {
            Some(s) if self.ending.is_none() => hypothesis::spawn_during(
                self.state.clone(),
                s.checks.clone(),
                self.spec.guard_interval,
                self.rec.agents(),
                check_tx,
                self.guard_stop.clone(),
            ),
            _ => drop(check_tx),
        }
        let mut pod_kill_updates = self.pod_kills.rx.take();
        if self.ending.is_none() && !self.spec.guards.is_empty() {
            guards::spawn(
                self.state.clone(),
                self.spec.guards.clone(),
                self.spec.guard_interval,
                self.rec.agents(),
                guard_tx,
                self.guard_stop.clone(),
            );
        } else {
            drop(guard_tx);
        }
        let deadline = self.deadline;
        let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
        loop {
            if self.ending.is_some() && self.all_settled() && self.pod_kills.done() {
                break;
            }
            let wait_until = self.ending.as_ref().map(|e| e.wait_until);
            let fault_end = self.next_fault_end();
            tokio::select! {
                Some(c) = control.recv() => self.on_control(c).await,
                m = statuses.recv() => {
                    self.on_from_agent(m).await;
                    // What else waits, up to a bound, before the other branches are looked at
                    // again: a select round per message cost more than the message itself
                    // with 10,000 acknowledgements arriving at once.
                    for _ in 0..STATUS_BATCH {
                        let Some(m) = statuses.try_pop() else { break };
                        self.on_from_agent(m).await;
                    }
                }
                Some(r) = guard_rx.recv(), if self.ending.is_none() => self.on_guards(r).await,
                Some(r) = check_rx.recv(), if self.ending.is_none() => self.on_checks(r),
                _ = sleep_until(deadline), if self.ending.is_none() => self.end(End::Completed).await,
                _ = sleep_until(fault_end.unwrap_or(deadline)), if self.ending.is_none() && fault_end.is_some() => self.end_due_faults().await,
                _ = sleep_until(wait_until.unwrap_or(deadline)), if wait_until.is_some() => break,
                _ = tick.tick() => self.on_tick().await,
                u = podkill::next(&mut pod_kill_updates), if pod_kill_updates.is_some() => {
                    if matches!(u, podkill::Update::Done) {
                        pod_kill_updates = None;
                    }
                    self.on_pod_kill(u);
                }
                _ = self.state.shutdown.cancelled() => {
                    if self.ending.is_none() {
                        self.interrupt().await;
                        return;
                    }
                    // Shutting down while waiting for revert acks: record what is known.
                    break;
                }
            }
        }
        self.after_revert(&mut control).await;
        self.finish().await;
    }

    /// Every fault reverted or failed: nothing more is expected from the agents.
    fn all_settled(&mut self) -> bool {
        self.progress.all_settled(&self.rec.targets)
    }

    async fn on_from_agent(&mut self, m: FromAgent) {
        match m {
            FromAgent::Status(node, s) => self.on_status(&node, s).await,
            FromAgent::Back { node, held, at } => self.on_agent_back(node, held, at).await,
        }
    }

    fn publish(&mut self, message: impl Into<String>, finished: bool) {
        self.publish.send_replace(Snapshot {
            record: Arc::new(self.rec.clone()),
            message: message.into(),
            finished,
        });
    }

    /// Queues the record (durable within milliseconds; never waits). On failure it stays
    /// dirty, so the next tick tries again.
    fn persist(&mut self) {
        match self.state.store.put_experiment(&self.rec) {
            Ok(()) => self.stored(),
            Err(e) => {
                tracing::error!(experiment = %self.rec.name, "could not store the experiment: {e}")
            }
        }
    }

    fn stored(&mut self) {
        self.dirty = false;
        self.samples_dirty = false;
        self.stored_at = Instant::now();
    }

    /// New samples only: stored with the next change, or by the tick once they are due.
    fn sampled(&mut self) {
        self.samples_dirty = true;
    }

    /// Whether the tick stores and publishes the record ([`store_due`]).
    fn store_due(&self) -> bool {
        store_due(
            self.dirty,
            self.samples_dirty,
            self.rec.targets.len(),
            self.stored_at.elapsed(),
        )
    }

    /// Stores the record and waits until it is durable: at every phase change, before the run
    /// tells anyone about it.
    async fn persist_durable(&mut self) {
        match self.state.store.put_experiment_durable(&self.rec).await {
            Ok(()) => self.stored(),
            Err(e) => {
                self.dirty = true;
                tracing::error!(experiment = %self.rec.name, "could not store the experiment: {e}")
            }
        }
    }

    /// ApplyFault for every (target, fault), every agent in parallel.
    async fn dispatch(&mut self) {
        let mut batches: BTreeMap<String, Vec<CoordMsg>> = BTreeMap::new();
        for t in &self.rec.targets {
            // Each fault's own end (per-fault timing), at most the experiment's.
            let deadline = self.fault_end_ms(t.fault_index);
            let remaining_ms = u64::try_from(deadline - now_ms()).unwrap_or(0);
            // The vouch comes first, so no renewal after the order can omit the fault.
            self.state
                .vouches
                .vouch(&t.agent, &t.fault_id, &self.rec.name);
            let fault = &self.spec.faults[t.fault_index];
            let spec = match &t.pod {
                None => spec_to_pb(fault),
                Some(pod) => spec_to_pb(&aim(fault, &pod.to_container())),
            };
            batches
                .entry(t.agent.clone())
                .or_default()
                .push(CoordMsg::Apply(pb::ApplyFault {
                    fault_id: t.fault_id.clone(),
                    experiment_id: self.rec.id.clone(),
                    spec: Some(spec),
                    deadline_unix_ms: deadline,
                    remaining_ms,
                    // Filled in as the session's outbox queues it.
                    telemetry_sequence: 0,
                }));
        }
        self.apply_sent_at = Instant::now();
        let results = dispatch::send_all(&self.state, batches).await;
        self.apply_queued_at = Instant::now();
        let sent_at = now_ms();
        let mut failed = Vec::new();
        for (i, t) in self.rec.targets.iter_mut().enumerate() {
            match results.get(&t.agent) {
                Some(Ok(())) => t.apply_sent_unix_ms = sent_at,
                Some(Err(e)) => failed.push((i, format!("could not send ApplyFault: {e}"))),
                None => failed.push((i, "no ApplyFault was sent".to_string())),
            }
        }
        let n = self.rec.targets.len() - failed.len();
        self.rec
            .log(sent_at, format!("ApplyFault sent for {n} fault(s)"));
        self.dirty = true;
        for (i, e) in failed {
            self.target_failed(i, e, Trigger::TargetFailure).await;
        }
        self.check_dispatched();
        self.publish("ApplyFault sent", false);
    }

    /// Records the dispatch time once every target has answered ApplyFault.
    fn check_dispatched(&mut self) {
        if self.dispatched || !self.progress.all_answered(&self.rec.targets) {
            return;
        }
        self.dispatched = true;
        let applied = self
            .rec
            .targets
            .iter()
            .filter(|t| t.applied_unix_ms > 0)
            .count();
        let failed = self.rec.targets.len() - applied;
        let took = self.apply_sent_at.elapsed();
        self.rec.log(
            now_ms(),
            format!(
                "every target answered ApplyFault within {} ms: {applied} applied, {failed} failed",
                took.as_millis()
            ),
        );
        events::dispatched(&self.rec.name, took, applied, failed);
        // Which faults are out there matters after a crash: store it now, and show it.
        self.persist();
        self.publish("every target answered ApplyFault", false);
    }

    async fn on_control(&mut self, c: Control) {
        match c {
            Control::Abort {
                trigger,
                by,
                reason,
                reply,
            } => {
                let ended_it = self.ending.is_none();
                if ended_it {
                    let at = now_ms();
                    self.end(End::Abort {
                        trigger,
                        by,
                        reason,
                        at,
                        breach: None,
                    })
                    .await;
                }
                if let Some(reply) = reply {
                    let _ = reply.send((self.rec.clone(), ended_it));
                }
            }
            Control::Complete { reason } => {
                if self.ending.is_none() {
                    self.rec.log(now_ms(), reason);
                    self.end(End::Completed).await;
                }
            }
        }
    }

    async fn on_guards(&mut self, report: GuardReport) {
        let mut abort: Option<End> = None;
        for (name, guard_type, v) in report.verdicts {
            events::guard_evaluated(&self.rec.name, &name, guard_type, &v);
            let outcome = v.outcome.as_str().to_string();
            if self.guard_outcomes.get(&name) != Some(&outcome) {
                self.rec.log(
                    report.at_unix_ms,
                    format!("guard {name}: {outcome}: {}", v.detail),
                );
                self.guard_outcomes.insert(name.clone(), outcome.clone());
                // A logged change of outcome is not a sample: stored within a tick.
                self.dirty = true;
            }
            let healthy = self.guard_healthy(&name, v.value);
            let error = match v.outcome {
                faultline_core::experiment::eval::Outcome::Error { .. } => v.detail.clone(),
                _ => String::new(),
            };
            if abort.is_none() && v.outcome.aborts() {
                let what = if error.is_empty() {
                    "breached"
                } else {
                    "could not be evaluated"
                };
                abort = Some(End::Abort {
                    trigger: Trigger::Guard,
                    by: name.clone(),
                    reason: format!("guard {name} ({guard_type}) {what}: {}", v.detail),
                    at: report.at_unix_ms,
                    breach: Some(Breach {
                        guard: name.clone(),
                        guard_type: guard_type.to_string(),
                        value: v.value,
                    }),
                });
            }
            self.rec.sample(Sample {
                guard: name,
                at_unix_ms: report.at_unix_ms,
                value: v.value,
                outcome,
                breached: v.outcome.aborts(),
                error,
                detail: v.detail,
                healthy,
            });
        }
        match abort {
            Some(end) => {
                self.dirty = true;
                self.end(end).await
            }
            None => {
                self.sampled();
                if self.rec.targets.len() <= PUBLISH_EACH_STATUS_UP_TO {
                    self.publish("guards evaluated", false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_run_stores_new_samples_alone_only_every_samples_every() {
        let big = PUBLISH_EACH_STATUS_UP_TO + 1;
        let just = Duration::from_secs(1);
        // Any other change is stored at once, whatever the size.
        assert!(store_due(true, false, big, Duration::ZERO));
        assert!(store_due(true, true, big, just));
        // Samples alone: at once in a small run, every SAMPLES_EVERY in a large one.
        assert!(store_due(
            false,
            true,
            PUBLISH_EACH_STATUS_UP_TO,
            Duration::ZERO
        ));
        assert!(!store_due(false, true, big, just));
        assert!(!store_due(false, true, big, SAMPLES_EVERY - just));
        assert!(store_due(false, true, big, SAMPLES_EVERY));
        // Nothing new: nothing stored.
        assert!(!store_due(false, false, big, SAMPLES_EVERY * 2));
        assert!(!store_due(false, false, 1, SAMPLES_EVERY * 2));
    }
}
