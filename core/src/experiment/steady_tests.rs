//! The hypothesis document, holding judgements and the verdict with recovery times.

use super::*;
use crate::experiment::parse_experiment;

const HOUR: Duration = Duration::from_secs(3600);

fn doc(steady: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: t}}\nspec:\n  duration: 10s\n  targets: {{mode: all}}\n  faults: [{{kind: cpu, load: 10}}]\n  guards: [{{name: g, http: {{url: 'http://127.0.0.1:1/'}}}}]\n{steady}"
    )
}

fn steady(text: &str) -> SteadyState {
    parse_experiment(&doc(text), HOUR)
        .expect("valid")
        .steady_state
        .expect("steadyState")
}

fn refused(text: &str) -> String {
    parse_experiment(&doc(text), HOUR)
        .expect_err("refused")
        .to_string()
}

#[test]
fn document_defaults_and_refusals() {
    let s = steady("  steadyState:\n    checks:\n      - {name: ok, http: {url: 'http://127.0.0.1:8080/healthz'}}\n");
    assert_eq!(s.recovery_within, DEFAULT_RECOVERY_WITHIN);
    assert_eq!(s.checks[0].name, "ok");
    let s = steady("  steadyState:\n    recoveryWithin: 30s\n    checks:\n      - {name: err, prometheus: {url: 'https://p:9090', query: 'up', below: 1, tls: {caFile: /etc/ca.pem}, auth: {basicAuth: {username: u, passwordFile: /etc/pw}}}}\n");
    assert_eq!(s.recovery_within, Duration::from_secs(30));
    let table = [
        ("  steadyState: {checks: []}\n", "spec.steadyState.checks: has 0 checks; give 1..=16"),
        ("  steadyState: {recoveryWithin: 2h, checks: [{name: a, http: {url: 'http://x/'}}]}\n", "spec.steadyState.recoveryWithin"),
        ("  steadyState: {checks: [{name: a, http: {url: 'http://x/'}}, {name: a, http: {url: 'http://y/'}}]}\n", "spec.steadyState.checks[1].name: \"a\" is already the name of spec.steadyState.checks[0]"),
        ("  steadyState: {checks: [{name: g, http: {url: 'http://x/'}}]}\n", "spec.steadyState.checks[0].name: \"g\" is already the name of a guard"),
        ("  steadyState: {checks: [{name: a, onError: ignore, http: {url: 'http://x/'}}]}\n", "spec.steadyState.checks[0].onError: does not apply to steady-state checks"),
        ("  steadyState: {checks: [{name: a, http: {url: 'http://x/', failures: 2}}]}\n", "spec.steadyState.checks[0].http.failures: does not apply"),
        ("  steadyState: {checks: [{name: a, prometheus: {url: 'http://x/', query: up, above: 1, for: 5s}}]}\n", "spec.steadyState.checks[0].prometheus.for: does not apply"),
        ("  steadyState: {checks: [{name: a, http: {url: 'http://x/'}}], extra: 1}\n", "unknown field `extra`"),
    ];
    for (text, want) in table {
        let e = refused(text);
        assert!(e.contains(want), "{text}: {e}");
    }
}

fn check(kind: &str) -> Guard {
    steady(&format!(
        "  steadyState:\n    checks: [{{name: c, {kind}}}]\n"
    ))
    .checks[0]
        .clone()
}

