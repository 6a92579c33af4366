//! A workflow's own steady-state hypothesis (`spec.steadyState`): its checks are observed
//! before the first step (a check that does not hold ends the workflow `failed` and no step,
//! hence no ApplyFault, ever starts), and after the last step ended (completed, failed or
//! aborted) they are watched until each holds again or `recoveryWithin` passes. The
//! observing and the clock are `experiments::hypothesis`'s, the verdict core's, as for an
//! experiment.

use std::time::Duration;

use faultline_core::experiment::steady::{Hypothesis, HypothesisVerdict};
use faultline_core::workflow::Action;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::run::{Control, Run};
use crate::experiments::hypothesis::{self, Watched};
use crate::experiments::ops;
use crate::state::now_ms;

/// How often the checks are observed while recovery is watched (so `recovery_ms` is late by
/// at most this plus one observation).
pub const RECOVERY_POLL: Duration = Duration::from_millis(250);
/// How long the watch waits for the step experiments' reverts to be settled (acknowledged,
/// or given up by the experiments themselves) before it measures from now.
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// What the look before the first step decided.
pub(super) enum Start {
    /// Every check held (or there are none): start the first step.
    Go,
    /// The workflow is over before any step started: carry these out.
    Ended(Vec<Action>),
    /// The coordinator is shutting down; the workflow stays pending.
    Shutdown,
}

enum Before {
    Observed(Result<(), String>),
    Control(Control),
    Shutdown,
}

impl Run {
    /// Before the first step: every check observed once.
    pub(super) async fn check_start(&mut self, control: &mut mpsc::Receiver<Control>) -> Start {
        let Some(steady) = self.spec.steady_state.clone() else {
            return Start::Go;
        };
        let mut hyp = Hypothesis::new(&steady);
        self.rec.hypothesis = Some(hyp.clone());
        self.publish.send_replace(self.rec.clone());
        let state = self.state.clone();
        loop {
            let outcome = tokio::select! {
                (_, verdict) = hypothesis::check_before(&state, &steady, &mut hyp, &[], &[]) => {
                    Before::Observed(verdict)
                }
                Some(c) = control.recv() => Before::Control(c),
                _ = state.shutdown.cancelled() => Before::Shutdown,
            };
            let now = now_ms();
            match outcome {
                Before::Observed(verdict) => {
                    self.rec.hypothesis = Some(hyp);
                    return match verdict {
                        // A graceful stop began meanwhile: no first step now; the next
                        // coordinator checks again.
                        Ok(()) if self.state.workflows.is_frozen() => Start::Shutdown,
                        Ok(()) => {
                            self.rec.log(
                                now,
                                "steady state holds: every check held before the first step",
                            );
                            Start::Go
                        }
                        Err(reason) => {
                            self.rec.log(now, format!("{reason}; no step was started"));
                            Start::Ended(self.rec.progress.refuse_start(&reason, now))
                        }
                    };
                }
                Before::Control(Control::Abort { reason, reply }) => {
                    let actions = self.rec.progress.abort(&reason, now);
                    self.rec
                        .log(now, format!("aborted before the first step: {reason}"));
                    let h = self.rec.hypothesis.get_or_insert(hyp);
                    h.fail(format!(
                        "the workflow ended before its first step: {reason}"
                    ));
                    let _ = reply.send(self.rec.clone());
                    return Start::Ended(actions);
                }
                Before::Control(Control::Approve { step, reply, .. }) => {
                    let _ = reply.send(Err(format!(
                        "step: {step:?} is waiting: the workflow's steady-state checks are observed before its first step"
                    )));
                    // Observe again from the start; the checks take their own time.
                    hyp = Hypothesis::new(&steady);
                }
                Before::Shutdown => return Start::Shutdown,
            }
        }
    }

    /// After the last step ended: the checks, every [`RECOVERY_POLL`], until each holds again
    /// or `recoveryWithin` passes (measured from the last revert of the workflow's
    /// experiments). An abort or a shutdown ends the watch and fails the hypothesis.
    pub(super) async fn watch_recovery(&mut self, control: &mut mpsc::Receiver<Control>) {
        let Some(steady) = self.spec.steady_state.clone() else {
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
        let from = match hyp.recovery_from_unix_ms {
            0 => self.last_revert().await,
            resumed => resumed,
        };
        let within = humantime::format_duration(steady.recovery_within);
        self.rec.log(
            now_ms(),
            format!("watching the steady state: every check must hold again within {within} of the last revert"),
        );
        hyp.start_recovery(from);
        self.rec.hypothesis = Some(hyp.clone());
        self.save().await;
        let state = self.state.clone();
        let cancel = CancellationToken::new();
        let mut stopped_by: Option<String> = None;
        {
            let publish = &self.publish;
            let base = &self.rec;
            let what = hypothesis::Watch {
                state: &state,
                steady: &steady,
                guards: &[],
                targets: &[],
                interval: RECOVERY_POLL,
            };
            let watch = hypothesis::watch_recovery(&what, &mut hyp, from, &cancel, |_, h| {
                let mut rec = base.clone();
                rec.hypothesis = Some(h.clone());
                publish.send_replace(rec);
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
                    Some(c) = control.recv() => match c {
                        Control::Abort { reason, reply } => {
                            let _ = reply.send(base.clone());
                            stopped_by.get_or_insert(format!("aborted: {reason}"));
                            cancel.cancel();
                        }
                        Control::Approve { step, reply, .. } => {
                            let _ = reply.send(Err(format!(
                                "step: {step:?} cannot be approved: the workflow has ended"
                            )));
                        }
                    },
                    _ = state.shutdown.cancelled(), if !cancel.is_cancelled() => {
                        stopped_by.get_or_insert("the coordinator shut down".into());
                        cancel.cancel();
                    }
                }
            }
        }
        if let Some(why) = stopped_by {
            hyp.fail(format!(
                "the recovery watch was stopped ({why}) before every check held again"
            ));
        }
        self.rec.log(
            now_ms(),
            format!(
                "steady-state hypothesis {}: {}",
                hyp.verdict.as_str(),
                hyp.reason
            ),
        );
        self.rec.hypothesis = Some(hyp);
    }

    /// When the last RevertFault of the workflow's experiments was acknowledged: waits (up to
    /// [`SETTLE_WAIT`]) for each to be settled, then reads their records; now when none was.
    async fn last_revert(&self) -> i64 {
        let runs: Vec<String> = self
            .rec
            .progress
            .steps
            .iter()
            .filter(|s| !s.experiment.is_empty())
            .map(|s| s.experiment.clone())
            .collect();
        let until = tokio::time::Instant::now() + SETTLE_WAIT;
        while runs
            .iter()
            .any(|r| self.state.experiments.snapshot(r).is_some())
            && tokio::time::Instant::now() < until
            && !self.state.shutdown.is_cancelled()
        {
            tokio::time::sleep(super::run::POLL).await;
        }
        let mut last = 0;
        for run in &runs {
            if let Ok(rec) = ops::get(&self.state, run).await {
                let acked = rec.targets.iter().map(|t| t.reverted_unix_ms).max();
                last = last.max(acked.unwrap_or(0));
            }
        }
        if last > 0 {
            last
        } else {
            now_ms()
        }
    }
}
