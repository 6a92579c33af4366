//! `Experiments.Watch`: an event at every change of a running experiment and once a second
//! while it runs, until its run is over; one event for an experiment that has ended; a pending
//! experiment is followed once it starts.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::Phase;
use faultline_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::event;
use super::ops::{self, OpError};
use crate::state::{now_ms, State};

pub type EventStream = ReceiverStream<Result<pb::ExperimentEvent, Status>>;

const PERIOD: Duration = Duration::from_secs(1);

/// Checks that `name` exists, then streams its events.
pub async fn watch(state: Arc<State>, name: String) -> Result<EventStream, OpError> {
    let first = ops::get(&state, &name).await?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut rec = first;
        // Not running yet: say so, then wait for it to start (or end without starting).
        while rec.phase == Phase::Pending && state.experiments.subscribe(&name).is_none() {
            let msg = format!("{name} is pending: start it with faultctl start {name}");
            if tx.send(Ok(event(&rec, &msg, now_ms()))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = tx.closed() => return,
            }
            rec = match ops::get(&state, &name).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.status())).await;
                    return;
                }
            };
        }
        let Some(mut sub) = state.experiments.subscribe(&name) else {
            // Ended: one event with the final record.
            let rec = ops::get(&state, &name).await.unwrap_or(rec);
            let msg = format!("{name} is {}: {}", rec.phase, rec.verdict_reason);
            let _ = tx.send(Ok(event(&rec, &msg, now_ms()))).await;
            return;
        };
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (changed, alive) = tokio::select! {
                r = sub.changed() => (true, r.is_ok()),
                _ = tick.tick() => (false, true),
                _ = tx.closed() => return,
            };
            let snap = sub.borrow_and_update().clone();
            let message = if changed {
                snap.message.clone()
            } else if snap.record.phase == Phase::Running {
                "running".to_string()
            } else {
                format!("{}: waiting for revert acknowledgements", snap.record.phase)
            };
            let ev = event(&snap.record, &message, now_ms());
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
            if snap.finished {
                return;
            }
            if !alive {
                // The run went away without a final snapshot: send the stored record.
                if let Ok(rec) = ops::get(&state, &name).await {
                    let msg = format!("{name} is {}: {}", rec.phase, rec.verdict_reason);
                    let _ = tx.send(Ok(event(&rec, &msg, now_ms()))).await;
                }
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
