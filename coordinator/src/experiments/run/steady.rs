//! The steady-state hypothesis and the impact in a run: the checks (and a first look at the
//! guards) before anything is injected, ending the run `failed` without a single ApplyFault
//! when a check does not hold; the checks while the faults are in place; the recovery watch
//! after the revert; and the impact figures and findings once the run is over.

use std::sync::{Arc, Mutex};

use faultline_core::experiment::impact::{self, Point, Window};
use faultline_core::experiment::steady::{healthy_value, Held, HypothesisVerdict};
use faultline_core::experiment::{Guard, Phase};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Control, Run};
use crate::experiments::hypothesis::{self, Round, Watched};
use crate::experiments::record::{AbortRecord, Sample};
use crate::experiments::{events, Snapshot};
use crate::state::now_ms;

/// A judged observation as a timeline sample (checks, and guards outside the guard task).
pub(super) fn held_sample(name: &str, at: i64, held: &Held) -> Sample {
    let (outcome, error) = match (held.holds, held.value) {
        (true, _) => ("ok", String::new()),
        (false, Some(_)) => ("unhealthy", String::new()),
        (false, None) if held.detail.starts_with("no ") => ("no_data", String::new()),
        (false, None) => ("error", held.detail.clone()),
    };
    Sample {
        guard: name.to_string(),
        at_unix_ms: at,
        value: held.value,
        outcome: outcome.to_string(),
        breached: false,
        error,
        detail: held.detail.clone(),
        healthy: held.value.map(|_| held.holds),
    }
}

/// What stopped the look before injection.
enum Before {
    Observed(Round, Result<(), String>),
    Control(Control),
    Shutdown,
}

impl Run {
    fn record_round(&mut self, round: &Round) {
        for (name, _, held) in &round.held {
            self.rec.sample(held_sample(name, round.at_unix_ms, held));
        }
        self.sampled();
    }

    /// Before any ApplyFault: every check (and guard) observed once. False when the run is
    /// over without injecting anything (a check did not hold, an abort, a shutdown).
    pub(super) async fn before_injection(&mut self, control: &mut mpsc::Receiver<Control>) -> bool {
        let steady = self.spec.steady_state.clone();
        if steady.is_none() && self.spec.guards.is_empty() {
            return true;
        }
        let state = self.state.clone();
        let guards = self.spec.guards.clone();
        let targets = self.rec.agents();
        let mut hyp = self.rec.hypothesis.clone();
        let outcome = {
            let look = async {
                match (&steady, hyp.as_mut()) {
                    (Some(s), Some(h)) => {
                        hypothesis::check_before(&state, s, h, &guards, &targets).await
                    }
                    _ => (
                        hypothesis::observe_round(&state, &[], &guards, &targets).await,
                        Ok(()),
                    ),
                }
            };
            tokio::select! {
                (round, verdict) = look => Before::Observed(round, verdict),
                Some(c) = control.recv() => Before::Control(c),
                _ = state.shutdown.cancelled() => Before::Shutdown,
            }
        };
        match outcome {
            Before::Observed(round, verdict) => {
                self.record_round(&round);
                self.rec.hypothesis = hyp;
                match verdict {
                    Ok(()) => {
                        if steady.is_some() {
                            self.rec.log(
                                round.at_unix_ms,
                                "steady state holds: every check held before injection",
                            );
                        }
                        // The look took time: the faults get their whole duration.
                        let now = now_ms();
                        self.rec.started_unix_ms = now;
                        self.deadline = tokio::time::Instant::now() + self.spec.duration;
                        true
                    }
                    Err(reason) => {
                        self.end_before_injection(Phase::Failed, reason, None).await;
                        false
                    }
                }
            }
            // A workflow completes an instant step only once its faults were applied, so
            // this cannot come before injection; if it does, nothing was injected.
            Before::Control(Control::Complete { reason }) => {
                let why = format!("ended before injection: {reason}");
                self.end_before_injection(Phase::Completed, why, None).await;
                false
            }
            Before::Control(Control::Abort {
                trigger,
                by,
                reason,
                reply,
            }) => {
                let at = now_ms();
                let abort = AbortRecord {
                    trigger: trigger.as_str().to_string(),
                    by,
                    reason: reason.clone(),
                    triggered_unix_ms: at,
                    sent_unix_ms: at,
                    last_revert_ack_unix_ms: at,
                    latency_ms: Some(0),
                    ..Default::default()
                };
                self.end_before_injection(trigger.phase(), reason, Some(abort))
                    .await;
                if let Some(reply) = reply {
                    let _ = reply.send((self.rec.clone(), true));
                }
                false
            }
            Before::Shutdown => {
                self.interrupt().await;
                false
            }
        }
    }

