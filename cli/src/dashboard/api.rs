//! The dashboard's JSON API: each browser action is exactly one gRPC call on the identity
//! `faultctl dashboard` runs as, so the coordinator's role checks apply unchanged (a viewer's
//! forged POST is refused by the coordinator, not only hidden by the page).

use std::collections::HashMap;
use std::time::Duration;

use faultline_core::Identity;
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;
use faultline_proto::pb::fleet_client::FleetClient;
use faultline_proto::pb::schedules_client::SchedulesClient;
use faultline_proto::pb::workflows_client::WorkflowsClient;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::commands::{schedules, workflows};
use crate::json;

/// One answer of the API: an HTTP status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Reply { status: 200, body }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    /// A refused or failed call, with the coordinator's own words.
    fn from_status(s: &Status) -> Self {
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => 409,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 502,
            Code::DeadlineExceeded => 504,
            _ => 500,
        };
        Reply {
            status,
            body: json!({ "error": s.message(), "code": format!("{:?}", s.code()) }),
        }
    }
}

/// The clients and who they act as.
#[derive(Clone)]
pub struct Api {
    pub experiments: ExperimentsClient<Channel>,
    pub fleet: FleetClient<Channel>,
    pub schedules: SchedulesClient<Channel>,
    pub workflows: WorkflowsClient<Channel>,
    pub identity: Identity,
    pub coordinator: String,
    pub timeout: Duration,
}

/// What a request asks for, parsed from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Session,
    Agents,
    Halt,
    Resume,
    Policy,
    Audit,
    Experiments,
    Create,
    Experiment(String),
    Report(String),
    Watch(String),
    Start(String),
    Abort(String),
    Schedules,
    /// suspend, resume or trigger a schedule.
    ScheduleAction(String, &'static str),
    Workflows,
    Workflow(String),
    WorkflowAbort(String),
    WorkflowApprove(String, String),
}

impl Route {
    /// `None` when nothing is served at `path` for `method`.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/api/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let get = method == "GET";
        let post = method == "POST";
        let name = |s: &str| percent_decode(s).filter(|n| !n.is_empty());
        Some(match (parts.as_slice(), get, post) {
            (["session"], true, _) => Route::Session,
            (["agents"], true, _) => Route::Agents,
            (["fleet", "halt"], _, true) => Route::Halt,
            (["fleet", "resume"], _, true) => Route::Resume,
            (["policy"], true, _) => Route::Policy,
            (["audit"], true, _) => Route::Audit,
            (["experiments"], true, _) => Route::Experiments,
            (["experiments"], _, true) => Route::Create,
            (["experiments", n], true, _) => Route::Experiment(name(n)?),
            (["experiments", n, "report"], true, _) => Route::Report(name(n)?),
            (["experiments", n, "watch"], true, _) => Route::Watch(name(n)?),
            (["experiments", n, "start"], _, true) => Route::Start(name(n)?),
            (["experiments", n, "abort"], _, true) => Route::Abort(name(n)?),
            (["schedules"], true, _) => Route::Schedules,
            (["schedules", n, "suspend"], _, true) => Route::ScheduleAction(name(n)?, "suspend"),
            (["schedules", n, "resume"], _, true) => Route::ScheduleAction(name(n)?, "resume"),
            (["schedules", n, "trigger"], _, true) => Route::ScheduleAction(name(n)?, "trigger"),
            (["workflows"], true, _) => Route::Workflows,
            (["workflows", n], true, _) => Route::Workflow(name(n)?),
            (["workflows", n, "abort"], _, true) => Route::WorkflowAbort(name(n)?),
            (["workflows", n, "approve", step], _, true) => {
                Route::WorkflowApprove(name(n)?, name(step)?)
            }
            _ => return None,
        })
    }
}

