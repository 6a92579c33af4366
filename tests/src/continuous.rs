//! Helpers of the schedule and workflow end-to-end tests: faultctl against a [`Stack`], the
//! Schedules and Workflows services read as a viewer, stress workers per agent.

use faultline_proto::pb;

use crate::binary;
use crate::procs::run;
use crate::stack::{workers_of, Stack};

/// A light CPU fault, as a YAML flow sequence.
pub const CPU: &str = "[{kind: cpu, load: 10, workers: 1}]";

/// Runs faultctl against the stack as `identity`; returns (success, stdout+stderr).
pub fn ctl(stack: &Stack, identity: &str, args: &[&str]) -> (bool, String) {
    let url = format!("https://{}", stack.grpc);
    let certs = stack.certs.path().display().to_string();
    let mut all = vec![
        "--coordinator",
        &url,
        "--certs-dir",
        &certs,
        "--identity",
        identity,
    ];
    all.extend_from_slice(args);
    run(&binary("faultctl"), &all)
}

/// faultctl as operator; panics with its output when it fails.
pub fn ctl_ok(stack: &Stack, args: &[&str]) -> String {
    let (ok, out) = ctl(stack, "operator", args);
    assert!(ok, "faultctl {args:?} failed:\n{out}");
    out
}

/// Schedules.Get as viewer.
pub async fn schedule(stack: &Stack, name: &str) -> pb::Schedule {
    pb::schedules_client::SchedulesClient::new(stack.channel("viewer").await)
        .get(pb::GetScheduleRequest { name: name.into() })
        .await
        .unwrap_or_else(|s| panic!("Schedules.Get {name}: {s:?}"))
        .into_inner()
}

/// Workflows.Get as viewer.
pub async fn workflow(stack: &Stack, name: &str) -> pb::Workflow {
    pb::workflows_client::WorkflowsClient::new(stack.channel("viewer").await)
        .get(pb::GetWorkflowRequest { name: name.into() })
        .await
        .unwrap_or_else(|s| panic!("Workflows.Get {name}: {s:?}"))
        .into_inner()
}

/// Step `name` of `w`.
pub fn step<'a>(w: &'a pb::Workflow, name: &str) -> &'a pb::WorkflowStep {
    w.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {:?}", w.steps))
}

/// Writes a document into the stack dir; returns its path.
pub fn write(stack: &Stack, file: &str, text: &str) -> String {
    let path = stack.dir.path().join(file);
    std::fs::write(&path, text).expect("write document");
    path.display().to_string()
}

/// Every agent's live stress workers.
pub fn all_workers(stack: &Stack) -> Vec<(String, Vec<u32>)> {
    stack
        .agents
        .iter()
        .map(|a| (a.name.clone(), workers_of(a.proc.pid())))
        .collect()
}

/// The live stress workers of agent `agent`.
pub fn workers_of_agent(stack: &Stack, agent: &str) -> Vec<u32> {
    let a = stack
        .agents
        .iter()
        .find(|a| a.name == agent)
        .expect("agent");
    workers_of(a.proc.pid())
}
