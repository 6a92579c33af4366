//! The guard decision logic, free of I/O: the coordinator observes (a Prometheus value, each
//! target's telemetry, a probe's status) and [`GuardState::observe`] says whether the guard is
//! fine, has no data, is breached, or could not be evaluated.

use std::collections::BTreeMap;
use std::time::Duration;

use super::guard::{Guard, GuardKind, OnError, Threshold};

/// Whether a condition has held without a break for a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    hold_ms: i64,
    since: Option<i64>,
}

impl Hold {
    pub fn new(hold: Duration) -> Self {
        Hold {
            hold_ms: hold.as_millis().min(i64::MAX as u128) as i64,
            since: None,
        }
    }

    /// Feeds one observation taken at `at_ms`; true once the condition has held for the whole
    /// hold duration (at once when the hold is zero). A good observation starts over.
    pub fn observe(&mut self, at_ms: i64, violating: bool) -> bool {
        if !violating {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(at_ms);
        at_ms - since >= self.hold_ms
    }

    pub fn reset(&mut self) {
        self.since = None;
    }
}

/// What the coordinator observed for one guard at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A Prometheus result: the series' values (empty = no data). NaN counts as no data.
    Values(Vec<f64>),
    /// Telemetry per target: `None` for a target without a fresh value.
    PerTarget(Vec<(String, Option<f64>)>),
    /// An HTTP probe: the status, or the reason there was none (timeout, refused).
    Probe(Result<u16, String>),
    /// The guard could not be evaluated (Prometheus unreachable, bad query, no telemetry).
    Error(String),
}

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Nothing to compare (empty query result, no target value): not breached.
    NoData,
    Breached,
    /// Not evaluable; `aborts` unless the guard says `onError: ignore`.
    Error {
        aborts: bool,
    },
}

impl Outcome {
    /// The `outcome` label of the evaluation counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NoData => "no_data",
            Outcome::Breached => "breached",
            Outcome::Error { .. } => "error",
        }
    }

    /// True when the experiment must abort.
    pub fn aborts(self) -> bool {
        matches!(self, Outcome::Breached | Outcome::Error { aborts: true })
    }
}

/// One evaluation, as recorded in the guard timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The observed value: the worst series or target, or the probe's status (0 = none).
    pub value: Option<f64>,
    /// For people: why it breached, what had no data, what failed.
    pub detail: String,
}

/// A guard and its memory between evaluations.
#[derive(Debug, Clone)]
pub struct GuardState {
    pub guard: Guard,
    hold: Hold,
    per_target: BTreeMap<String, Hold>,
    failures: u32,
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

fn held(hold: Duration) -> String {
    if hold.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(hold))
    }
}

impl GuardState {
    pub fn new(guard: Guard) -> Self {
        let hold = match &guard.kind {
            GuardKind::Prometheus { hold, .. } | GuardKind::Telemetry { hold, .. } => *hold,
            GuardKind::Http { .. } => Duration::ZERO,
        };
        GuardState {
            guard,
            hold: Hold::new(hold),
            per_target: BTreeMap::new(),
            failures: 0,
        }
    }

    fn error(&mut self, e: String) -> Verdict {
        self.hold.reset();
        self.per_target.clear();
        let aborts = self.guard.on_error == OnError::Abort;
        let then = if aborts {
            "aborting (onError: abort)"
        } else {
            "ignored (onError: ignore)"
        };
        Verdict {
            outcome: Outcome::Error { aborts },
            value: None,
            detail: format!("cannot be evaluated: {e}; {then}"),
        }
    }

