//! The guard task of one running experiment: every `guardInterval` it observes every guard at
//! once (Prometheus query, HTTP probe, the targets' latest telemetry), feeds the observations
//! to the pure decision logic in core, and reports the verdicts to the run task.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::eval::{GuardState, Observation, Verdict};
use faultline_core::experiment::{Guard, GuardKind, TelemetryMetric};
use faultline_proto::pb;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::probe;
use crate::state::{now_ms, State, TELEMETRY_INTERVAL_MS};

/// Telemetry older than this (by the agent's last message) is no data.
const STALE_MS: i64 = 3 * TELEMETRY_INTERVAL_MS as i64;

/// One evaluation round.
#[derive(Debug, Clone)]
pub struct GuardReport {
    /// When the round's verdicts were reached (a breach is detected at this time).
    pub at_unix_ms: i64,
    pub verdicts: Vec<(String, &'static str, Verdict)>,
}

/// Starts evaluating `guards` every `interval` until `stop` is cancelled or the run goes away.
pub fn spawn(
    state: Arc<State>,
    guards: Vec<Guard>,
    interval: Duration,
    targets: Vec<String>,
    tx: mpsc::Sender<GuardReport>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut states: Vec<GuardState> = guards.into_iter().map(GuardState::new).collect();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let observed = tokio::select! {
                _ = stop.cancelled() => return,
                o = futures::future::join_all(states.iter().map(|g| observe(&state, &g.guard, &targets))) => o,
            };
            let at = now_ms();
            let verdicts = states
                .iter_mut()
                .zip(observed)
                .map(|(g, obs)| {
                    let v = g.observe(at, obs);
                    (g.guard.name.clone(), g.guard.kind.type_name(), v)
                })
                .collect();
            let report = GuardReport {
                at_unix_ms: at,
                verdicts,
            };
            if tx.send(report).await.is_err() {
                return;
            }
        }
    });
}

/// Observes every guard of `guards` at once; the time the last answer came and the
/// observations, in order.
pub async fn observe_all(
    state: &State,
    guards: &[Guard],
    targets: &[String],
) -> (i64, Vec<Observation>) {
    let observed =
        futures::future::join_all(guards.iter().map(|g| observe(state, g, targets))).await;
    (now_ms(), observed)
}

/// One observation of `guard`: a Prometheus query, an HTTP probe, or the targets' telemetry.
pub async fn observe(state: &State, guard: &Guard, targets: &[String]) -> Observation {
    match &guard.kind {
        GuardKind::Prometheus {
            url,
            query,
            timeout,
            access,
            ..
        } => match probe::prometheus(url, query, access, *timeout).await {
            Ok(values) => Observation::Values(values),
            Err(e) => Observation::Error(e),
        },
        GuardKind::Http {
            url,
            timeout,
            method,
            body,
            access,
            ..
        } => {
            Observation::Probe(probe::probe(url, *method, body.as_deref(), access, *timeout).await)
        }
        GuardKind::Telemetry { metric, .. } => {
            let now = now_ms();
            let mut per_target = Vec::new();
            for t in targets {
                // A connected agent that has not reported yet (it sends its first sample with
                // the session) has no data, which is not a failure to evaluate.
                let seen = state.registry.view(t, |e| {
                    if e.connected && e.telemetry.is_none() {
                        return None;
                    }
                    let fresh = e.connected && now - e.last_seen_unix_ms <= STALE_MS;
                    Some(
                        e.telemetry
                            .as_ref()
                            .filter(|_| fresh)
                            .and_then(|tm| metric_value(tm, *metric)),
                    )
                });
                let value = match seen {
                    Some(None) => continue,
                    Some(Some(v)) => v,
                    None => None,
                };
                per_target.push((t.clone(), value));
            }
            if per_target.is_empty() {
                Observation::Values(Vec::new())
            } else {
                Observation::PerTarget(per_target)
            }
        }
    }
}

/// One telemetry metric of a sample; `None` when the sample lacks it (no PSI).
pub fn metric_value(t: &pb::Telemetry, metric: TelemetryMetric) -> Option<f64> {
    let psi = |line: Option<&pb::PressureLine>| line.map(|l| l.avg10);
    let p = t.pressure.as_ref();
    match metric {
        TelemetryMetric::CpuBusyRatio => Some(t.cpu_busy_ratio),
        TelemetryMetric::MemoryUsedRatio => (t.memory_total_bytes > 0)
            .then(|| t.memory_used_bytes as f64 / t.memory_total_bytes as f64),
        TelemetryMetric::Load1 => Some(t.load1),
        TelemetryMetric::PsiCpuSomeAvg10 => psi(p.and_then(|p| p.cpu_some.as_ref())),
        TelemetryMetric::PsiMemorySomeAvg10 => psi(p.and_then(|p| p.memory_some.as_ref())),
        TelemetryMetric::PsiIoSomeAvg10 => psi(p.and_then(|p| p.io_some.as_ref())),
    }
}
