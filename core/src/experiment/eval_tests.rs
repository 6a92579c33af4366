//! Guard decisions: holds, Prometheus values and no data, telemetry per target, HTTP failures.

use super::*;
use crate::experiment::guard::{HttpUrl, TelemetryMetric};

fn guard(kind: GuardKind, on_error: OnError) -> GuardState {
    GuardState::new(Guard {
        name: "g".into(),
        kind,
        on_error,
    })
}

fn prom(above: f64, hold_s: u64, on_error: OnError) -> GuardState {
    guard(
        GuardKind::Prometheus {
            url: HttpUrl::parse("http://127.0.0.1:9090").expect("url"),
            query: "up".into(),
            threshold: Threshold::Above(above),
            hold: Duration::from_secs(hold_s),
            timeout: Duration::from_secs(2),
            access: Default::default(),
        },
        on_error,
    )
}

#[test]
fn hold_needs_the_whole_duration_without_a_break() {
    let mut h = Hold::new(Duration::from_secs(2));
    assert!(!h.observe(0, true));
    assert!(!h.observe(1000, true));
    assert!(!h.observe(1500, false), "a good sample starts over");
    assert!(!h.observe(2000, true));
    assert!(!h.observe(3999, true));
    assert!(h.observe(4000, true));
    let mut zero = Hold::new(Duration::ZERO);
    assert!(zero.observe(5, true));
}

#[test]
fn prometheus_values_no_data_and_errors() {
    let mut g = prom(0.05, 2, OnError::Abort);
    let v = g.observe(0, Observation::Values(vec![0.01, 0.2]));
    assert_eq!(
        (v.outcome, v.value),
        (Outcome::Ok, Some(0.2)),
        "worst series, waiting"
    );
    assert!(v.detail.contains("waiting for 2s"), "{}", v.detail);
    let v = g.observe(1000, Observation::Values(vec![]));
    assert_eq!(v.outcome, Outcome::NoData);
    assert!(v.detail.starts_with("no data"), "{}", v.detail);
    g.observe(2000, Observation::Values(vec![0.3]));
    assert_eq!(
        g.observe(3000, Observation::Values(vec![0.3])).outcome,
        Outcome::Ok
    );
    let v = g.observe(4000, Observation::Values(vec![f64::NAN, 0.9]));
    assert_eq!((v.outcome, v.value), (Outcome::Breached, Some(0.9)));
    assert_eq!(v.detail, "0.9000 above 0.05 for 2s: breached");

    let v = g.observe(5000, Observation::Error("connection refused".into()));
    assert_eq!(v.outcome, Outcome::Error { aborts: true });
    assert!(v.outcome.aborts());
    let mut ignore = prom(0.05, 0, OnError::Ignore);
    let v = ignore.observe(0, Observation::Error("connection refused".into()));
    assert_eq!(v.outcome, Outcome::Error { aborts: false });
    assert!(!v.outcome.aborts());
    assert!(
        v.detail.ends_with("ignored (onError: ignore)"),
        "{}",
        v.detail
    );
}

#[test]
fn telemetry_breaches_when_any_target_holds_a_violation() {
    let mut g = guard(
        GuardKind::Telemetry {
            metric: TelemetryMetric::CpuBusyRatio,
            threshold: Threshold::Above(0.9),
            hold: Duration::from_secs(1),
        },
        OnError::Abort,
    );
    let obs = |a: f64, b: Option<f64>| {
        Observation::PerTarget(vec![("node-a".into(), Some(a)), ("node-b".into(), b)])
    };
    let v = g.observe(0, obs(0.95, Some(0.1)));
    assert_eq!((v.outcome, v.value), (Outcome::Ok, Some(0.95)));
    // node-a dips: its hold starts over, so node-b (above since 1000) breaches first.
    g.observe(1000, obs(0.5, Some(0.97)));
    let v = g.observe(2000, obs(0.99, Some(0.96)));
    assert_eq!((v.outcome, v.value), (Outcome::Breached, Some(0.96)));
    assert_eq!(v.detail, "0.9600 on node-b above 0.9 for 1s: breached");
    let v = g.observe(3000, Observation::PerTarget(vec![("node-a".into(), None)]));
    assert_eq!(v.outcome, Outcome::Error { aborts: true });
    assert!(
        v.detail
            .contains("no target has a fresh cpu_busy_ratio value (node-a)"),
        "{}",
        v.detail
    );
}

#[test]
fn http_breaches_after_consecutive_failures() {
    let mut g = guard(
        GuardKind::Http {
            url: HttpUrl::parse("http://127.0.0.1:8080/healthz").expect("url"),
            expect_status: 200,
            timeout: Duration::from_secs(1),
            failures: 2,
            method: Default::default(),
            body: None,
            access: Default::default(),
        },
        OnError::Abort,
    );
    assert_eq!(
        g.observe(0, Observation::Probe(Ok(500))).outcome,
        Outcome::Ok
    );
    assert_eq!(
        g.observe(1, Observation::Probe(Ok(200))).outcome,
        Outcome::Ok
    );
    assert_eq!(
        g.observe(2, Observation::Probe(Err("timed out after 1s".into())))
            .outcome,
        Outcome::Ok
    );
    let v = g.observe(3, Observation::Probe(Ok(503)));
    assert_eq!((v.outcome, v.value), (Outcome::Breached, Some(503.0)));
    assert_eq!(
        v.detail,
        "status 503, expected 200: 2 of 2 failure(s) in a row; breached"
    );
}