impl Api {
    /// Bounds a call by `--timeout`.
    async fn call<T>(
        &self,
        rpc: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Reply> {
        match tokio::time::timeout(self.timeout, rpc).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(Reply::from_status(&s)),
            Err(_) => Err(Reply::error(
                504,
                format!(
                    "no answer from the coordinator within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    /// Serves every route but `Watch` (a stream, see `sse`).
    pub async fn handle(
        &self,
        route: Route,
        query: &HashMap<String, String>,
        body: &Value,
    ) -> Reply {
        match self.dispatch(route, query, body).await {
            Ok(v) => Reply::ok(v),
            Err(r) => r,
        }
    }

    async fn dispatch(
        &self,
        route: Route,
        query: &HashMap<String, String>,
        body: &Value,
    ) -> Result<Value, Reply> {
        let mut ex = self.experiments.clone();
        let mut fleet = self.fleet.clone();
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(match route {
            Route::Session => json!({
                "identity": self.identity.to_string(),
                "role": self.identity.role.to_string(),
                "coordinator": self.coordinator,
            }),
            Route::Agents => {
                let r = self
                    .call(fleet.list_agents(pb::ListAgentsRequest {}))
                    .await?;
                json!({ "agents": r.agents.iter().map(json::agent).collect::<Vec<_>>() })
            }
            Route::Halt => {
                let reason = text("reason");
                let reason = if reason.is_empty() {
                    "halted from the dashboard".into()
                } else {
                    reason
                };
                let r = self
                    .call(fleet.halt_all(pb::HaltAllRequest { reason }))
                    .await?;
                json!({
                    "agents_signalled": r.agents_signalled,
                    "experiments_aborted": r.experiments_aborted,
                })
            }
            Route::Resume => {
                let r = self.call(fleet.resume(pb::ResumeRequest {})).await?;
                json!({ "was_halted": r.was_halted })
            }
            Route::Policy => {
                json::policy(&self.call(fleet.get_policy(pb::GetPolicyRequest {})).await?)
            }
            Route::Audit => {
                let limit = query
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(200);
                let r = self
                    .call(fleet.audit_log(pb::AuditLogRequest { limit }))
                    .await?;
                json!({ "entries": r.entries.iter().map(json::audit_entry).collect::<Vec<_>>() })
            }
            Route::Experiments => {
                let phase = query.get("phase").cloned().unwrap_or_default();
                let r = self
                    .call(ex.list(pb::ListExperimentsRequest { phase }))
                    .await?;
                json!({ "experiments": r.experiments.iter().map(json::experiment).collect::<Vec<_>>() })
            }
            Route::Create => {
                let r = self
                    .call(ex.create(pb::CreateExperimentRequest {
                        document: text("document"),
                        dry_run: body.get("dryRun").and_then(Value::as_bool).unwrap_or(false),
                        start: body.get("start").and_then(Value::as_bool).unwrap_or(false),
                    }))
                    .await?;
                json!({
                    "experiment": r.experiment.as_ref().map(json::experiment),
                    "plan": r.plan.as_ref().map(json::plan),
                })
            }
            Route::Experiment(name) => {
                json::experiment(&self.call(ex.get(pb::GetExperimentRequest { name })).await?)
            }
            Route::Report(name) => {
                let r = self
                    .call(ex.report(pb::ReportRequest {
                        name,
                        format: String::new(),
                    }))
                    .await?;
                let parsed: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
                json!({ "markdown": r.markdown, "json": parsed })
            }
            Route::Start(name) => json::experiment(
                &self
                    .call(ex.start(pb::StartExperimentRequest { name }))
                    .await?,
            ),
            Route::Abort(name) => {
                let reason = text("reason");
                let reason = if reason.is_empty() {
                    "aborted from the dashboard".into()
                } else {
                    reason
                };
                json::experiment(
                    &self
                        .call(ex.abort(pb::AbortExperimentRequest { name, reason }))
                        .await?,
                )
            }
            Route::Schedules => {
                let mut c = self.schedules.clone();
                let r = self.call(c.list(pb::ListSchedulesRequest {})).await?;
                json!({ "schedules": r.schedules.iter().map(schedules::to_json).collect::<Vec<_>>() })
            }
            Route::ScheduleAction(name, action) => {
                let mut c = self.schedules.clone();
                let s = match action {
                    "suspend" => {
                        self.call(c.suspend(pb::SuspendScheduleRequest { name }))
                            .await?
                    }
                    "resume" => {
                        self.call(c.resume(pb::ResumeScheduleRequest { name }))
                            .await?
                    }
                    _ => {
                        let r = self
                            .call(c.trigger(pb::TriggerScheduleRequest { name }))
                            .await?;
                        return Ok(json!({
                            "run": r.run,
                            "schedule": r.schedule.as_ref().map(schedules::to_json),
                        }));
                    }
                };
                schedules::to_json(&s)
            }
            Route::Workflows => {
                let mut c = self.workflows.clone();
                let r = self.call(c.list(pb::ListWorkflowsRequest {})).await?;
                json!({ "workflows": r.workflows.iter().map(workflows::to_json).collect::<Vec<_>>() })
            }
            Route::Workflow(name) => {
                let mut c = self.workflows.clone();
                workflows::to_json(&self.call(c.get(pb::GetWorkflowRequest { name })).await?)
            }
            Route::WorkflowAbort(name) => {
                let mut c = self.workflows.clone();
                let reason = text("reason");
                let reason = if reason.is_empty() {
                    "aborted from the dashboard".into()
                } else {
                    reason
                };
                workflows::to_json(
                    &self
                        .call(c.abort(pb::AbortWorkflowRequest { name, reason }))
                        .await?,
                )
            }
            Route::WorkflowApprove(name, step) => {
                let mut c = self.workflows.clone();
                workflows::to_json(
                    &self
                        .call(c.approve(pb::ApproveStepRequest { name, step }))
                        .await?,
                )
            }
            Route::Watch(_) => return Err(Reply::error(400, "watch is a stream")),
        })
    }
}

/// Decodes `%XX` escapes of a path segment; `None` when malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=x%20y` as a map (later keys win).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), percent_decode(&v.replace('+', " "))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("GET", "/api/agents"), Some(Route::Agents));
        assert_eq!(Route::parse("POST", "/api/agents"), None);
        assert_eq!(
            Route::parse("POST", "/api/experiments"),
            Some(Route::Create)
        );
        assert_eq!(
            Route::parse("POST", "/api/experiments/my%2Dexp/abort"),
            Some(Route::Abort("my-exp".into()))
        );
        assert_eq!(Route::parse("GET", "/api/experiments/x/abort"), None);
        assert_eq!(Route::parse("GET", "/api/experiments//report"), None);
        assert_eq!(Route::parse("GET", "/api/experiments/%zz"), None);
        assert_eq!(Route::parse("GET", "/other"), None);
        assert_eq!(
            Route::parse("POST", "/api/workflows/gd/approve/gate"),
            Some(Route::WorkflowApprove("gd".into(), "gate".into()))
        );
        assert_eq!(
            Route::parse("POST", "/api/schedules/n/trigger"),
            Some(Route::ScheduleAction("n".into(), "trigger"))
        );
        assert_eq!(Route::parse("POST", "/api/schedules/n/delete"), None);
    }

    #[test]
    fn queries() {
        let q = parse_query(Some("phase=running&limit=5&x=a+b"));
        assert_eq!(q.get("phase").map(String::as_str), Some("running"));
        assert_eq!(q.get("x").map(String::as_str), Some("a b"));
        assert!(parse_query(None).is_empty());
    }
}