#[test]
fn holding_is_judged_per_observation() {
    let p = check("prometheus: {url: 'http://p/', query: up, above: 0.05}");
    assert!(holds(&p, &Observation::Values(vec![0.01, 0.02])).holds);
    let h = holds(&p, &Observation::Values(vec![0.01, 0.2]));
    assert_eq!((h.holds, h.value), (false, Some(0.2)));
    assert_eq!(h.detail, "0.2 above 0.05");
    let h = holds(&p, &Observation::Values(vec![]));
    assert!(!h.holds && h.detail.starts_with("no data"), "{h:?}");
    let h = holds(&p, &Observation::Error("HTTP 401".into()));
    assert_eq!(h.detail, "cannot be evaluated: HTTP 401");

    let t = check("telemetry: {metric: cpu_busy_ratio, above: 0.9}");
    let ok = Observation::PerTarget(vec![("a".into(), Some(0.1)), ("b".into(), Some(0.5))]);
    let h = holds(&t, &ok);
    assert!(h.holds && h.detail.contains("0.5 on b"), "{h:?}");
    let gap = Observation::PerTarget(vec![("a".into(), Some(0.1)), ("b".into(), None)]);
    assert!(
        !holds(&t, &gap).holds,
        "a target without data does not hold"
    );

    let w = check("http: {url: 'http://s/healthz', expectStatus: 204}");
    assert!(holds(&w, &Observation::Probe(Ok(204))).holds);
    let h = holds(&w, &Observation::Probe(Ok(503)));
    assert_eq!(
        (h.holds, h.detail.as_str()),
        (false, "status 503, expected 204")
    );
    assert!(!holds(&w, &Observation::Probe(Err("refused".into()))).holds);
}

fn two_checks() -> Hypothesis {
    let s = steady("  steadyState:\n    recoveryWithin: 10s\n    checks:\n      - {name: a, http: {url: 'http://s/'}}\n      - {name: b, http: {url: 'http://s/'}}\n");
    Hypothesis::new(&s)
}

fn held(holds: bool) -> Held {
    Held {
        holds,
        value: Some(if holds { 200.0 } else { 503.0 }),
        detail: if holds {
            "status 200 as expected".into()
        } else {
            "status 503, expected 200".into()
        },
    }
}

#[test]
fn before_injection_names_the_check_that_did_not_hold() {
    let mut h = two_checks();
    h.observe_before(0, &held(true));
    h.observe_before(1, &held(false));
    let e = h.judge_before().expect_err("b failed");
    assert_eq!(
        e,
        "steady-state check b (http): status 503, expected 200 did not hold before injection, so nothing was injected"
    );
    assert_eq!(h.verdict, HypothesisVerdict::Failed);
    let mut h = two_checks();
    h.observe_before(0, &held(true));
    h.observe_before(1, &held(true));
    assert_eq!(h.judge_before(), Ok(()));
    assert_eq!(h.verdict, HypothesisVerdict::Pending);
}

#[test]
fn recovery_time_is_from_the_revert_to_the_first_hold() {
    let mut h = two_checks();
    h.start_recovery(1_000);
    assert_eq!(h.recovery_deadline(), 11_000);
    h.observe_recovery(0, 1_200, &held(true));
    h.observe_recovery(1, 1_200, &held(false));
    assert!(!h.all_recovered());
    h.observe_recovery(1, 4_200, &held(true));
    h.observe_recovery(1, 4_700, &held(false));
    assert!(h.all_recovered());
    h.conclude();
    assert_eq!(h.checks[0].recovery_ms, Some(200));
    assert_eq!(
        h.checks[1].recovery_ms,
        Some(3_200),
        "the first hold counts"
    );
    assert_eq!(h.verdict, HypothesisVerdict::Passed);
    assert!(h.reason.contains("slowest: b, 3.2 s"), "{}", h.reason);

    let mut h = two_checks();
    h.start_recovery(1_000);
    h.observe_recovery(0, 1_500, &held(true));
    h.observe_recovery(1, 11_000, &held(false));
    h.conclude();
    assert_eq!(h.verdict, HypothesisVerdict::Failed);
    assert_eq!(
        h.reason,
        "not recovered within recoveryWithin 10s after the revert: b did not hold again (status 503, expected 200)"
    );
    let json = serde_json::to_value(&h).expect("json");
    assert_eq!(json["verdict"], "failed");
    assert_eq!(json["checks"][0]["recovery_ms"], 500);
    assert!(json["checks"][1]["recovery_ms"].is_null());
}
