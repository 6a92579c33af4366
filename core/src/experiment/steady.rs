//! The steady-state hypothesis (`spec.steadyState`): checks of the guard types (prometheus,
//! http, telemetry) that must hold before anything is injected, and again within
//! `recoveryWithin` after the faults are reverted. This module holds the document, its
//! validation, whether one observation shows a check holding, and the verdict with the
//! recovery time of each check. Pure: the caller observes (see [`super::eval::Observation`])
//! and keeps the clock; experiments and workflows use it alike.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::eval::Observation;
use super::guard::{Guard, GuardKind};
use super::guard_doc::{duration_field, RawGuard};
use crate::fault::{join, SpecError};

/// Most checks one hypothesis may hold.
pub const MAX_CHECKS: usize = 16;
/// Default and range of `recoveryWithin`.
pub const DEFAULT_RECOVERY_WITHIN: Duration = Duration::from_secs(60);
pub const MIN_RECOVERY_WITHIN: Duration = Duration::from_secs(1);
pub const MAX_RECOVERY_WITHIN: Duration = Duration::from_secs(3600);

/// A validated `spec.steadyState`.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyState {
    pub checks: Vec<Guard>,
    pub recovery_within: Duration,
}

/// `spec.steadyState` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSteadyState {
    #[serde(default)]
    pub checks: Vec<RawGuard>,
    pub recovery_within: Option<String>,
}

impl RawSteadyState {
    /// Validates the hypothesis at `path` (`spec.steadyState`); check names must differ from
    /// each other and from the `guards` names (the report keys both by name).
    pub fn to_steady_state(&self, path: &str, guards: &[Guard]) -> Result<SteadyState, SpecError> {
        let cp = join(path, "checks");
        if self.checks.is_empty() || self.checks.len() > MAX_CHECKS {
            return Err(SpecError::new(
                cp,
                format!("has {} checks; give 1..={MAX_CHECKS}", self.checks.len()),
            ));
        }
        let mut checks: Vec<Guard> = Vec::new();
        for (i, raw) in self.checks.iter().enumerate() {
            let at = format!("{cp}[{i}]");
            refuse_guard_only_fields(raw, &at)?;
            let check = raw.to_guard(&at)?;
            if let Some(j) = checks.iter().position(|c| c.name == check.name) {
                return Err(SpecError::new(
                    join(&at, "name"),
                    format!(
                        "{:?} is already the name of {cp}[{j}]; check names are unique",
                        check.name
                    ),
                ));
            }
            if guards.iter().any(|g| g.name == check.name) {
                return Err(SpecError::new(
                    join(&at, "name"),
                    format!("{:?} is already the name of a guard; give checks and guards different names", check.name),
                ));
            }
            checks.push(check);
        }
        let recovery_within = duration_field(
            &join(path, "recoveryWithin"),
            &self.recovery_within,
            DEFAULT_RECOVERY_WITHIN,
            MIN_RECOVERY_WITHIN,
            MAX_RECOVERY_WITHIN,
        )?;
        Ok(SteadyState {
            checks,
            recovery_within,
        })
    }
}

/// `for`, `failures` and `onError` decide when a guard aborts; a check holds or not at each
/// observation, so they are refused rather than silently ignored.
fn refuse_guard_only_fields(raw: &RawGuard, at: &str) -> Result<(), SpecError> {
    let why = "does not apply to steady-state checks: a check holds when one observation is within its threshold (an error or no data does not hold)";
    if raw.on_error.is_some() {
        return Err(SpecError::new(join(at, "onError"), why));
    }
    if raw.prometheus.as_ref().is_some_and(|p| p.hold.is_some()) {
        return Err(SpecError::new(join(at, "prometheus.for"), why));
    }
    if raw.telemetry.as_ref().is_some_and(|t| t.hold.is_some()) {
        return Err(SpecError::new(join(at, "telemetry.for"), why));
    }
    if raw.http.as_ref().is_some_and(|h| h.failures.is_some()) {
        return Err(SpecError::new(join(at, "http.failures"), why));
    }
    Ok(())
}

/// Whether one observation shows a check (or a guard) healthy.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub holds: bool,
    /// The value: the worst series or target, or the HTTP status (None: no data, an error).
    pub value: Option<f64>,
    pub detail: String,
}

fn num(v: f64) -> String {
    super::impact::fmt_num(v)
}

