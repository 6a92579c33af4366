//! The Kubernetes install as shipped in daemonset/: the alerting rules pass `promtool check
//! rules` and their unit tests, every alert and dashboard query reads metrics the code exports,
//! the Operator and Grafana manifests match their sources, the manifests hold what the install
//! needs (and their config files are accepted by the binaries), and `daemonset/validate.sh`
//! (kubernetes-validate --strict and checkov) passes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use faultline_tests::procs::require_tool;
use serde::Deserialize;
use serde_json::Value;

#[path = "manifests/capabilities.rs"]
mod capabilities;
#[path = "manifests/chart.rs"]
mod chart;
#[path = "manifests/identity.rs"]
mod identity;
#[path = "manifests/kube_api.rs"]
mod kube_api;
#[path = "manifests/kubelet.rs"]
mod kubelet;
#[path = "manifests/pods.rs"]
mod pods;
#[path = "manifests/promql.rs"]
mod promql;
#[path = "manifests/workloads.rs"]
mod workloads;

use promql::check_metrics;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every YAML document of a file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The object of `kind` named `name` in `rel`.
fn object(rel: &str, kind: &str, name: &str) -> Value {
    yaml_docs(rel)
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{rel} has no {kind} {name}"))
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn alert_rules() -> Vec<Value> {
    let rules = yaml_docs("daemonset/chart/faultline/files/faultline.rules.yaml");
    rules[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_the_alerting_rules() {
    let promtool = require_tool("promtool", "prometheus");
    let alerts = root().join("daemonset/chart/faultline/files");
    let out = run_ok(
        Command::new(&promtool).current_dir(&alerts).args([
            "check",
            "rules",
            "faultline.rules.yaml",
        ]),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    let out = run_ok(
        Command::new(&promtool).current_dir(&alerts).args([
            "test",
            "rules",
            "faultline.rules.test.yaml",
        ]),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    // The alerts the install promises exist, each is unit-tested firing, and each reads
    // metrics the code exports.
    let rules = alert_rules();
    let names: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    for required in [
        "FaultlineAgentDown",
        "FaultlineFaultPastDeadline",
        "FaultlineExperimentAborted",
        "FaultlineCoordinatorUnreachable",
    ] {
        assert!(names.contains(required), "no alert {required}: {names:?}");
    }
    let tests = yaml_docs("daemonset/chart/faultline/files/faultline.rules.test.yaml");
    let fired: BTreeSet<String> = tests[0]["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str().map(str::to_string))
        .collect();
    let untested: Vec<&String> = names.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts without a firing test: {untested:?}"
    );
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect();
    check_metrics(
        "daemonset/chart/faultline/files/faultline.rules.yaml",
        &exprs,
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&read("daemonset/chart/faultline/files/faultline.json")).unwrap_or_else(
        |e| panic!("daemonset/chart/faultline/files/faultline.json is not JSON: {e}"),
    )
}

fn exprs_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs_of(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs_of(x, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_parses_and_queries_only_metrics_the_code_exports() {
    let d = dashboard();
    assert_eq!(d["uid"], "faultline-overview");
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Active faults by kind",
        "Injections",
        "Reverts",
        "Abort latency",
        "eBPF packets",
        "Agent CPU",
        "Agent memory",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
    let mut exprs = Vec::new();
    exprs_of(&d, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    check_metrics("daemonset/chart/faultline/files/faultline.json", &exprs);
}

#[test]
fn operator_and_grafana_manifests_match_their_sources() {
    let hint = "run daemonset/generate.sh after editing the chart's files/";
    let rule = object(
        "daemonset/manifests/monitoring/prometheusrule.yaml",
        "PrometheusRule",
        "faultline",
    );
    let plain = &yaml_docs("daemonset/chart/faultline/files/faultline.rules.yaml")[0];
    assert_eq!(&rule["spec"], plain, "the PrometheusRule differs: {hint}");
    let cm = object(
        "daemonset/manifests/monitoring/grafana-dashboard.yaml",
        "ConfigMap",
        "faultline-grafana-dashboard",
    );
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        cm["data"]["faultline.json"]
            .as_str()
            .expect("data faultline.json"),
    )
    .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the dashboard ConfigMap differs: {hint}"
    );
    let monitors = yaml_docs("daemonset/manifests/monitoring/monitors.yaml");
    let kinds: Vec<&str> = monitors.iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds, ["PodMonitor", "ServiceMonitor"]);
    // The alerting rules select these job names.
    for m in &monitors {
        assert_eq!(m["spec"]["jobLabel"], "app.kubernetes.io/name");
    }
}

#[test]
fn kubernetes_validate_and_checkov_pass() {
    let script = root().join("daemonset/validate.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(2) {
        panic!("daemonset/validate.sh could not install its tools (python3 with venv and PyPI access are needed):\n{text}");
    }
    assert!(
        out.status.success(),
        "daemonset/validate.sh failed:\n{text}"
    );
    assert!(text.contains("Failed checks: 0"), "{text}");
    assert!(text.contains("==> manifests valid"), "{text}");
}
