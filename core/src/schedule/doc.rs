//! The `kind: Schedule` document, parsed and validated into a [`ScheduleSpec`]; errors name
//! the field path (`spec.schedule: minute field: 61 is outside 0..=59`).

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::cron::{self, Cron, STAMP_LEN};
use super::*;
use crate::experiment::doc::RawMetadata;
use crate::fault::doc::{parse_document, Scalar};
use crate::fault::SpecError;
use crate::workflow::doc::{header, workflow_spec};
use crate::workflow::template;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSchedule {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<RawSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    schedule: Option<String>,
    time_zone: Option<String>,
    concurrency_policy: Option<String>,
    starting_deadline: Option<String>,
    history_limit: Option<Scalar>,
    suspend: Option<bool>,
    experiment: Option<Value>,
    workflow: Option<Value>,
}

/// Parses and validates a schedule document; `max_duration` is the policy's (for the
/// experiments it runs).
pub fn parse_schedule(text: &str, max_duration: Duration) -> Result<ScheduleSpec, SpecError> {
    let raw: RawSchedule = parse_document(text)?;
    let name = header(
        &raw.api_version,
        &raw.kind,
        raw.metadata.as_ref().and_then(|m| m.name.as_ref()),
        KIND,
    )?;
    if name.len() + STAMP_LEN > 63 {
        return Err(SpecError::new(
            "metadata.name",
            format!(
                "{name:?} is too long: runs are named <schedule>-<UTC timestamp> ({} characters \
                 added), which must fit 63; use at most {} characters",
                STAMP_LEN,
                63 - STAMP_LEN
            ),
        ));
    }
    let spec = raw.spec.as_ref().ok_or_else(|| {
        SpecError::new("spec", "is required (schedule and experiment or workflow)")
    })?;
    let expression = spec.schedule.clone().ok_or_else(|| {
        SpecError::new(
            "spec.schedule",
            "is required: 5- or 6-field cron, @every <duration>, or @hourly/@daily/@weekly/@monthly/@yearly",
        )
    })?;
    let cron = Cron::parse(&expression).map_err(|e| SpecError::new("spec.schedule", e.message))?;
    let time_zone = match &spec.time_zone {
        None => chrono_tz::UTC,
        Some(z) => cron::zone(z).map_err(|e| SpecError::new("spec.timeZone", e.message))?,
    };
    // Fields that can never match (the 30th of February) are refused now, not at 3 am.
    if cron
        .next_after(946_684_800_000, 946_684_800_000, time_zone)
        .is_none()
    {
        return Err(SpecError::new(
            "spec.schedule",
            format!("{expression:?} never fires (no date matches its fields)"),
        ));
    }
    let concurrency = match spec.concurrency_policy.as_deref().map(str::trim) {
        None | Some("Forbid") => ConcurrencyPolicy::Forbid,
        Some("Allow") => ConcurrencyPolicy::Allow,
        Some("Replace") => ConcurrencyPolicy::Replace,
        Some(o) => {
            return Err(SpecError::new(
                "spec.concurrencyPolicy",
                format!("{o:?} is not allowed; use Forbid, Allow or Replace"),
            ))
        }
    };
    let starting_deadline = match &spec.starting_deadline {
        None => None,
        Some(_) => Some(crate::experiment::guard_doc::duration_field(
            "spec.startingDeadline",
            &spec.starting_deadline,
            Duration::ZERO,
            MIN_STARTING_DEADLINE,
            MAX_STARTING_DEADLINE,
        )?),
    };
    let history_limit = match &spec.history_limit {
        None => DEFAULT_HISTORY_LIMIT,
        Some(v) => {
            let path = "spec.historyLimit";
            let n = match v {
                Scalar::Num(n) => *n,
                Scalar::Str(t) => t.trim().parse::<f64>().map_err(|_| {
                    SpecError::new(
                        path,
                        format!("{t:?} is not a number (1..={MAX_HISTORY_LIMIT})"),
                    )
                })?,
            };
            if n.fract() != 0.0 || n < 1.0 || n > f64::from(MAX_HISTORY_LIMIT) {
                return Err(SpecError::new(
                    path,
                    format!("{n} is outside 1..={MAX_HISTORY_LIMIT} (a whole number)"),
                ));
            }
            n as u32
        }
    };
    let run_name = super::run_name(&name, 0);
    let run =
        match (&spec.experiment, &spec.workflow) {
            (Some(e), None) => {
                template::experiment(&run_name, e, "spec.experiment", max_duration)?;
                RunTemplate::Experiment(e.clone())
            }
            (None, Some(w)) => {
                workflow_spec(&run_name, w, "spec.workflow", max_duration)?;
                RunTemplate::Workflow(w.clone())
            }
            _ => return Err(SpecError::new(
                "spec",
                "give exactly one of experiment (an experiment spec) or workflow (a workflow spec)",
            )),
        };
    Ok(ScheduleSpec {
        name,
        expression,
        cron,
        time_zone,
        concurrency,
        starting_deadline,
        history_limit,
        suspend: spec.suspend.unwrap_or(false),
        run,
    })
}