/// Judges one observation of `check`: within its threshold (every series, every target), or
/// the expected HTTP status. No data and errors do not hold.
pub fn holds(check: &Guard, obs: &Observation) -> Held {
    let no = |value: Option<f64>, detail: String| Held {
        holds: false,
        value,
        detail,
    };
    match (&check.kind, obs) {
        (_, Observation::Error(e)) => no(None, format!("cannot be evaluated: {e}")),
        (GuardKind::Prometheus { threshold, .. }, Observation::Values(values)) => {
            let worst = values
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .reduce(|a, b| threshold.worse(a, b));
            match worst {
                None => no(
                    None,
                    "no data: the query returned an empty result (or NaN)".into(),
                ),
                Some(v) if threshold.violated_by(v) => {
                    no(Some(v), format!("{} {threshold}", num(v)))
                }
                Some(v) => Held {
                    holds: true,
                    value: Some(v),
                    detail: format!("{}, not {threshold}", num(v)),
                },
            }
        }
        (
            GuardKind::Telemetry {
                threshold, metric, ..
            },
            Observation::PerTarget(values),
        ) => {
            let missing: Vec<&str> = values
                .iter()
                .filter(|(_, v)| v.is_none_or(f64::is_nan))
                .map(|(t, _)| t.as_str())
                .collect();
            let worst = values
                .iter()
                .filter_map(|(t, v)| v.filter(|v| !v.is_nan()).map(|v| (t, v)))
                .reduce(|a, b| {
                    if threshold.worse(a.1, b.1) == b.1 && a.1 != b.1 {
                        b
                    } else {
                        a
                    }
                });
            match worst {
                _ if !missing.is_empty() => no(
                    worst.map(|w| w.1),
                    format!("no fresh {} from {}", metric.as_str(), missing.join(", ")),
                ),
                None => no(None, format!("no target reports {}", metric.as_str())),
                Some((t, v)) if threshold.violated_by(v) => {
                    no(Some(v), format!("{} on {t} {threshold}", num(v)))
                }
                Some((t, v)) => Held {
                    holds: true,
                    value: Some(v),
                    detail: format!("{} on {t} (the worst), not {threshold}", num(v)),
                },
            }
        }
        (GuardKind::Telemetry { metric, .. }, Observation::Values(v)) if v.is_empty() => {
            no(None, format!("no target reports {}", metric.as_str()))
        }
        (GuardKind::Http { expect_status, .. }, Observation::Probe(result)) => match result {
            Ok(s) if s == expect_status => Held {
                holds: true,
                value: Some(f64::from(*s)),
                detail: format!("status {s} as expected"),
            },
            Ok(s) => no(
                Some(f64::from(*s)),
                format!("status {s}, expected {expect_status}"),
            ),
            Err(e) => no(None, e.clone()),
        },
        (kind, obs) => no(
            None,
            format!("internal: a {} check got {obs:?}", kind.type_name()),
        ),
    }
}

/// Whether a guard's (or check's) observed value is within its threshold, or is the expected
/// HTTP status (a probe without an answer records 0); `None` without a value.
pub fn healthy_value(kind: &GuardKind, value: Option<f64>) -> Option<bool> {
    let v = value.filter(|v| !v.is_nan())?;
    Some(match kind {
        GuardKind::Prometheus { threshold, .. } | GuardKind::Telemetry { threshold, .. } => {
            !threshold.violated_by(v)
        }
        GuardKind::Http { expect_status, .. } => v == f64::from(*expect_status),
    })
}

/// The hypothesis' own verdict, beside the run's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypothesisVerdict {
    /// Not decided yet (before injection, or while recovery is watched).
    Pending,
    Passed,
    Failed,
}

impl HypothesisVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            HypothesisVerdict::Pending => "pending",
            HypothesisVerdict::Passed => "passed",
            HypothesisVerdict::Failed => "failed",
        }
    }
}

/// One check: how it stood before injection and how long it took to hold again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub check_type: String,
    pub description: String,
    #[serde(default)]
    pub held_before: bool,
    #[serde(default)]
    pub before_value: Option<f64>,
    #[serde(default)]
    pub before_detail: String,
    /// From the last revert acknowledged to the first observation that held; `None` until it
    /// held (or when nothing was injected).
    #[serde(default)]
    pub recovery_ms: Option<u64>,
    /// The latest observation while recovery was watched.
    #[serde(default)]
    pub last_detail: String,
}

