//! The experiment document: a full valid example, JSON, defaults, and a table of invalid
//! documents, each refused with the field path in the message.

use std::time::Duration;

use super::*;
use crate::fault::{CpuFault, Fault};

const HOUR: Duration = Duration::from_secs(3600);

const FULL: &str = r#"
apiVersion: faultline.dev/v1
kind: Experiment
metadata: {name: checkout-loss}
spec:
  duration: 60s
  targets:
    agents: {names: [node-a, node-b], labels: {zone: a}}
    mode: percent
    value: 50
  faults:
    - {kind: cpu, load: 50, workers: 1}
    - {kind: memory, size: 64Mi}
  guards:
    - {name: error-rate, prometheus: {url: "http://127.0.0.1:9090", query: "sum(rate(errors[5s]))", above: 0.05, for: 2s}, onError: ignore}
    - {name: node-cpu, telemetry: {metric: cpu_busy_ratio, above: 0.95, for: 3s}}
    - {name: health, http: {url: "http://127.0.0.1:8080/healthz", expectStatus: 204, timeout: 500ms, failures: 2}}
  guardInterval: 500ms
  blastRadius: {maxTargets: 5, maxPercent: 30}
  onTargetFailure: continue
"#;

#[test]
fn a_full_document_parses() {
    let s = parse_experiment(FULL, HOUR).expect("valid");
    assert_eq!(s.name, "checkout-loss");
    assert_eq!(s.duration, Duration::from_secs(60));
    let names: Vec<&str> = s.agents.names.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(s.agents.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(s.mode, Mode::Percent(50));
    assert_eq!(s.faults.len(), 2);
    assert_eq!(
        s.faults[0].fault,
        Fault::Cpu(CpuFault {
            load_percent: 50,
            workers: 1
        })
    );
    assert_eq!(s.guards.len(), 3);
    let g = &s.guards[0];
    assert_eq!(g.on_error, OnError::Ignore);
    match &g.kind {
        GuardKind::Prometheus {
            url,
            query,
            threshold,
            hold,
            timeout,
            ..
        } => {
            assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 9090));
            assert_eq!(query, "sum(rate(errors[5s]))");
            assert_eq!(*threshold, Threshold::Above(0.05));
            assert_eq!(*hold, Duration::from_secs(2));
            assert_eq!(*timeout, Duration::from_secs(2), "default timeout");
        }
        other => panic!("expected prometheus, got {other:?}"),
    }
    assert_eq!(
        s.guards[1].kind,
        GuardKind::Telemetry {
            metric: TelemetryMetric::CpuBusyRatio,
            threshold: Threshold::Above(0.95),
            hold: Duration::from_secs(3)
        }
    );
    match &s.guards[2].kind {
        GuardKind::Http {
            url,
            expect_status,
            timeout,
            failures,
            ..
        } => {
            assert_eq!(url.path_and_query, "/healthz");
            assert_eq!(
                (*expect_status, *timeout, *failures),
                (204, Duration::from_millis(500), 2)
            );
        }
        other => panic!("expected http, got {other:?}"),
    }
    assert_eq!(s.guard_interval, Duration::from_millis(500));
    assert_eq!(s.blast_radius.max_targets, Some(5));
    assert_eq!(s.blast_radius.max_percent, Some(30.0));
    assert_eq!(s.on_target_failure, OnTargetFailure::Continue);
}

#[test]
fn json_and_defaults() {
    let json = r#"{"apiVersion": "faultline.dev/v1", "kind": "Experiment",
        "metadata": {"name": "x"},
        "spec": {"duration": "5s", "targets": {"mode": "all"},
                 "faults": [{"kind": "cpu", "load": 10}],
                 "guards": [{"name": "h", "http": {"url": "http://localhost/"}}]}}"#;
    let s = parse_experiment(json, HOUR).expect("json");
    assert_eq!(s.mode, Mode::All);
    assert!(s.agents.names.is_empty() && s.agents.labels.is_empty());
    assert_eq!(s.guard_interval, Duration::from_secs(1));
    assert_eq!(s.on_target_failure, OnTargetFailure::Abort);
    assert_eq!(s.blast_radius, BlastRadius::default());
    assert_eq!(
        s.guards[0].kind,
        GuardKind::Http {
            url: HttpUrl::parse("http://localhost/").expect("url"),
            expect_status: 200,
            timeout: Duration::from_secs(1),
            failures: 3,
            method: HttpMethod::Get,
            body: None,
            access: HttpAccess::default(),
        }
    );
    assert_eq!(s.guards[0].on_error, OnError::Abort);
}

fn doc(spec: &str) -> String {
    format!("apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: t}}\nspec:\n{spec}")
}

const OK_SPEC: &str =
    "  duration: 10s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 10}]\n";

