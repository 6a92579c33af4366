//! Inline experiment and workflow specs (`spec.experiment`, `spec.workflow`,
//! `spec.steps[i].experiment`): the body of a document kept as written, turned into a whole
//! document with its run's name, and validated by the document's own parser with the error's
//! path placed under the field it came from.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::experiment::{parse_experiment, ExperimentSpec, API_VERSION};
use crate::fault::SpecError;

/// The whole document (`apiVersion`, `kind`, `metadata.name`, `spec`) of a run named `name`.
pub fn document(kind: &str, name: &str, spec: &Value) -> String {
    let mut meta = Mapping::new();
    meta.insert("name".into(), name.into());
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), API_VERSION.into());
    doc.insert("kind".into(), kind.into());
    doc.insert("metadata".into(), Value::Mapping(meta));
    doc.insert("spec".into(), spec.clone());
    // A mapping of strings and plain values always serializes.
    serde_yaml_ng::to_string(&Value::Mapping(doc)).unwrap_or_default()
}

/// Moves an error of a generated document (`spec.faults[0].load`) under `at`
/// (`spec.steps[1].experiment.faults[0].load`).
pub fn relocate(mut e: SpecError, at: &str) -> SpecError {
    e.path = match e.path.strip_prefix("spec") {
        Some("") => at.to_string(),
        Some(rest) if rest.starts_with('.') || rest.starts_with('[') => format!("{at}{rest}"),
        _ if e.path.is_empty() || e.path == "document" => at.to_string(),
        _ => format!("{at}.{}", e.path),
    };
    e
}

/// Validates an inline experiment spec found at `at`, as the run named `name` would be.
pub fn experiment(
    name: &str,
    spec: &Value,
    at: &str,
    max_duration: Duration,
) -> Result<ExperimentSpec, SpecError> {
    if !spec.is_mapping() {
        return Err(SpecError::new(
            at,
            "must be an experiment spec (duration, targets, faults, ...)",
        ));
    }
    parse_experiment(&document("Experiment", name, spec), max_duration).map_err(|e| relocate(e, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_land_under_the_inline_field() {
        let spec: Value = serde_yaml_ng::from_str(
            "duration: 5s\ntargets: {mode: all}\nfaults: [{kind: cpu, load: 150}]",
        )
        .expect("yaml");
        let e = experiment(
            "w-a",
            &spec,
            "spec.steps[1].experiment",
            Duration::from_secs(60),
        )
        .expect_err("load 150");
        assert_eq!(e.path, "spec.steps[1].experiment.faults[0].load");
        assert!(e.message.contains("1..=100"), "{}", e.message);
    }
}

/// The inline experiment `spec` with its `duration` set to `remaining` (the rest of a step's
/// experiment run again after a graceful coordinator stop cut it short).
pub fn with_duration(spec: &Value, remaining: Duration) -> Value {
    let mut out = spec.clone();
    if let Value::Mapping(m) = &mut out {
        let ms = remaining.as_millis().max(1000);
        m.insert("duration".into(), format!("{ms}ms").into());
    }
    out
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn the_rest_of_a_step_keeps_everything_but_the_duration() {
        let spec: Value = serde_yaml_ng::from_str(
            "{duration: 30s, targets: {mode: all}, faults: [{kind: cpu, load: 50}]}",
        )
        .expect("yaml");
        let rest = with_duration(&spec, Duration::from_millis(12_345));
        let parsed = experiment(
            "gd-first",
            &rest,
            "spec.steps[0].experiment",
            Duration::from_secs(600),
        )
        .expect("valid");
        assert_eq!(parsed.duration, Duration::from_millis(12_345));
        assert_eq!(rest["faults"], spec["faults"]);
        // Never below a second, the shortest experiment.
        let short = with_duration(&spec, Duration::from_millis(10));
        assert_eq!(short["duration"], Value::from("1000ms"));
    }
}