/// The hypothesis of one run: verdict, reason, and each check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub verdict: HypothesisVerdict,
    #[serde(default)]
    pub reason: String,
    pub recovery_within_ms: u64,
    /// When recovery is measured from (the last revert acknowledged); 0 before.
    #[serde(default)]
    pub recovery_from_unix_ms: i64,
    pub checks: Vec<CheckRecord>,
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl Hypothesis {
    pub fn new(s: &SteadyState) -> Hypothesis {
        Hypothesis {
            verdict: HypothesisVerdict::Pending,
            reason: String::new(),
            recovery_within_ms: s.recovery_within.as_millis().min(u128::from(u64::MAX)) as u64,
            recovery_from_unix_ms: 0,
            checks: s
                .checks
                .iter()
                .map(|c| CheckRecord {
                    name: c.name.clone(),
                    check_type: c.kind.type_name().to_string(),
                    description: c.describe(),
                    held_before: false,
                    before_value: None,
                    before_detail: String::new(),
                    recovery_ms: None,
                    last_detail: String::new(),
                })
                .collect(),
        }
    }

    fn within(&self) -> String {
        humantime::format_duration(Duration::from_millis(self.recovery_within_ms)).to_string()
    }

    /// Records check `i`'s observation before injection.
    pub fn observe_before(&mut self, i: usize, held: &Held) {
        if let Some(c) = self.checks.get_mut(i) {
            c.held_before = held.holds;
            c.before_value = held.value;
            c.before_detail = held.detail.clone();
        }
    }

    /// After every check was observed before injection: `Err(reason)` naming each check that
    /// did not hold (the verdict is then failed, and nothing may be injected).
    pub fn judge_before(&mut self) -> Result<(), String> {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.held_before)
            .map(|c| format!("{} ({}): {}", c.name, c.check_type, c.before_detail))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let reason = format!(
            "steady-state check {} did not hold before injection, so nothing was injected",
            failed.join("; check ")
        );
        self.verdict = HypothesisVerdict::Failed;
        self.reason = reason.clone();
        Err(reason)
    }

    /// Recovery is measured from `from_unix_ms` (the last revert acknowledged).
    pub fn start_recovery(&mut self, from_unix_ms: i64) {
        self.recovery_from_unix_ms = from_unix_ms;
    }

    /// When the recovery watch gives up (unix ms).
    pub fn recovery_deadline(&self) -> i64 {
        self.recovery_from_unix_ms + self.recovery_within_ms as i64
    }

    /// Records check `i`'s observation at `at_unix_ms` after the revert; the first that holds
    /// sets its recovery time.
    pub fn observe_recovery(&mut self, i: usize, at_unix_ms: i64, held: &Held) {
        let from = self.recovery_from_unix_ms;
        if let Some(c) = self.checks.get_mut(i) {
            c.last_detail = held.detail.clone();
            if held.holds && c.recovery_ms.is_none() {
                c.recovery_ms = Some(u64::try_from(at_unix_ms - from).unwrap_or(0));
            }
        }
    }

    /// Every check has held again since the revert.
    pub fn all_recovered(&self) -> bool {
        self.checks.iter().all(|c| c.recovery_ms.is_some())
    }

    /// Decides the verdict once recovery was watched: passed when every check held again
    /// within `recoveryWithin`; failed naming the checks that did not.
    pub fn conclude(&mut self) {
        if self.verdict != HypothesisVerdict::Pending {
            return;
        }
        let within = self.within();
        let late: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.recovery_ms.is_none_or(|ms| ms > self.recovery_within_ms))
            .map(|c| match c.recovery_ms {
                Some(ms) => format!("{} held again only after {}", c.name, secs(ms)),
                None => format!("{} did not hold again ({})", c.name, c.last_detail),
            })
            .collect();
        if late.is_empty() {
            let slowest = self
                .checks
                .iter()
                .filter_map(|c| c.recovery_ms.map(|ms| (ms, c.name.as_str())))
                .max();
            self.verdict = HypothesisVerdict::Passed;
            self.reason = match slowest {
                Some((ms, name)) => format!(
                    "every check held before injection and again within recoveryWithin {within} (slowest: {name}, {})",
                    secs(ms)
                ),
                None => format!("every check held before injection and again within {within}"),
            };
        } else {
            self.verdict = HypothesisVerdict::Failed;
            self.reason = format!(
                "not recovered within recoveryWithin {within} after the revert: {}",
                late.join("; ")
            );
        }
    }

    /// Ends an undecided hypothesis as failed (the run could not watch recovery).
    pub fn fail(&mut self, reason: impl Into<String>) {
        if self.verdict == HypothesisVerdict::Pending {
            self.verdict = HypothesisVerdict::Failed;
            self.reason = reason.into();
        }
    }
}

#[cfg(test)]
#[path = "steady_tests.rs"]
mod tests;
