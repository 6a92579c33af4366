//! Notifications of run events (started, aborted, completed, failed, hypothesis failed) to
//! webhooks, Slack and PagerDuty, from `[[notifications]]` of the coordinator's config.
//!
//! [`Notifier::emit`] never waits: it puts the event in each destination's bounded queue (a
//! full queue drops it, counted and logged), and each destination has its own task that
//! delivers with retries and backoff. A dead or hanging receiver therefore delays nothing but
//! its own later notifications, and never an abort. Failed deliveries are counted in
//! `faultline_coordinator_notifications_total{outcome="failed"}` and written to the audit log.
//! Experiments call it today; schedules and workflows call the same API with their own
//! [`RunKind`].

pub mod config;
mod deliver;
pub mod payload;

use std::sync::Arc;

use metrics::{counter, describe_counter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{Sink, SinkKind};

use crate::store::StoreHandle;

/// Events each destination's queue holds; more are dropped (counted).
pub const QUEUE: usize = 256;

pub const NOTIFICATIONS: &str = "faultline_coordinator_notifications_total";
pub const NOTIFICATION_ATTEMPTS: &str = "faultline_coordinator_notification_attempts_total";

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Aborted,
    Completed,
    Failed,
    HypothesisFailed,
    /// The run's steady state holds again after an abort or failure (PagerDuty resolves);
    /// not configurable in `events`.
    Recovered,
}

impl EventKind {
    /// The events `[[notifications]].events` may list.
    pub const CONFIGURABLE: [EventKind; 5] = [
        EventKind::Started,
        EventKind::Aborted,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::HypothesisFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Aborted => "aborted",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::HypothesisFailed => "hypothesis_failed",
            EventKind::Recovered => "recovered",
        }
    }
}

/// What kind of run an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Experiment,
    Workflow,
    ScheduleRun,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Experiment => "experiment",
            RunKind::Workflow => "workflow",
            RunKind::ScheduleRun => "schedule-run",
        }
    }
}

/// One event about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    pub event: EventKind,
    pub kind: RunKind,
    pub name: String,
    /// The run's phase (`running`, `completed`, `aborted`, `failed`, ...).
    pub phase: String,
    /// The hypothesis' verdict (`passed`, `failed`, `pending`), or `none` without one.
    pub verdict: String,
    /// One sentence for people; URLs are removed (see [`payload::link_free`]).
    pub summary: String,
    pub at_unix_ms: i64,
}

/// The handle runs emit events through; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    sinks: Arc<Vec<(Sink, mpsc::Sender<Arc<RunEvent>>)>>,
}

/// Registers HELP text and starts the series at zero.
pub fn describe() {
    describe_counter!(
        NOTIFICATIONS,
        "Notifications by destination kind, event and outcome (delivered, failed after every retry, dropped because the queue was full)."
    );
    describe_counter!(
        NOTIFICATION_ATTEMPTS,
        "HTTP requests made to deliver notifications, by destination kind and result (ok, error)."
    );
}

impl Notifier {
    /// No destinations: every event is ignored.
    pub fn none() -> Notifier {
        Notifier::default()
    }

    /// Starts one delivery task per destination; they stop when `stop` is cancelled.
    pub fn start(sinks: Vec<Sink>, store: Arc<StoreHandle>, stop: CancellationToken) -> Notifier {
        describe();
        let mut out = Vec::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel(QUEUE);
            for e in &sink.events {
                for o in ["delivered", "failed", "dropped"] {
                    counter!(NOTIFICATIONS, "kind" => sink.kind.as_str(), "event" => e.as_str(), "outcome" => o)
                        .increment(0);
                }
            }
            tokio::spawn(deliver::run(sink.clone(), rx, store.clone(), stop.clone()));
            out.push((sink, tx));
        }
        Notifier {
            sinks: Arc::new(out),
        }
    }

    /// Queues `event` for every destination that wants it. Never waits.
    pub fn emit(&self, event: RunEvent) {
        if self.sinks.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for (sink, tx) in self.sinks.iter() {
            if !payload::wants(sink, event.event) {
                continue;
            }
            if tx.try_send(event.clone()).is_err() {
                tracing::warn!(
                    destination = sink.kind.as_str(),
                    url = %sink.url,
                    event = event.event.as_str(),
                    run = %event.name,
                    "notification dropped: the destination's queue is full (it is not answering)"
                );
                counter!(NOTIFICATIONS, "kind" => sink.kind.as_str(), "event" => event.event.as_str(), "outcome" => "dropped")
                    .increment(1);
            }
        }
    }
}
