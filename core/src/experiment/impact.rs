//! The impact of a run on what its guards and checks watch, from their recorded observations:
//! the value before, at the peak of, and after the faults; the time from the first fault
//! applied to the first unhealthy observation; the time from the last revert to healthy again;
//! and a short list of findings in words. Rule-based and deterministic: the same observations
//! always give the same findings.

use serde::{Deserialize, Serialize};

use super::steady::{Hypothesis, HypothesisVerdict};

/// One recorded observation of a guard or check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at_unix_ms: i64,
    pub value: Option<f64>,
    /// Within its threshold (or the expected status); `None` when not judged (an error).
    pub healthy: Option<bool>,
}

/// When the faults were in place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    /// The first ApplyFault acknowledged; 0 when nothing was applied.
    pub first_applied_unix_ms: i64,
    /// The last RevertFault acknowledged; 0 when none was.
    pub last_reverted_unix_ms: i64,
    /// For the findings: "the cpu fault on node-a", "3 fault(s) on 2 agent(s)".
    pub faults: String,
}

/// The impact on one guard or check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub name: String,
    /// `guard` or `check`.
    pub source: String,
    /// `prometheus`, `http` or `telemetry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The last value observed before the first fault was applied.
    pub before: Option<f64>,
    /// While the faults were in place: the value furthest from `before`.
    pub during: Option<f64>,
    /// The last value observed after the last revert.
    pub after: Option<f64>,
    /// Some observation during the faults was unhealthy.
    pub deviated: bool,
    /// First fault applied -> first unhealthy observation.
    pub deviation_ms: Option<u64>,
    /// Last revert acknowledged -> first healthy observation after it.
    pub recovery_ms: Option<u64>,
    pub samples_before: u32,
    pub samples_during: u32,
    pub samples_after: u32,
}

/// A number for people: whole numbers as such, others with up to 4 decimals, trailing zeros
/// dropped (`0.001`, `0.12`, `503`).
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn since(at: i64, from: i64) -> u64 {
    u64::try_from(at - from).unwrap_or(0)
}

/// Measures one guard or check from its observations (in time order).
pub fn measure(name: &str, source: &str, kind: &str, points: &[Point], w: &Window) -> Impact {
    let applied = w.first_applied_unix_ms;
    let reverted = w.last_reverted_unix_ms;
    let is_before = |p: &Point| applied == 0 || p.at_unix_ms < applied;
    let is_after = |p: &Point| reverted > 0 && p.at_unix_ms > reverted;
    let is_during = |p: &Point| !is_before(p) && !is_after(p);
    let before_pts: Vec<&Point> = points.iter().filter(|p| is_before(p)).collect();
    let during_pts: Vec<&Point> = points.iter().filter(|p| is_during(p)).collect();
    let after_pts: Vec<&Point> = points.iter().filter(|p| is_after(p)).collect();
    let before = before_pts.iter().rev().find_map(|p| p.value);
    let during = during_pts
        .iter()
        .filter_map(|p| p.value)
        .fold(None::<f64>, |best, v| match (best, before) {
            (None, _) => Some(v),
            (Some(b), Some(base)) if (v - base).abs() > (b - base).abs() => Some(v),
            (Some(b), None) if v > b => Some(v),
            (b, _) => b,
        });
    let first_bad = during_pts.iter().find(|p| p.healthy == Some(false));
    let recovery_ms = if reverted > 0 {
        after_pts
            .iter()
            .find(|p| p.healthy == Some(true))
            .map(|p| since(p.at_unix_ms, reverted))
    } else {
        None
    };
    Impact {
        name: name.to_string(),
        source: source.to_string(),
        kind: kind.to_string(),
        before,
        during,
        after: after_pts.iter().rev().find_map(|p| p.value),
        deviated: first_bad.is_some(),
        deviation_ms: first_bad.map(|p| since(p.at_unix_ms, applied)),
        recovery_ms,
        samples_before: before_pts.len() as u32,
        samples_during: during_pts.len() as u32,
        samples_after: after_pts.len() as u32,
    }
}

/// A change is worth a word when it moves by more than 10% (or from zero).
fn moved(before: f64, during: f64) -> bool {
    let d = (during - before).abs();
    if before == 0.0 {
        d > 1e-9
    } else {
        d / before.abs() > 0.1
    }
}

/// The findings of a run, one sentence each: per guard and check what the faults did to it
/// and how it recovered, then the hypothesis.
pub fn findings(impacts: &[Impact], hypothesis: Option<&Hypothesis>, w: &Window) -> Vec<String> {
    let mut out = Vec::new();
    if w.first_applied_unix_ms == 0 {
        out.push("no fault was applied, so nothing was measured under fault".to_string());
    }
    for i in impacts {
        let who = format!("{} ({} {})", i.name, i.kind, i.source);
        let within_note = hypothesis
            .filter(|_| i.source == "check")
            .map(|h| {
                let within = humantime::format_duration(std::time::Duration::from_millis(
                    h.recovery_within_ms,
                ));
                let c = h.checks.iter().find(|c| c.name == i.name);
                match c.and_then(|c| c.recovery_ms) {
                    Some(ms) if ms <= h.recovery_within_ms => {
                        format!("; recoveryWithin {within} met")
                    }
                    _ => format!("; recoveryWithin {within} missed"),
                }
            })
            .unwrap_or_default();
        let recovery = match (i.recovery_ms, i.samples_after, w.last_reverted_unix_ms) {
            (_, _, 0) => String::new(),
            (Some(ms), _, _) => format!("; healthy again {} after the revert", secs(ms)),
            (None, 0, _) => "; not observed after the revert".to_string(),
            (None, _, _) => {
                "; still unhealthy at its last observation after the revert".to_string()
            }
        };
        let sentence = match (i.before, i.during) {
            _ if w.first_applied_unix_ms == 0 => continue,
            (_, None) => format!("{who}: no value observed while the faults were in place{recovery}"),
            (Some(b), Some(d)) if i.deviated => {
                let verb = if d > b { "rose" } else if d < b { "fell" } else { "stayed" };
                format!(
                    "{who} {verb} from {} to {} within {} of the first fault applied ({}){recovery}{within_note}",
                    fmt_num(b),
                    fmt_num(d),
                    secs(i.deviation_ms.unwrap_or(0)),
                    w.faults
                )
            }
            (None, Some(d)) if i.deviated => format!(
                "{who} was unhealthy at {} within {} of the first fault applied ({}); no value before the faults to compare{recovery}{within_note}",
                fmt_num(d),
                secs(i.deviation_ms.unwrap_or(0)),
                w.faults
            ),
            (Some(b), Some(d)) if moved(b, d) => format!(
                "{who} moved from {} to {} under the faults but stayed within its threshold{recovery}{within_note}",
                fmt_num(b),
                fmt_num(d)
            ),
            (Some(b), Some(d)) => format!(
                "{who} stayed healthy and steady ({} before, {} at the peak){recovery}{within_note}",
                fmt_num(b),
                fmt_num(d)
            ),
            (None, Some(d)) => format!(
                "{who} stayed healthy under the faults ({} at the peak; no value before){recovery}{within_note}",
                fmt_num(d)
            ),
        };
        out.push(sentence);
    }
    if let Some(h) = hypothesis {
        let verdict = match h.verdict {
            HypothesisVerdict::Passed => "passed",
            HypothesisVerdict::Failed => "FAILED",
            HypothesisVerdict::Pending => "undecided",
        };
        out.push(format!("steady-state hypothesis {verdict}: {}", h.reason));
    }
    out
}

#[cfg(test)]
#[path = "impact_tests.rs"]
mod tests;
