//! The experiment document as people write it (YAML or JSON), parsed and validated into an
//! [`ExperimentSpec`]. Unknown fields are errors; every error names the full field path
//! (`spec.faults[1].load: 150 is outside 1..=100`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::guard_doc::{duration_field, is_dns_label, RawGuard};
use super::pods_doc::RawPods;
use super::steady::RawSteadyState;
use super::*;
use crate::fault::doc::{parse_document, RawFault, RawSelector, Scalar};
use crate::fault::{join, FaultSpec, SpecError};
use crate::Labels;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExperiment {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: Option<RawMetadata>,
    pub spec: Option<RawSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSpec {
    pub duration: Option<String>,
    pub targets: Option<RawTargets>,
    #[serde(default)]
    pub faults: Vec<RawFault>,
    #[serde(default)]
    pub guards: Vec<RawGuard>,
    pub guard_interval: Option<String>,
    pub blast_radius: Option<RawBlastRadius>,
    pub on_target_failure: Option<String>,
    /// The steady-state hypothesis (see [`super::steady`]).
    pub steady_state: Option<RawSteadyState>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    pub agents: Option<RawAgents>,
    /// Kubernetes pods (instead of agents).
    pub pods: Option<RawPods>,
    pub mode: Option<String>,
    pub value: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgents {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBlastRadius {
    pub max_targets: Option<Scalar>,
    pub max_percent: Option<Scalar>,
}

/// Parses and validates a document for a new experiment; `max_duration` is the policy's.
pub fn parse_experiment(text: &str, max_duration: Duration) -> Result<ExperimentSpec, SpecError> {
    let raw: RawExperiment = parse_document(text).map_err(missing_field)?;
    raw.to_spec(max_duration)
}

/// Parses a document the coordinator stored earlier, under any policy.
pub fn parse_stored_experiment(text: &str) -> Result<ExperimentSpec, SpecError> {
    parse_experiment(text, Duration::from_secs(366 * 24 * 3600))
}

/// Tidies serde's errors: drops the YAML parser's own path prefix (the error already carries
/// the full path), and names a missing field by its path (`metadata.name: is required`).
fn missing_field(mut e: SpecError) -> SpecError {
    if let Some((head, rest)) = e.message.split_once(": ") {
        if !head.is_empty() && !head.contains(' ') && e.path.starts_with(head) {
            e.message = rest.to_string();
        }
    }
    let field = e
        .message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next());
    match field {
        Some(f) => SpecError::new(join(&e.path, f), "is required"),
        None if e.path.is_empty() => SpecError::new("document", e.message),
        None => e,
    }
}

fn whole(s: &Scalar, path: &str, min: u32, max: u32) -> Result<u32, SpecError> {
    let n = match s {
        Scalar::Num(n) => *n,
        Scalar::Str(t) => t
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .map_err(|_| SpecError::new(path, format!("{t:?} is not a number ({min}..={max})")))?,
    };
    if n.fract() != 0.0 || n < f64::from(min) || n > f64::from(max) {
        return Err(SpecError::new(
            path,
            format!("{n} is outside {min}..={max} (a whole number)"),
        ));
    }
    Ok(n as u32)
}

impl RawExperiment {
    pub fn to_spec(&self, max_duration: Duration) -> Result<ExperimentSpec, SpecError> {
        match self.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(SpecError::new(
                    "apiVersion",
                    format!("{other:?} is not supported; use {API_VERSION}"),
                ))
            }
            None => {
                return Err(SpecError::new(
                    "apiVersion",
                    format!("is required ({API_VERSION})"),
                ))
            }
        }
        match self.kind.as_deref() {
            Some(KIND) => {}
            Some(other) => {
                return Err(SpecError::new(
                    "kind",
                    format!("{other:?} is not supported; use {KIND}"),
                ))
            }
            None => return Err(SpecError::new("kind", format!("is required ({KIND})"))),
        }
        let name = self
            .metadata
            .as_ref()
            .ok_or_else(|| SpecError::new("metadata", "is required (with a name)"))?
            .name
            .as_ref()
            .ok_or_else(|| SpecError::new("metadata.name", "is required"))?;
        if !is_dns_label(name) {
            return Err(SpecError::new(
                "metadata.name",
                format!("{name:?} is invalid: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
            ));
        }
        let spec = self
            .spec
            .as_ref()
            .ok_or_else(|| SpecError::new("spec", "is required"))?;
        spec.to_spec(name, max_duration)
    }
}

impl RawSpec {
    fn to_spec(&self, name: &str, max_duration: Duration) -> Result<ExperimentSpec, SpecError> {
        let duration = self
            .duration
            .as_ref()
            .ok_or_else(|| SpecError::new("spec.duration", "is required (e.g. 60s)"))?;
        let duration = duration_field(
            "spec.duration",
            &Some(duration.clone()),
            MIN_DURATION,
            MIN_DURATION,
            max_duration,
        )?;
        let targets = self
            .targets
            .as_ref()
            .ok_or_else(|| SpecError::new("spec.targets", "is required (agents and mode)"))?;
        let (agents, mode) = targets.to_selection()?;
        let pods = match &targets.pods {
            None => None,
            Some(_) if targets.agents.is_some() => {
                return Err(SpecError::new(
                    "spec.targets",
                    "give agents or pods, not both",
                ))
            }
            Some(p) => Some(p.to_selector()?),
        };
        if self.faults.is_empty() || self.faults.len() > MAX_FAULTS {
            return Err(SpecError::new(
                "spec.faults",
                format!("has {} faults; give 1..={MAX_FAULTS}", self.faults.len()),
            ));
        }
        let mut faults = Vec::with_capacity(self.faults.len());
        let mut fault_durations = Vec::with_capacity(self.faults.len());
        for (i, f) in self.faults.iter().enumerate() {
            let path = format!("spec.faults[{i}]");
            let own = fault_duration(f, &path, duration)?;
            let f = &RawFault {
                duration: None,
                ..f.clone()
            };
            faults.push(match &pods {
                None => f.to_spec(&path)?,
                Some(selector) => pod_fault(f, &path, selector)?,
            });
            fault_durations.push(own);
        }
        if self.guards.len() > MAX_GUARDS {
            return Err(SpecError::new(
                "spec.guards",
                format!(
                    "has {} guards; give at most {MAX_GUARDS}",
                    self.guards.len()
                ),
            ));
        }
        let mut guards: Vec<Guard> = Vec::new();
        for (i, g) in self.guards.iter().enumerate() {
            let path = format!("spec.guards[{i}]");
            let guard = g.to_guard(&path)?;
            if let Some(j) = guards.iter().position(|o| o.name == guard.name) {
                return Err(SpecError::new(
                    join(&path, "name"),
                    format!(
                        "{:?} is already the name of spec.guards[{j}]; guard names are unique",
                        guard.name
                    ),
                ));
            }
            guards.push(guard);
        }
        let guard_interval = duration_field(
            "spec.guardInterval",
            &self.guard_interval,
            DEFAULT_GUARD_INTERVAL,
            MIN_GUARD_INTERVAL,
            MAX_GUARD_INTERVAL,
        )?;
        let blast_radius = match &self.blast_radius {
            None => BlastRadius::default(),
            Some(b) => b.to_blast_radius()?,
        };
        let on_target_failure = match self.on_target_failure.as_deref().map(str::trim) {
            None | Some("abort") => OnTargetFailure::Abort,
            Some("continue") => OnTargetFailure::Continue,
            Some(other) => {
                return Err(SpecError::new(
                    "spec.onTargetFailure",
                    format!("{other:?} is not allowed; use abort or continue"),
                ))
            }
        };
        let steady_state = self
            .steady_state
            .as_ref()
            .map(|s| s.to_steady_state("spec.steadyState", &guards))
            .transpose()?;
        Ok(ExperimentSpec {
            steady_state,
            name: name.to_string(),
            duration,
            agents,
            pods,
            mode,
            faults,
            guards,
            guard_interval,
            blast_radius,
            on_target_failure,
            fault_durations,
        })
    }
}

/// `spec.faults[i].duration`: how long that fault holds from injection, 1s up to the
/// experiment's duration (its own end comes before the experiment's; the others go on).
fn fault_duration(
    f: &RawFault,
    path: &str,
    experiment: Duration,
) -> Result<Option<Duration>, SpecError> {
    let Some(text) = &f.duration else {
        return Ok(None);
    };
    let at = join(path, "duration");
    if f.kind.trim() == "pod-kill" {
        return Err(SpecError::new(
            at,
            "pod-kill runs for the experiment's duration (its interval repeats the kill); leave duration out",
        ));
    }
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        SpecError::new(
            &at,
            format!(
                "{text:?} is not a duration ({e}); use e.g. 30s, 1s..={}",
                humantime::format_duration(experiment)
            ),
        )
    })?;
    if d < MIN_DURATION || d > experiment {
        return Err(SpecError::new(
            at,
            format!(
                "{} is outside 1s..={} (spec.duration)",
                humantime::format_duration(d),
                humantime::format_duration(experiment)
            ),
        ));
    }
    Ok(Some(d))
}

