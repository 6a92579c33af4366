//! The guard document (`spec.guards[i]`) as written, validated into a [`Guard`] with errors
//! that name the field path and the allowed range.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::access::{method_and_body, RawAccess, RawAuth, RawTls};
use super::guard::{Guard, GuardKind, HttpUrl, OnError, TelemetryMetric, Threshold};
use crate::duration;
use crate::fault::{join, SpecError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawGuard {
    pub name: Option<String>,
    pub prometheus: Option<RawPrometheus>,
    pub telemetry: Option<RawTelemetry>,
    pub http: Option<RawHttp>,
    pub on_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPrometheus {
    pub url: Option<String>,
    pub query: Option<String>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    #[serde(rename = "for")]
    pub hold: Option<String>,
    pub timeout: Option<String>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawAuth>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTelemetry {
    pub metric: Option<String>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    #[serde(rename = "for")]
    pub hold: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHttp {
    pub url: Option<String>,
    pub expect_status: Option<i64>,
    pub timeout: Option<String>,
    pub failures: Option<i64>,
    pub method: Option<String>,
    pub body: Option<String>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawAuth>,
    pub headers: Option<BTreeMap<String, String>>,
}

/// Longest `for` of a guard.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Longest PromQL query (characters).
pub const MAX_QUERY_CHARS: usize = 4096;

fn required<'a, T>(v: &'a Option<T>, path: &str, what: &str) -> Result<&'a T, SpecError> {
    v.as_ref()
        .ok_or_else(|| SpecError::new(path, format!("is required ({what})")))
}

/// Parses a duration field; a missing one takes `default`.
pub(crate) fn duration_field(
    path: &str,
    value: &Option<String>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, SpecError> {
    match value {
        None => Ok(default),
        Some(v) => duration::parse_in_range(path, v, min, max).map_err(|e| {
            let text = e.to_string();
            let message = text
                .strip_prefix(path)
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(&text)
                .to_string();
            SpecError::new(path, message)
        }),
    }
}

fn threshold(
    above: Option<f64>,
    below: Option<f64>,
    path: &str,
    range: Option<(f64, f64, &str)>,
) -> Result<Threshold, SpecError> {
    let (t, field) = match (above, below) {
        (Some(a), None) => (Threshold::Above(a), "above"),
        (None, Some(b)) => (Threshold::Below(b), "below"),
        _ => {
            return Err(SpecError::new(
                path,
                "needs exactly one of above or below (a number)",
            ))
        }
    };
    let v = match t {
        Threshold::Above(v) | Threshold::Below(v) => v,
    };
    if !v.is_finite() {
        return Err(SpecError::new(join(path, field), "must be a finite number"));
    }
    if let Some((min, max, text)) = range {
        if v < min || v > max {
            return Err(SpecError::new(
                join(path, field),
                format!("{v} is outside {text}"),
            ));
        }
    }
    Ok(t)
}

fn url(value: &Option<String>, path: &str) -> Result<HttpUrl, SpecError> {
    let text = required(value, path, "an http:// or https:// URL")?;
    HttpUrl::parse(text).map_err(|e| SpecError::new(path, e))
}

/// True for a DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

impl RawGuard {
    /// Validates one guard; `path` is `spec.guards[i]`.
    pub fn to_guard(&self, path: &str) -> Result<Guard, SpecError> {
        let at = |f: &str| join(path, f);
        let name = required(&self.name, &at("name"), "1..=63 of a-z, 0-9 and '-'")?;
        if !is_dns_label(name) {
            return Err(SpecError::new(
                at("name"),
                format!("{name:?} is invalid: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
            ));
        }
        let given = [
            self.prometheus.is_some(),
            self.telemetry.is_some(),
            self.http.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(SpecError::new(
                path,
                "needs exactly one of prometheus, telemetry or http",
            ));
        }
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let kind = if let Some(p) = &self.prometheus {
            let pp = at("prometheus");
            let query = required(&p.query, &join(&pp, "query"), "a PromQL expression")?;
            if query.trim().is_empty() || query.chars().count() > MAX_QUERY_CHARS {
                return Err(SpecError::new(
                    join(&pp, "query"),
                    format!("must be a PromQL expression of 1..={MAX_QUERY_CHARS} characters"),
                ));
            }
            let url = url(&p.url, &join(&pp, "url"))?;
            if url.path_and_query.contains('?') {
                return Err(SpecError::new(
                    join(&pp, "url"),
                    "is the Prometheus base URL (e.g. http://127.0.0.1:9090) and takes no query string",
                ));
            }
            let access = RawAccess {
                tls: &p.tls,
                auth: &p.auth,
                headers: &p.headers,
            }
            .to_access(&pp, &url)?;
            GuardKind::Prometheus {
                url,
                query: query.trim().to_string(),
                threshold: threshold(p.above, p.below, &pp, None)?,
                hold: duration_field(&join(&pp, "for"), &p.hold, secs(0), secs(0), MAX_HOLD)?,
                timeout: duration_field(
                    &join(&pp, "timeout"),
                    &p.timeout,
                    secs(2),
                    ms(100),
                    secs(30),
                )?,
                access,
            }
        } else if let Some(t) = &self.telemetry {
            let tp = at("telemetry");
            let name = required(&t.metric, &join(&tp, "metric"), "a telemetry metric")?;
            let metric = TelemetryMetric::ALL
                .into_iter()
                .find(|m| m.as_str() == name.trim())
                .ok_or_else(|| {
                    let all: Vec<&str> = TelemetryMetric::ALL.iter().map(|m| m.as_str()).collect();
                    SpecError::new(
                        join(&tp, "metric"),
                        format!(
                            "{name:?} is not a telemetry metric; use one of {}",
                            all.join(", ")
                        ),
                    )
                })?;
            GuardKind::Telemetry {
                metric,
                threshold: threshold(t.above, t.below, &tp, Some(metric.range()))?,
                hold: duration_field(&join(&tp, "for"), &t.hold, secs(0), secs(0), MAX_HOLD)?,
            }
        } else if let Some(h) = &self.http {
            let hp = at("http");
            let expect_status = match h.expect_status {
                None => 200,
                Some(s) if (100..=599).contains(&s) => s as u16,
                Some(s) => {
                    return Err(SpecError::new(
                        join(&hp, "expectStatus"),
                        format!("{s} is outside 100..=599"),
                    ))
                }
            };
            let failures = match h.failures {
                None => 3,
                Some(n) if (1..=100).contains(&n) => n as u32,
                Some(n) => {
                    return Err(SpecError::new(
                        join(&hp, "failures"),
                        format!("{n} is outside 1..=100"),
                    ))
                }
            };
            if self.on_error.is_some() {
                return Err(SpecError::new(
                    at("onError"),
                    "does not apply to http probes: every failed or timed-out request counts towards failures",
                ));
            }
            let url = url(&h.url, &join(&hp, "url"))?;
            let access = RawAccess {
                tls: &h.tls,
                auth: &h.auth,
                headers: &h.headers,
            }
            .to_access(&hp, &url)?;
            let (method, body) = method_and_body(&hp, &h.method, &h.body)?;
            GuardKind::Http {
                url,
                expect_status,
                timeout: duration_field(
                    &join(&hp, "timeout"),
                    &h.timeout,
                    secs(1),
                    ms(10),
                    secs(60),
                )?,
                failures,
                method,
                body,
                access,
            }
        } else {
            unreachable_kind()?
        };
        let on_error = match self.on_error.as_deref().map(str::trim) {
            None | Some("abort") => OnError::Abort,
            Some("ignore") => OnError::Ignore,
            Some(other) => {
                return Err(SpecError::new(
                    at("onError"),
                    format!("{other:?} is not allowed; use abort or ignore"),
                ))
            }
        };
        Ok(Guard {
            name: name.clone(),
            kind,
            on_error,
        })
    }
}

/// The count check above guarantees one kind; this keeps the code free of panics anyway.
fn unreachable_kind() -> Result<GuardKind, SpecError> {
    Err(SpecError::new(
        "spec.guards",
        "needs exactly one of prometheus, telemetry or http",
    ))
}
