//! SLO guards, validated: Prometheus instant queries, agent telemetry thresholds and HTTP
//! probes. Their document form is parsed in [`super::guard_doc`].

use std::fmt;
use std::time::Duration;

pub use super::access::{HttpAccess, HttpAuth, HttpMethod, TlsOptions};
pub use super::url::HttpUrl;

/// `above` or `below` a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Above(f64),
    Below(f64),
}

impl Threshold {
    /// True when `value` violates the threshold (strictly above / below).
    pub fn violated_by(self, value: f64) -> bool {
        match self {
            Threshold::Above(t) => value > t,
            Threshold::Below(t) => value < t,
        }
    }

    /// The worse of two observations: the larger for `above`, the smaller for `below`.
    pub fn worse(self, a: f64, b: f64) -> f64 {
        match self {
            Threshold::Above(_) => a.max(b),
            Threshold::Below(_) => a.min(b),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Above(v) => write!(f, "above {v}"),
            Threshold::Below(v) => write!(f, "below {v}"),
        }
    }
}

/// A metric from the agents' telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryMetric {
    CpuBusyRatio,
    MemoryUsedRatio,
    Load1,
    PsiCpuSomeAvg10,
    PsiMemorySomeAvg10,
    PsiIoSomeAvg10,
}

impl TelemetryMetric {
    pub const ALL: [TelemetryMetric; 6] = [
        TelemetryMetric::CpuBusyRatio,
        TelemetryMetric::MemoryUsedRatio,
        TelemetryMetric::Load1,
        TelemetryMetric::PsiCpuSomeAvg10,
        TelemetryMetric::PsiMemorySomeAvg10,
        TelemetryMetric::PsiIoSomeAvg10,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TelemetryMetric::CpuBusyRatio => "cpu_busy_ratio",
            TelemetryMetric::MemoryUsedRatio => "memory_used_ratio",
            TelemetryMetric::Load1 => "load1",
            TelemetryMetric::PsiCpuSomeAvg10 => "psi_cpu_some_avg10",
            TelemetryMetric::PsiMemorySomeAvg10 => "psi_memory_some_avg10",
            TelemetryMetric::PsiIoSomeAvg10 => "psi_io_some_avg10",
        }
    }

    /// The values the metric can take, for threshold checks.
    pub(crate) fn range(self) -> (f64, f64, &'static str) {
        match self {
            TelemetryMetric::CpuBusyRatio | TelemetryMetric::MemoryUsedRatio => {
                (0.0, 1.0, "0..=1 (a ratio, not a percent)")
            }
            TelemetryMetric::Load1 => (0.0, 1e6, "0..=1000000"),
            _ => (0.0, 100.0, "0..=100 (PSI avg10 is a percent)"),
        }
    }
}

/// What a guard that cannot be evaluated does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Abort,
    Ignore,
}

/// What a guard watches.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardKind {
    Prometheus {
        url: HttpUrl,
        query: String,
        threshold: Threshold,
        hold: Duration,
        timeout: Duration,
        access: HttpAccess,
    },
    Telemetry {
        metric: TelemetryMetric,
        threshold: Threshold,
        hold: Duration,
    },
    Http {
        url: HttpUrl,
        expect_status: u16,
        timeout: Duration,
        failures: u32,
        method: HttpMethod,
        body: Option<String>,
        access: HttpAccess,
    },
}

impl GuardKind {
    /// `prometheus`, `telemetry` or `http` (the metric label).
    pub fn type_name(&self) -> &'static str {
        match self {
            GuardKind::Prometheus { .. } => "prometheus",
            GuardKind::Telemetry { .. } => "telemetry",
            GuardKind::Http { .. } => "http",
        }
    }
}

/// A validated guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    pub name: String,
    pub kind: GuardKind,
    pub on_error: OnError,
}

impl Guard {
    /// One line for people: `prometheus <query> above 0.05 for 2s`.
    pub fn describe(&self) -> String {
        let hold = |d: &Duration| {
            if d.is_zero() {
                String::new()
            } else {
                format!(" for {}", humantime::format_duration(*d))
            }
        };
        match &self.kind {
            GuardKind::Prometheus {
                url,
                query,
                threshold,
                hold: h,
                access,
                ..
            } => format!(
                "prometheus {url} `{query}` {threshold}{}{}",
                hold(h),
                access.describe()
            ),
            GuardKind::Telemetry {
                metric,
                threshold,
                hold: h,
            } => format!("telemetry {} {threshold}{} on any target", metric.as_str(), hold(h)),
            GuardKind::Http {
                url,
                expect_status,
                failures,
                timeout,
                method,
                body,
                access,
            } => format!(
                "http {method} {url}{} expects {expect_status} within {}, breach after {failures} failure(s) in a row{}",
                body.as_ref().map_or(String::new(), |b| format!(" ({} byte body)", b.len())),
                humantime::format_duration(*timeout),
                access.describe()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert!(Threshold::Above(0.5).violated_by(0.6));
        assert!(!Threshold::Above(0.5).violated_by(0.5));
        assert!(Threshold::Below(10.0).violated_by(9.0));
        assert_eq!(Threshold::Below(1.0).worse(3.0, 2.0), 2.0);
        assert_eq!(Threshold::Above(1.0).worse(3.0, 2.0), 3.0);
    }
}
