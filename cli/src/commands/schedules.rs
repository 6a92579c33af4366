//! The schedule commands: `get schedules`, `describe schedule`, `schedule
//! suspend|resume|trigger`, `delete schedule`, each a call of the Schedules service.

use faultline_proto::pb;
use serde_json::{json, Value};

use super::pretty;
use crate::args::{OutputFormat, ScheduleCommand};
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::table::Table;

pub fn to_json(s: &pb::Schedule) -> Value {
    json!({
        "name": s.name,
        "schedule": s.schedule,
        "time_zone": s.time_zone,
        "concurrency_policy": s.concurrency_policy,
        "starting_deadline_ms": s.starting_deadline_ms,
        "history_limit": s.history_limit,
        "suspended": s.suspended,
        "run_kind": s.run_kind,
        "created_by": s.created_by,
        "created_unix_ms": s.created_unix_ms,
        "next_fire_unix_ms": s.next_fire_unix_ms,
        "last_fire_unix_ms": s.last_fire_unix_ms,
        "runs_total": s.runs_total,
        "skipped_total": s.skipped_total,
        "runs": s.runs.iter().map(|r| json!({
            "name": r.name,
            "kind": r.kind,
            "fire_unix_ms": r.fire_unix_ms,
            "started_unix_ms": r.started_unix_ms,
            "phase": r.phase,
            "trigger": r.trigger,
        })).collect::<Vec<_>>(),
        "skipped": s.skipped.iter().map(|k| json!({
            "fire_unix_ms": k.fire_unix_ms,
            "at_unix_ms": k.at_unix_ms,
            "reason": k.reason,
        })).collect::<Vec<_>>(),
    })
}

fn next(s: &pb::Schedule) -> String {
    match (s.suspended, s.next_fire_unix_ms) {
        (true, _) => "suspended".into(),
        (false, 0) => "never".into(),
        (false, at) => format::timestamp(at),
    }
}

/// One line for `apply`.
pub fn applied(s: &pb::Schedule) -> String {
    format!(
        "schedule {} applied: {} ({}), next run {}\n",
        s.name,
        s.schedule,
        s.time_zone,
        next(s)
    )
}

pub async fn list(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.schedules().await?;
    let r = target
        .call(client.list(pb::ListSchedulesRequest {}))
        .await?;
    if output == OutputFormat::Json {
        return pretty(&Value::Array(r.schedules.iter().map(to_json).collect()));
    }
    let mut t = Table::new(&[
        "NAME", "SCHEDULE", "ZONE", "POLICY", "RUNS", "SKIPPED", "LAST RUN", "NEXT",
    ]);
    for s in &r.schedules {
        let last = s
            .runs
            .last()
            .map(|r| format!("{} ({})", r.name, r.phase))
            .unwrap_or_else(|| "-".into());
        t.row([
            s.name.clone(),
            s.schedule.clone(),
            s.time_zone.clone(),
            s.concurrency_policy.clone(),
            s.runs_total.to_string(),
            s.skipped_total.to_string(),
            last,
            next(s),
        ]);
    }
    Ok(t.render())
}

pub async fn get(target: &Target, name: &str) -> Result<pb::Schedule, CliError> {
    let mut client = target.schedules().await?;
    target
        .call(client.get(pb::GetScheduleRequest {
            name: name.to_string(),
        }))
        .await
}

pub async fn describe(
    target: &Target,
    name: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let s = get(target, name).await?;
    if output == OutputFormat::Json {
        return pretty(&to_json(&s));
    }
    Ok(render(&s))
}

pub fn render(s: &pb::Schedule) -> String {
    let mut out = format!(
        "Name:               {}\nSchedule:           {} ({})\nRuns a:             {}\n\
         Concurrency policy: {}\nStarting deadline:  {}\nHistory limit:      {}\n\
         Suspended:          {}\nCreated:            {} by {}\nNext run:           {}\n\
         Runs:               {} started, {} fire time(s) skipped\n",
        s.name,
        s.schedule,
        s.time_zone,
        s.run_kind,
        s.concurrency_policy,
        match s.starting_deadline_ms {
            0 => "none".to_string(),
            ms => format::duration_ms(ms),
        },
        s.history_limit,
        if s.suspended { "yes" } else { "no" },
        format::timestamp(s.created_unix_ms),
        s.created_by,
        next(s),
        s.runs_total,
        s.skipped_total,
    );
    if !s.runs.is_empty() {
        out.push_str("\nLatest runs:\n");
        let mut t = Table::new(&["RUN", "FIRE TIME", "STARTED", "LATE", "PHASE", "TRIGGER"]);
        for r in &s.runs {
            t.row([
                r.name.clone(),
                format::timestamp_ms(r.fire_unix_ms),
                format::timestamp_ms(r.started_unix_ms),
                format::latency_ms(r.started_unix_ms - r.fire_unix_ms),
                r.phase.clone(),
                r.trigger.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if !s.skipped.is_empty() {
        out.push_str("\nSkipped fire times:\n");
        let mut t = Table::new(&["FIRE TIME", "REASON"]);
        for k in &s.skipped {
            t.row([format::timestamp_ms(k.fire_unix_ms), k.reason.clone()]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `schedule suspend|resume|trigger NAME`.
pub async fn command(
    target: &Target,
    cmd: &ScheduleCommand,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.schedules().await?;
    let (s, line) = match cmd {
        ScheduleCommand::Suspend(a) => {
            let s = target
                .call(client.suspend(pb::SuspendScheduleRequest {
                    name: a.name.clone(),
                }))
                .await?;
            let line = format!("schedule {} is suspended\n", s.name);
            (s, line)
        }
        ScheduleCommand::Resume(a) => {
            let s = target
                .call(client.resume(pb::ResumeScheduleRequest {
                    name: a.name.clone(),
                }))
                .await?;
            let line = format!("schedule {} resumed: next run {}\n", s.name, next(&s));
            (s, line)
        }
        ScheduleCommand::Trigger(a) => {
            let r = target
                .call(client.trigger(pb::TriggerScheduleRequest {
                    name: a.name.clone(),
                }))
                .await?;
            let s = r.schedule.unwrap_or_default();
            let line = match r.run.as_str() {
                "" => format!(
                    "schedule {}: no run started: {}\n",
                    s.name,
                    s.skipped
                        .last()
                        .map(|k| k.reason.as_str())
                        .unwrap_or("skipped")
                ),
                run => format!("schedule {}: run {run} started\n", s.name),
            };
            (s, line)
        }
    };
    match output {
        OutputFormat::Json => pretty(&to_json(&s)),
        OutputFormat::Table => Ok(line),
    }
}

pub async fn delete(target: &Target, name: &str) -> Result<String, CliError> {
    let mut client = target.schedules().await?;
    target
        .call(client.delete(pb::DeleteScheduleRequest {
            name: name.to_string(),
        }))
        .await?;
    Ok(format!("schedule {name} deleted\n"))
}