    /// Ends the run before anything was injected: no ApplyFault went out, so there is nothing
    /// to revert and no target to wait for.
    async fn end_before_injection(
        &mut self,
        phase: Phase,
        reason: String,
        abort: Option<AbortRecord>,
    ) {
        self.guard_stop.cancel();
        let now = now_ms();
        self.rec.targets.clear();
        self.rec.phase = phase;
        self.rec.ended_unix_ms = now;
        self.rec.abort = abort;
        let verdict = format!("{phase}: {reason}");
        self.rec.verdict_reason = verdict.clone();
        if let Some(h) = self.rec.hypothesis.as_mut() {
            h.fail(format!("the run ended before injection: {reason}"));
        }
        self.rec
            .log(now, format!("{verdict}; no ApplyFault was sent"));
        self.conclude_impact();
        self.persist_durable().await;
        self.state.experiments.set_phase(&self.rec.name, phase);
        events::phase_changed(&self.rec.name, phase, &verdict);
        self.notify_end();
        self.notify_finish();
        self.publish(verdict, true);
        self.state.experiments.remove_live(&self.rec.name);
    }

    /// A round of the checks while the faults are in place.
    pub(super) fn on_checks(&mut self, round: Round) {
        self.record_round(&round);
    }

    /// Whether a guard's verdict value is healthy (for the impact).
    pub(super) fn guard_healthy(&self, name: &str, value: Option<f64>) -> Option<bool> {
        let g = self.spec.guards.iter().find(|g| g.name == name)?;
        healthy_value(&g.kind, value)
    }