/// A fault of a pod experiment: the selected pods are its target, so it names none itself (a
/// process fault names no selector either); the coordinator aims it at each pod or container.
fn pod_fault(f: &RawFault, path: &str, selector: &PodSelector) -> Result<FaultSpec, SpecError> {
    if f.target.is_some() {
        return Err(SpecError::new(
            join(path, "target"),
            "with spec.targets.pods the selected pods are the target; leave target out",
        ));
    }
    // io-limit needs a cgroup target: validate with a stand-in pod; `aim` sets each real one.
    if f.kind.trim() == "io-limit" {
        let with_pod = RawFault {
            target: Some(crate::fault::doc::RawTarget {
                pod: Some("0".into()),
                ..Default::default()
            }),
            ..f.clone()
        };
        let mut spec = with_pod.to_spec(path)?;
        spec.target = crate::fault::Target::Host;
        return Ok(spec);
    }
    // Kill faults (issue 13).
    match f.kind.trim() {
        "pod-kill" => return f.to_pod_spec(path),
        "container-kill" => return container_kill_fault(f, path, selector),
        "process" => {}
        _ => return f.to_spec(path),
    }
    if f.selector.is_some() {
        return Err(SpecError::new(
            join(path, "selector"),
            "with spec.targets.pods a process fault acts on the processes of the selected pods (or containers); leave selector out",
        ));
    }
    // Validate with a stand-in selector; the real one is set for each pod by `aim`.
    let with_selector = RawFault {
        selector: Some(RawSelector {
            pod: Some("0".into()),
            ..RawSelector::default()
        }),
        ..f.clone()
    };
    let mut spec = with_selector.to_spec(path)?;
    if let crate::fault::Fault::Process(p) = &mut spec.fault {
        p.selector = crate::fault::ProcessSelector::Container(Default::default());
    }
    Ok(spec)
}