    /// Feeds one observation taken at `at_ms`.
    pub fn observe(&mut self, at_ms: i64, obs: Observation) -> Verdict {
        let kind = self.guard.kind.clone();
        match (kind, obs) {
            (_, Observation::Error(e)) => self.error(e),
            (
                GuardKind::Prometheus {
                    threshold, hold, ..
                },
                Observation::Values(values),
            ) => {
                let worst = values
                    .into_iter()
                    .filter(|v| !v.is_nan())
                    .reduce(|a, b| threshold.worse(a, b));
                let Some(v) = worst else {
                    self.hold.reset();
                    return Verdict {
                        outcome: Outcome::NoData,
                        value: None,
                        detail:
                            "no data: the query returned an empty result (or NaN); not breached"
                                .into(),
                    };
                };
                let violating = threshold.violated_by(v);
                let breached = self.hold.observe(at_ms, violating);
                self.threshold_verdict(v, violating, breached, threshold, hold, "")
            }
            (
                GuardKind::Telemetry {
                    threshold,
                    hold,
                    metric,
                },
                Observation::PerTarget(values),
            ) => {
                let mut worst: Option<(String, f64)> = None;
                let mut breached_by: Option<(String, f64)> = None;
                let mut missing = Vec::new();
                for (target, value) in values {
                    let Some(v) = value.filter(|v| !v.is_nan()) else {
                        self.per_target.remove(&target);
                        missing.push(target);
                        continue;
                    };
                    let violating = threshold.violated_by(v);
                    let h = self
                        .per_target
                        .entry(target.clone())
                        .or_insert_with(|| Hold::new(hold));
                    if h.observe(at_ms, violating) && breached_by.is_none() {
                        breached_by = Some((target.clone(), v));
                    }
                    if worst
                        .as_ref()
                        .is_none_or(|(_, w)| threshold.worse(*w, v) == v && v != *w)
                    {
                        worst = Some((target, v));
                    }
                }
                if let Some((target, v)) = breached_by {
                    let on = format!(" on {target}");
                    return self.threshold_verdict(v, true, true, threshold, hold, &on);
                }
                match worst {
                    None => self.error(format!(
                        "no target has a fresh {} value{}",
                        metric.as_str(),
                        if missing.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", missing.join(", "))
                        }
                    )),
                    Some((target, v)) => {
                        let violating = threshold.violated_by(v);
                        let mut verdict = self.threshold_verdict(
                            v,
                            violating,
                            false,
                            threshold,
                            hold,
                            &format!(" on {target}"),
                        );
                        if !missing.is_empty() {
                            verdict
                                .detail
                                .push_str(&format!("; no data from {}", missing.join(", ")));
                        }
                        verdict
                    }
                }
            }
            (
                GuardKind::Http {
                    expect_status,
                    failures,
                    ..
                },
                Observation::Probe(result),
            ) => {
                let (ok, value, what) = match result {
                    Ok(status) => (
                        status == expect_status,
                        f64::from(status),
                        format!("status {status}"),
                    ),
                    Err(e) => (false, 0.0, e),
                };
                if ok {
                    self.failures = 0;
                    return Verdict {
                        outcome: Outcome::Ok,
                        value: Some(value),
                        detail: format!("{what} as expected"),
                    };
                }
                self.failures += 1;
                let breached = self.failures >= failures;
                Verdict {
                    outcome: if breached {
                        Outcome::Breached
                    } else {
                        Outcome::Ok
                    },
                    value: Some(value),
                    detail: format!(
                        "{what}, expected {expect_status}: {} of {failures} failure(s) in a row{}",
                        self.failures.min(failures),
                        if breached { "; breached" } else { "" }
                    ),
                }
            }
            (kind, obs) => self.error(format!(
                "internal: a {} guard got {obs:?}",
                kind.type_name()
            )),
        }
    }

    fn threshold_verdict(
        &self,
        v: f64,
        violating: bool,
        breached: bool,
        threshold: Threshold,
        hold: Duration,
        on: &str,
    ) -> Verdict {
        let detail = if breached {
            format!("{}{on} {threshold}{}: breached", fmt_value(v), held(hold))
        } else if violating {
            format!(
                "{}{on} {threshold}, waiting{} before breaching",
                fmt_value(v),
                held(hold)
            )
        } else {
            format!("{}{on}, not {threshold}", fmt_value(v))
        };
        Verdict {
            outcome: if breached {
                Outcome::Breached
            } else {
                Outcome::Ok
            },
            value: Some(v),
            detail,
        }
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
