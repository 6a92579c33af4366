//! Per-fault timing: `spec.faults[i].duration` holds that fault for less than the experiment
//! while the others go on; refused outside 1s..=spec.duration, on pod-kill, and on a fault
//! outside an experiment, each naming the field and the range.

use std::time::Duration;

use super::*;
use crate::fault::doc::parse_fault;

const HOUR: Duration = Duration::from_secs(3600);

fn doc(faults: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: t}}\nspec:\n  duration: 30s\n  targets: {{mode: all}}\n  faults: [{faults}]\n"
    )
}

#[test]
fn each_fault_holds_for_its_own_duration_or_the_experiments() {
    let s = parse_experiment(
        &doc("{kind: cpu, load: 10, duration: 8s}, {kind: memory, size: 1Mi}, {kind: cpu, load: 5, duration: 30s}"),
        HOUR,
    )
    .expect("valid");
    assert_eq!(s.faults.len(), 3);
    assert_eq!(s.fault_duration(0), Duration::from_secs(8));
    assert_eq!(s.fault_duration(1), Duration::from_secs(30));
    assert_eq!(s.fault_duration(2), Duration::from_secs(30));
    // A spec built without per-fault timing: every fault runs for the experiment.
    let plain = ExperimentSpec {
        fault_durations: Vec::new(),
        ..s
    };
    assert_eq!(plain.fault_duration(0), Duration::from_secs(30));
}

#[test]
fn a_bad_fault_duration_is_refused_naming_the_field_and_range() {
    let cases = [
        (
            doc("{kind: cpu, load: 10, duration: 31s}"),
            "spec.faults[0].duration: 31s is outside 1s..=30s (spec.duration)",
        ),
        (
            doc("{kind: cpu, load: 10}, {kind: cpu, load: 10, duration: 500ms}"),
            "spec.faults[1].duration: 500ms is outside 1s..=30s (spec.duration)",
        ),
        (
            doc("{kind: cpu, load: 10, duration: soon}"),
            "spec.faults[0].duration: \"soon\" is not a duration",
        ),
    ];
    for (text, want) in &cases {
        let err = parse_experiment(text, HOUR).expect_err(text).to_string();
        assert!(err.starts_with(want), "{text}\nwant {want}\ngot  {err}");
    }
}

#[test]
fn pod_kill_takes_no_duration_of_its_own() {
    let text = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: t}\nspec:\n  duration: 30s\n  targets: {mode: all, pods: {namespace: shop}}\n  faults: [{kind: pod-kill, duration: 5s}]\n";
    let err = parse_experiment(text, HOUR)
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("spec.faults[0].duration: pod-kill runs for the experiment's duration"),
        "{err}"
    );
}

#[test]
fn a_fault_outside_an_experiment_refuses_duration() {
    let err = parse_fault("kind: cpu\nload: 10\nduration: 5s\n")
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("duration: a per-fault duration belongs to a fault of an experiment"),
        "{err}"
    );
}