    /// After the revert: with a hypothesis, watch every check (and guard) until each holds
    /// again or `recoveryWithin` passes; without one, look at the guards once more.
    pub(super) async fn after_revert(&mut self, control: &mut mpsc::Receiver<Control>) {
        let state = self.state.clone();
        let guards: Vec<Guard> = self.spec.guards.clone();
        let targets = self.rec.agents();
        let Some(steady) = self.spec.steady_state.clone() else {
            if !guards.is_empty() && !state.shutdown.is_cancelled() {
                let round = tokio::select! {
                    r = hypothesis::observe_round(&state, &[], &guards, &targets) => Some(r),
                    _ = state.shutdown.cancelled() => None,
                };
                if let Some(round) = round {
                    self.record_round(&round);
                }
            }
            return;
        };
        let Some(mut hyp) = self
            .rec
            .hypothesis
            .clone()
            .filter(|h| h.verdict == HypothesisVerdict::Pending)
        else {
            return;
        };
        if state.shutdown.is_cancelled() {
            hyp.fail("the coordinator shut down before recovery could be watched");
            self.rec.hypothesis = Some(hyp);
            return;
        }
        let last_ack = self
            .rec
            .targets
            .iter()
            .map(|t| t.reverted_unix_ms)
            .max()
            .unwrap_or(0);
        let from = if last_ack > 0 { last_ack } else { now_ms() };
        let within = humantime::format_duration(steady.recovery_within);
        self.rec.log(
            now_ms(),
            format!("watching the steady state: every check must hold again within {within} of the last revert"),
        );
        self.publish("watching the steady state", false);
        let cancel = CancellationToken::new();
        let rounds: Mutex<Vec<Round>> = Mutex::new(Vec::new());
        let mut stopped_by: Option<String> = None;
        {
            let publish = &self.publish;
            let base = &self.rec;
            let what = hypothesis::Watch {
                state: &state,
                steady: &steady,
                guards: &guards,
                targets: &targets,
                interval: self.spec.guard_interval,
            };
            let watch = hypothesis::watch_recovery(&what, &mut hyp, from, &cancel, |round, h| {
                rounds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(round.clone());
                let holding = h.checks.iter().filter(|c| c.recovery_ms.is_some()).count();
                let mut rec = base.clone();
                rec.hypothesis = Some(h.clone());
                publish.send_replace(Snapshot {
                    record: Arc::new(rec),
                    message: format!(
                        "watching the steady state: {holding} of {} check(s) held again",
                        h.checks.len()
                    ),
                    finished: false,
                });
            });
            tokio::pin!(watch);
            loop {
                tokio::select! {
                    w = &mut watch => {
                        if w == Watched::Cancelled && stopped_by.is_none() {
                            stopped_by = Some("cancelled".into());
                        }
                        break;
                    }
                    Some(c) = control.recv() => {
                        // The faults are gone; an abort now ends the recovery watch, and
                        // this request is what ended it.
                        // (Complete: the faults are reverted already; nothing to do.)
                        if let Control::Abort { by, reason, reply, .. } = c {
                            if let Some(reply) = reply {
                                let _ = reply.send((base.clone(), stopped_by.is_none()));
                            }
                            stopped_by.get_or_insert(format!("aborted by {by}: {reason}"));
                            cancel.cancel();
                        }
                    }
                    _ = state.shutdown.cancelled(), if !cancel.is_cancelled() => {
                        stopped_by.get_or_insert("the coordinator shut down".into());
                        cancel.cancel();
                    }
                }
            }
        }
        for round in rounds.into_inner().unwrap_or_else(|p| p.into_inner()) {
            self.record_round(&round);
        }
        if let Some(why) = stopped_by {
            hyp.fail(format!(
                "the recovery watch was stopped ({why}) before every check held again"
            ));
        }
        let now = now_ms();
        self.rec.log(
            now,
            format!(
                "steady-state hypothesis {}: {}",
                hyp.verdict.as_str(),
                hyp.reason
            ),
        );
        events::hypothesis(&self.rec.name, hyp.verdict.as_str());
        self.rec.hypothesis = Some(hyp);
        self.dirty = true;
    }

    /// The impact of every guard and check and the findings, from the recorded timeline.
    pub(super) fn conclude_impact(&mut self) {
        let applied: Vec<i64> = self
            .rec
            .targets
            .iter()
            .map(|t| t.applied_unix_ms)
            .filter(|t| *t > 0)
            .collect();
        let first_applied = applied.iter().copied().min().unwrap_or(0);
        let last_reverted = self
            .rec
            .targets
            .iter()
            .map(|t| t.reverted_unix_ms)
            .max()
            .unwrap_or(0);
        let faults = {
            let mut kinds: Vec<String> = self.rec.plan.faults.clone();
            kinds.dedup();
            let agents = self.rec.agents();
            let on = match agents.as_slice() {
                [one] => one.clone(),
                many => format!("{} targets", many.len()),
            };
            format!("{} on {on}", kinds.join(" + "))
        };
        let window = Window {
            first_applied_unix_ms: first_applied,
            last_reverted_unix_ms: last_reverted,
            faults,
        };
        let mut probes: Vec<(String, &str, String)> = Vec::new();
        if let Some(h) = &self.rec.hypothesis {
            for c in &h.checks {
                probes.push((c.name.clone(), "check", c.check_type.clone()));
            }
        }
        for g in &self.rec.guards {
            probes.push((g.name.clone(), "guard", g.guard_type.clone()));
        }
        let impacts: Vec<_> = probes
            .iter()
            .map(|(name, source, kind)| {
                let points: Vec<Point> = self
                    .rec
                    .guard_timeline
                    .iter()
                    .filter(|s| &s.guard == name)
                    .map(|s| Point {
                        at_unix_ms: s.at_unix_ms,
                        value: s.value,
                        healthy: s.healthy,
                    })
                    .collect();
                impact::measure(name, source, kind, &points, &window)
            })
            .collect();
        self.rec.findings = impact::findings(&impacts, self.rec.hypothesis.as_ref(), &window);
        self.rec.impact = impacts;
    }
}