fn with_guard(g: &str) -> String {
    doc(&format!("{OK_SPEC}  guards: [{g}]\n"))
}

#[test]
fn invalid_documents_name_the_field_path() {
    let cases: Vec<(String, &str)> = vec![
        ("kind: Experiment\nmetadata: {name: t}\n".into(), "apiVersion: is required"),
        (doc(OK_SPEC).replace("faultline.dev/v1", "faultline.dev/v2"), "apiVersion: \"faultline.dev/v2\" is not supported"),
        (doc(OK_SPEC).replace("kind: Experiment", "kind: Chaos"), "kind: \"Chaos\" is not supported"),
        (doc(OK_SPEC).replace("name: t", "name: Bad_Name"), "metadata.name: \"Bad_Name\" is invalid"),
        (doc(OK_SPEC).replace("name: t", "nam: t"), "metadata.nam: unknown field `nam`"),
        (doc(&format!("{OK_SPEC}  colour: red\n")), "spec.colour: unknown field `colour`"),
        (doc("  targets: {mode: all}\n  faults: [{kind: cpu, load: 10}]\n"), "spec.duration: is required"),
        (doc(&OK_SPEC.replace("10s", "2h")), "spec.duration: 2h is outside the allowed range 1s..=1h"),
        (doc(&OK_SPEC.replace("10s", "0s")), "spec.duration: 0s is outside the allowed range 1s..=1h"),
        (doc(&OK_SPEC.replace("10s", "soon")), "spec.duration: \"soon\" is not a duration"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: some}")), "spec.targets.mode: \"some\" is not a mode"),
        (doc(&OK_SPEC.replace("{mode: all}", "{agents: {}}")), "spec.targets.mode: is required"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: percent, value: 150}")), "spec.targets.value: 150 is outside 1..=100"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: percent}")), "spec.targets.value: is required with mode percent"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: fixed, value: 0}")), "spec.targets.value: 0 is outside 1..=10000"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: one, value: 2}")), "spec.targets.value: mode one takes no value"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: all, agents: {}, pods: {namespace: shop}}")), "spec.targets: give agents or pods, not both"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: all, agents: {names: [Node_A]}}")), "spec.targets.agents.names[0]: node name \"Node_A\" is invalid"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: all, agents: {names: [a, a]}}")), "spec.targets.agents.names[1]: \"a\" is listed twice"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: all, agents: {labels: {\"-z\": a}}}")), "spec.targets.agents.labels: label key \"-z\" is invalid"),
        (doc(&OK_SPEC.replace("{mode: all}", "{mode: all, agents: {nodes: [a]}}")), "spec.targets.agents.nodes: unknown field `nodes`"),
        (doc("  duration: 10s\n  targets: {mode: all}\n"), "spec.faults: has 0 faults; give 1..=16"),
        (doc(&OK_SPEC.replace("[{kind: cpu, load: 10}]", "[{kind: cpu, load: 10}, {kind: cpu, load: 150}]")), "spec.faults[1].load: 150 is outside 1..=100"),
        (doc(&OK_SPEC.replace("[{kind: cpu, load: 10}]", "[{load: 10}]")), "spec.faults[0].kind: is required"),
        (doc(&OK_SPEC.replace("load: 10", "lod: 10")), "spec.faults[0].lod: unknown field `lod`"),
        (doc(&OK_SPEC.replace("[{kind: cpu, load: 10}]", format!("[{}]", vec!["{kind: cpu, load: 1}"; 17].join(", ")).as_str())), "spec.faults: has 17 faults; give 1..=16"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090\", query: up, above: 1, for: 2h}}"), "spec.guards[0].prometheus.for: 2h is outside the allowed range 0s..=1h"),
        (with_guard("{name: g, prometheus: {url: \"ftp://p:9090\", query: up, above: 1}}"), "spec.guards[0].prometheus.url: \"ftp://p:9090\" is not an http:// or https:// URL"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090\", query: up, above: 1, tls: {insecureSkipVerify: true}}}"), "spec.guards[0].prometheus.tls: applies to https:// URLs only"),
        (with_guard("{name: g, prometheus: {url: \"https://p\", query: up, above: 1, tls: {insecureSkipVerify: true, caFile: /ca.pem}}}"), "spec.guards[0].prometheus.tls: give caFile"),
        (with_guard("{name: g, prometheus: {url: \"https://p\", query: up, above: 1, tls: {caFile: ca.pem}}}"), "spec.guards[0].prometheus.tls.caFile: \"ca.pem\" is not an absolute file path"),
        (with_guard("{name: g, prometheus: {url: \"https://p\", query: up, above: 1, auth: {}}}"), "spec.guards[0].prometheus.auth: needs exactly one of bearerTokenFile or basicAuth"),
        (with_guard("{name: g, prometheus: {url: \"https://p\", query: up, above: 1, auth: {basicAuth: {username: u}}}}"), "spec.guards[0].prometheus.auth.basicAuth.passwordFile: is required"),
        (with_guard("{name: g, prometheus: {url: \"https://p\", query: up, above: 1, auth: {basicAuth: {username: u, password: x}}}}"), "spec.guards[0].prometheus.auth.basicAuth.password: unknown field `password`"),
        (with_guard("{name: g, http: {url: \"http://s/\", headers: {Authorization: Bearer x}}}"), "spec.guards[0].http.headers.Authorization: may not be set here"),
        (with_guard("{name: g, http: {url: \"http://s/\", headers: {\"bad name\": x}}}"), "spec.guards[0].http.headers.bad name: is not a valid header name"),
        (with_guard("{name: g, http: {url: \"http://s/\", method: TRACE}}"), "spec.guards[0].http.method: \"TRACE\" is not allowed; use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        (with_guard("{name: g, http: {url: \"http://s/\", body: x}}"), "spec.guards[0].http.body: a GET request takes no body"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090\", query: up}}"), "spec.guards[0].prometheus: needs exactly one of above or below"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090\", query: up, above: 1, below: 0}}"), "spec.guards[0].prometheus: needs exactly one of above or below"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090\", above: 1}}"), "spec.guards[0].prometheus.query: is required"),
        (with_guard("{name: g, prometheus: {url: \"http://p:9090?x=1\", query: up, above: 1}}"), "spec.guards[0].prometheus.url: is the Prometheus base URL"),
        (with_guard("{name: g, telemetry: {metric: cpu_busy_ratio, above: 95}}"), "spec.guards[0].telemetry.above: 95 is outside 0..=1 (a ratio, not a percent)"),
        (with_guard("{name: g, telemetry: {metric: cpu_percent, above: 0.5}}"), "spec.guards[0].telemetry.metric: \"cpu_percent\" is not a telemetry metric"),
        (with_guard("{name: g, http: {url: \"http://x/\", expectStatus: 700}}"), "spec.guards[0].http.expectStatus: 700 is outside 100..=599"),
        (with_guard("{name: g, http: {url: \"http://x/\", failures: 0}}"), "spec.guards[0].http.failures: 0 is outside 1..=100"),
        (with_guard("{name: g, http: {url: \"http://x/\", timeout: 5m}}"), "spec.guards[0].http.timeout: 5m is outside the allowed range 10ms..=1m"),
        (with_guard("{name: g, http: {url: \"http://x/\"}, onError: ignore}"), "spec.guards[0].onError: does not apply to http probes"),
        (with_guard("{name: g, telemetry: {metric: load1, above: 4}, onError: retry}"), "spec.guards[0].onError: \"retry\" is not allowed; use abort or ignore"),
        (with_guard("{name: g}"), "spec.guards[0]: needs exactly one of prometheus, telemetry or http"),
        (with_guard("{name: G!, telemetry: {metric: load1, above: 4}}"), "spec.guards[0].name: \"G!\" is invalid"),
        (with_guard("{name: g, telemetry: {metric: load1, above: 4}}, {name: g, telemetry: {metric: load1, above: 5}}"), "spec.guards[1].name: \"g\" is already the name of spec.guards[0]"),
        (with_guard("{name: g, telemetry: {metric: load1, above: 4, window: 5s}}"), "spec.guards[0].telemetry.window: unknown field `window`"),
        (doc(&format!("{OK_SPEC}  guardInterval: 10ms\n")), "spec.guardInterval: 10ms is outside the allowed range 100ms..=1m"),
        (doc(&format!("{OK_SPEC}  blastRadius: {{maxTargets: 0}}\n")), "spec.blastRadius.maxTargets: 0 is outside 1..=10000"),
        (doc(&format!("{OK_SPEC}  blastRadius: {{maxPercent: 120}}\n")), "spec.blastRadius.maxPercent: 120 is outside 1..=100"),
        (doc(&format!("{OK_SPEC}  blastRadius: {{max: 1}}\n")), "spec.blastRadius.max: unknown field `max`"),
        (doc(&format!("{OK_SPEC}  onTargetFailure: retry\n")), "spec.onTargetFailure: \"retry\" is not allowed; use abort or continue"),
    ];
    assert!(cases.len() >= 20);
    let mut wrong = Vec::new();
    for (text, want) in &cases {
        let err = parse_experiment(text, HOUR).expect_err(text).to_string();
        if !err.starts_with(want) {
            wrong.push(format!(
                "document:\n{text}\nexpected an error starting with:\n  {want}\ngot:\n  {err}\n"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases failed:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