/// A container-kill of a pod experiment, validated against a stand-in for what `aim` makes of
/// it: each selected pod (then `containers` names the containers to kill) or, with
/// `spec.targets.pods.containers`, each selected container (then `containers` stays out).
fn container_kill_fault(
    f: &RawFault,
    path: &str,
    selector: &PodSelector,
) -> Result<FaultSpec, SpecError> {
    let stand_in = crate::fault::doc::RawTarget {
        pod: Some("0".into()),
        container: (!selector.containers.is_empty()).then(|| "0".into()),
        ..Default::default()
    };
    let with_target = RawFault {
        target: Some(stand_in),
        ..f.clone()
    };
    let mut spec = with_target.to_spec(path)?;
    spec.target = crate::fault::Target::Host;
    Ok(spec)
}

impl RawTargets {
    fn to_selection(&self) -> Result<(AgentSelector, Mode), SpecError> {
        let raw = self.agents.clone().unwrap_or_default();
        let mut names: Vec<NodeName> = Vec::new();
        for (i, n) in raw.names.iter().enumerate() {
            let path = format!("spec.targets.agents.names[{i}]");
            let name: NodeName = n
                .parse()
                .map_err(|e| SpecError::new(&path, format!("{e}")))?;
            if names.contains(&name) {
                return Err(SpecError::new(path, format!("{n:?} is listed twice")));
            }
            names.push(name);
        }
        let labels = Labels::from_map(raw.labels)
            .map_err(|e| SpecError::new("spec.targets.agents.labels", e.to_string()))?;
        let value_path = "spec.targets.value";
        let mode = match self.mode.as_deref().map(str::trim) {
            None => {
                return Err(SpecError::new(
                    "spec.targets.mode",
                    "is required: one, all, fixed (with value) or percent (with value)",
                ))
            }
            Some(m @ ("one" | "all")) => {
                if self.value.is_some() {
                    return Err(SpecError::new(
                        value_path,
                        format!("mode {m} takes no value"),
                    ));
                }
                if m == "one" {
                    Mode::One
                } else {
                    Mode::All
                }
            }
            Some("fixed") => {
                let v = self.value.as_ref().ok_or_else(|| {
                    SpecError::new(
                        value_path,
                        format!("is required with mode fixed (1..={MAX_FIXED} agents)"),
                    )
                })?;
                Mode::Fixed(whole(v, value_path, 1, MAX_FIXED)?)
            }
            Some("percent") => {
                let v = self.value.as_ref().ok_or_else(|| {
                    SpecError::new(value_path, "is required with mode percent (1..=100)")
                })?;
                Mode::Percent(whole(v, value_path, 1, 100)?)
            }
            Some(other) => {
                return Err(SpecError::new(
                    "spec.targets.mode",
                    format!("{other:?} is not a mode; use one, all, fixed or percent"),
                ))
            }
        };
        Ok((
            AgentSelector {
                names,
                labels: labels.0,
            },
            mode,
        ))
    }
}

impl RawBlastRadius {
    fn to_blast_radius(&self) -> Result<BlastRadius, SpecError> {
        let max_targets = self
            .max_targets
            .as_ref()
            .map(|v| whole(v, "spec.blastRadius.maxTargets", 1, MAX_FIXED))
            .transpose()?;
        let max_percent = match &self.max_percent {
            None => None,
            Some(v) => {
                let path = "spec.blastRadius.maxPercent";
                let p = match v {
                    Scalar::Num(n) => *n,
                    Scalar::Str(t) => {
                        t.trim().trim_end_matches('%').trim().parse().map_err(|_| {
                            SpecError::new(path, format!("{t:?} is not a number (1..=100)"))
                        })?
                    }
                };
                if !(1.0..=100.0).contains(&p) {
                    return Err(SpecError::new(path, format!("{p} is outside 1..=100")));
                }
                Some(p)
            }
        };
        Ok(BlastRadius {
            max_targets,
            max_percent,
        })
    }
}
