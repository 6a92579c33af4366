//! Experiment documents with `spec.targets.pods`: a valid one, and a table of invalid ones,
//! each refused with the field path.

use std::time::Duration;

use super::*;
use crate::fault::{Fault, ProcessAction, ProcessSelector, Target};

const HOUR: Duration = Duration::from_secs(3600);

fn doc(targets: &str, faults: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: pods}}\nspec:\n  \
         duration: 30s\n  targets: {targets}\n  faults: {faults}\n"
    )
}

#[test]
fn a_pod_document_parses() {
    let text = doc(
        "{pods: {namespace: shop, labelSelector: \"app=checkout\", fieldSelector: \"spec.nodeName!=node-z\", containers: [app]}, mode: percent, value: 50}",
        "[{kind: drop, probability: 0.5}, {kind: process, action: kill, signal: SIGKILL, count: 1}]",
    );
    let s = parse_experiment(&text, HOUR).expect("valid");
    let pods = s.pods.as_ref().expect("pods");
    assert_eq!(pods.namespaces, ["shop"]);
    assert_eq!(pods.label_selector.as_deref(), Some("app=checkout"));
    assert_eq!(
        pods.field_selector.as_deref(),
        Some("spec.nodeName!=node-z")
    );
    assert_eq!(pods.containers, ["app"]);
    assert_eq!(s.agents, AgentSelector::default());
    assert_eq!(s.mode, Mode::Percent(50));
    assert_eq!(s.faults[0].target, Target::Host, "aimed per pod later");
    match &s.faults[1].fault {
        Fault::Process(p) => {
            assert_eq!(p.action, ProcessAction::Kill { signal: 9 });
            assert_eq!(p.count, 1);
            assert_eq!(p.selector, ProcessSelector::Container(Default::default()));
        }
        other => panic!("expected a process fault, got {other:?}"),
    }

    let s = parse_experiment(
        &doc(
            "{pods: {namespaces: [web, shop]}, mode: all}",
            "[{kind: cpu, load: 10}]",
        ),
        HOUR,
    )
    .expect("valid");
    let pods = s.pods.expect("pods");
    assert_eq!(pods.namespaces, ["shop", "web"], "sorted");
    assert!(pods.containers.is_empty());
    assert_eq!(pods.label_selector, None);
}

#[test]
fn invalid_pod_documents_name_the_field_path() {
    let cpu = "[{kind: cpu, load: 10}]";
    let cases: Vec<(String, &str)> = vec![
        (doc("{pods: {labelSelector: app=x}, mode: all}", cpu), "spec.targets.pods.namespace: is required"),
        (doc("{pods: {namespace: shop, namespaces: [web]}, mode: all}", cpu), "spec.targets.pods: give namespace or namespaces, not both"),
        (doc("{pods: {namespaces: []}, mode: all}", cpu), "spec.targets.pods.namespaces: has 0 namespaces; give 1..=100"),
        (doc("{pods: {namespace: Shop}, mode: all}", cpu), "spec.targets.pods.namespace: \"Shop\" is not a namespace name"),
        (doc("{pods: {namespaces: [a, a]}, mode: all}", cpu), "spec.targets.pods.namespaces[1]: \"a\" is listed twice"),
        (doc("{pods: {namespace: shop, labelSelector: \"app in checkout\"}, mode: all}", cpu), "spec.targets.pods.labelSelector: \"app in checkout\" is not a label requirement"),
        (doc("{pods: {namespace: shop, fieldSelector: nodeName}, mode: all}", cpu), "spec.targets.pods.fieldSelector: \"nodeName\" is not a field requirement"),
        (doc("{pods: {namespace: shop, containers: [App]}, mode: all}", cpu), "spec.targets.pods.containers[0]: \"App\" is not a container name"),
        (doc("{pods: {namespace: shop, containers: [app, app]}, mode: all}", cpu), "spec.targets.pods.containers[1]: \"app\" is listed twice"),
        (doc("{pods: {namespace: shop, selector: app=x}, mode: all}", cpu), "spec.targets.pods.selector: unknown field `selector`"),
        (doc("{pods: {namespace: shop}}", cpu), "spec.targets.mode: is required"),
        (doc("{pods: {namespace: shop}, agents: {names: [a]}, mode: all}", cpu), "spec.targets: give agents or pods, not both"),
        (doc("{pods: {namespace: shop}, mode: all}", "[{kind: cpu, load: 10, target: {pid: 4}}]"), "spec.faults[0].target: with spec.targets.pods the selected pods are the target; leave target out"),
        (doc("{pods: {namespace: shop}, mode: all}", "[{kind: process, action: kill, selector: {name: java}}]"), "spec.faults[0].selector: with spec.targets.pods a process fault acts on the processes of the selected pods"),
        (doc("{pods: {namespace: shop}, mode: all}", "[{kind: process, action: kill, signal: 99}]"), "spec.faults[0].signal: signal 99 is outside 1..=31 and 34..=64"),
        (doc("{pods: {namespace: shop}, mode: all}", "[{kind: cpu, load: 150}]"), "spec.faults[0].load: 150 is outside 1..=100"),
    ];
    let mut wrong = Vec::new();
    for (text, want) in &cases {
        let err = parse_experiment(text, HOUR).expect_err(text).to_string();
        if !err.starts_with(want) {
            wrong.push(format!(
                "document:\n{text}\nexpected: {want}\ngot:      {err}\n"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
