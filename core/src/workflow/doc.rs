//! The `kind: Workflow` document, parsed and validated into a [`WorkflowSpec`]; every error
//! names its field path (`spec.steps[2].parallel[0].name`).

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::template;
use super::*;
use crate::experiment::guard_doc::is_dns_label;
use crate::experiment::steady::{RawSteadyState, SteadyState};
use crate::experiment::GuardKind;
use crate::experiment::API_VERSION;
use crate::fault::doc::parse_document;
use crate::fault::SpecError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawWorkflow {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: Option<RawMeta>,
    pub spec: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    steps: Vec<RawStep>,
    deadline: Option<String>,
    on_step_failure: Option<String>,
    steady_state: Option<RawSteadyState>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStep {
    name: Option<String>,
    experiment: Option<Value>,
    parallel: Option<Vec<RawStep>>,
    suspend: Option<RawSuspend>,
    deadline: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuspend {
    duration: Option<String>,
    approval: Option<bool>,
}

/// Checks `apiVersion`, `kind` and `metadata.name` of any document; returns the name.
pub fn header(
    api_version: &Option<String>,
    kind: &Option<String>,
    meta_name: Option<&String>,
    want: &str,
) -> Result<String, SpecError> {
    match api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(o) => {
            return Err(SpecError::new(
                "apiVersion",
                format!("{o:?} is not supported; use {API_VERSION}"),
            ))
        }
        None => {
            return Err(SpecError::new(
                "apiVersion",
                format!("is required ({API_VERSION})"),
            ))
        }
    }
    match kind.as_deref() {
        Some(k) if k == want => {}
        Some(o) => {
            return Err(SpecError::new(
                "kind",
                format!("{o:?} is not supported here; use {want}"),
            ))
        }
        None => return Err(SpecError::new("kind", format!("is required ({want})"))),
    }
    let name = meta_name.ok_or_else(|| SpecError::new("metadata.name", "is required"))?;
    if !is_dns_label(name) {
        return Err(SpecError::new(
            "metadata.name",
            format!("{name:?} is invalid: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
        ));
    }
    Ok(name.clone())
}

/// Parses and validates a workflow document; `max_duration` is the policy's (for the
/// experiments inside).
pub fn parse_workflow(text: &str, max_duration: Duration) -> Result<WorkflowSpec, SpecError> {
    let raw: RawWorkflow = parse_document(text)?;
    let name = header(
        &raw.api_version,
        &raw.kind,
        raw.metadata.as_ref().and_then(|m| m.name.as_ref()),
        KIND,
    )?;
    let spec = raw
        .spec
        .as_ref()
        .ok_or_else(|| SpecError::new("spec", "is required (with steps)"))?;
    workflow_spec(&name, spec, "spec", max_duration)
}

/// Validates a workflow spec (the body under `spec`, or a schedule's `spec.workflow`) for the
/// workflow run named `name`; `at` is where the body sits in its document.
pub fn workflow_spec(
    name: &str,
    spec: &Value,
    at: &str,
    max_duration: Duration,
) -> Result<WorkflowSpec, SpecError> {
    let raw: RawSpec = serde_path_to_error::deserialize(spec.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let path = if path == "." {
            at.to_string()
        } else {
            format!("{at}.{path}")
        };
        SpecError::new(path, inner)
    })?;
    let field = |f: &str| format!("{at}.{f}");
    if raw.steps.is_empty() || raw.steps.len() > MAX_STEPS {
        return Err(SpecError::new(
            field("steps"),
            format!("has {} steps; give 1..={MAX_STEPS}", raw.steps.len()),
        ));
    }
    let deadline = opt_duration(&raw.deadline, &field("deadline"))?;
    let on_step_failure = match raw.on_step_failure.as_deref().map(str::trim) {
        None | Some("abort") => OnStepFailure::Abort,
        Some("continue") => OnStepFailure::Continue,
        Some(o) => {
            return Err(SpecError::new(
                field("onStepFailure"),
                format!("{o:?} is not allowed; use abort or continue"),
            ))
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for (i, s) in raw.steps.iter().enumerate() {
        let path = format!("{at}.steps[{i}]");
        steps.push(step(name, s, &path, true, &mut names, max_duration)?);
    }
    let steady_state = raw
        .steady_state
        .as_ref()
        .map(|s| steady_state(s, &field("steadyState")))
        .transpose()?;
    Ok(WorkflowSpec {
        name: name.to_string(),
        steps,
        deadline,
        on_step_failure,
        steady_state,
    })
}

/// The workflow's own hypothesis (`spec.steadyState`), validated as an experiment's is. A
/// telemetry check reads the targets of its run, and a workflow has none of its own.
fn steady_state(raw: &RawSteadyState, path: &str) -> Result<SteadyState, SpecError> {
    let s = raw.to_steady_state(path, &[])?;
    if let Some(i) = s
        .checks
        .iter()
        .position(|c| matches!(c.kind, GuardKind::Telemetry { .. }))
    {
        return Err(SpecError::new(
            format!("{path}.checks[{i}].telemetry"),
            "a workflow has no targets of its own to read telemetry from; use a prometheus or \
             http check here, or put the telemetry check in a step's experiment \
             (its spec.steadyState)",
        ));
    }
    Ok(s)
}

fn opt_duration(v: &Option<String>, path: &str) -> Result<Option<Duration>, SpecError> {
    match v {
        None => Ok(None),
        Some(_) => crate::experiment::guard_doc::duration_field(
            path,
            v,
            Duration::ZERO,
            MIN_DEADLINE,
            MAX_DEADLINE,
        )
        .map(Some),
    }
}

fn step(
    workflow: &str,
    s: &RawStep,
    path: &str,
    top: bool,
    names: &mut Vec<String>,
    max_duration: Duration,
) -> Result<Step, SpecError> {
    let at = |f: &str| format!("{path}.{f}");
    let name = s
        .name
        .clone()
        .ok_or_else(|| SpecError::new(at("name"), "is required"))?;
    if !is_dns_label(&name) {
        return Err(SpecError::new(
            at("name"),
            format!("{name:?} is invalid: use a-z, 0-9 and '-', starting and ending with a letter or digit"),
        ));
    }
    if workflow.len() + 1 + name.len() > 63 {
        return Err(SpecError::new(
            at("name"),
            format!(
                "{name:?} is too long: its experiment is named <workflow>-<step> \
                 ({workflow}-{name}), which must fit 63 characters; shorten the step or the \
                 workflow name"
            ),
        ));
    }
    if names.contains(&name) {
        return Err(SpecError::new(
            at("name"),
            format!("{name:?} is already a step name; step names are unique in a workflow"),
        ));
    }
    names.push(name.clone());
    let given = [
        s.experiment.is_some(),
        s.parallel.is_some(),
        s.suspend.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(SpecError::new(
            path,
            "give exactly one of experiment, parallel or suspend",
        ));
    }
    let deadline = opt_duration(&s.deadline, &at("deadline"))?;
    let action = if let Some(e) = &s.experiment {
        let run = format!("{workflow}-{name}");
        template::experiment(&run, e, &at("experiment"), max_duration)?;
        StepAction::Experiment(e.clone())
    } else if let Some(children) = &s.parallel {
        if !top {
            return Err(SpecError::new(
                at("parallel"),
                "parallel steps cannot be nested; put the inner steps in the outer parallel",
            ));
        }
        if children.is_empty() || children.len() > MAX_PARALLEL {
            return Err(SpecError::new(
                at("parallel"),
                format!("has {} steps; give 1..={MAX_PARALLEL}", children.len()),
            ));
        }
        let mut out = Vec::new();
        for (i, c) in children.iter().enumerate() {
            let p = format!("{path}.parallel[{i}]");
            out.push(step(workflow, c, &p, false, names, max_duration)?);
        }
        StepAction::Parallel(out)
    } else {
        let sus = s
            .suspend
            .as_ref()
            .ok_or_else(|| SpecError::new(path, "?"))?;
        match (&sus.duration, sus.approval) {
            (Some(_), Some(true)) | (None, None) | (None, Some(false)) => {
                return Err(SpecError::new(
                    at("suspend"),
                    "give either duration (e.g. 30s) or approval: true",
                ))
            }
            (Some(_), _) => {
                let d = crate::experiment::guard_doc::duration_field(
                    &at("suspend.duration"),
                    &sus.duration,
                    Duration::ZERO,
                    Duration::from_millis(1),
                    MAX_DEADLINE,
                )?;
                StepAction::Wait(d)
            }
            (None, Some(true)) => StepAction::Approval,
        }
    };
    Ok(Step {
        name,
        deadline,
        action,
    })
}
