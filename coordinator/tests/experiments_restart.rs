//! A coordinator that stops mid-experiment: a graceful stop reverts the targets and records
//! the experiment aborted (trigger shutdown); a SIGKILLed coordinator binary leaves it for the
//! next start, which marks it `interrupted` — never `running` — with its report still readable.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::*;
use common::*;
use faultline_identity::tls::{self, CoordinatorUrl};
use faultline_proto::pb;
use faultline_proto::pb::experiments_client::ExperimentsClient;

const BIN: &str = env!("CARGO_BIN_EXE_faultline-coordinator");
const SPEC: &str = "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n";

#[tokio::test]
async fn a_graceful_stop_reverts_running_experiments() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    create(&mut ops, &doc("cut-short", SPEC), true)
        .await
        .expect("started");
    wait_applied(&mut ops, "cut-short").await;
    c.shutdown().await;
    let reverts = a.reverts();
    assert_eq!(reverts.len(), 1);
    assert_eq!(reverts[0].reason, pb::RevertReason::Shutdown as i32);
    assert!(a.held().is_empty());

    let c = start_open(&env).await;
    let mut viewer = experiments(&env, &c, "viewer").await;
    let e = get(&mut viewer, "cut-short").await;
    assert_eq!(phase(&e), pb::ExperimentPhase::Aborted);
    let info = e.abort.expect("abort");
    assert_eq!(
        (info.trigger.as_str(), info.reason.as_str()),
        ("shutdown", "the coordinator is shutting down")
    );
    assert_eq!(info.unacknowledged, 0);
    assert_eq!(
        e.targets[0].revert_reason,
        pb::RevertReason::Shutdown as i32
    );
    c.shutdown().await;
}

/// The coordinator binary; killed on drop.
struct Binary(Child, String);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(env: &Env, config: &std::path::Path) -> Binary {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--lease",
            "2s",
        ])
        .arg("--data-dir")
        .arg(env.data())
        .arg("--certs-dir")
        .arg(env.certs())
        .arg("--config")
        .arg(config)
        .env_remove("FAULTLINE_LISTEN")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start faultline-coordinator");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let marker = "coordinator listening on ";
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the coordinator exited before listening"))
            .expect("read stderr");
        if let Some(i) = line.find(marker) {
            break line[i + marker.len()..]
                .split([',', ' '])
                .next()
                .expect("address")
                .to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Binary(child, addr)
}

async fn channel_to(env: &Env, b: &Binary, stem: &str) -> tonic::transport::Channel {
    let url = CoordinatorUrl::parse(&format!("https://{}", b.1)).expect("url");
    tls::connect(&url, &env.paths(stem), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect to the coordinator binary as {stem}: {e}"))
}

#[tokio::test]
async fn a_killed_coordinator_resumes_and_records_an_agent_that_did_not_come_back_as_reverted_by_lease(
) {
    let env = Env::new();
    let config = env.dir.path().join("coordinator.toml");
    std::fs::write(&config, "[policy]\nmax_fleet_percent_under_fault = 100\n").expect("config");
    let first = spawn(&env, &config);
    let a = TestAgent::over(
        channel_to(&env, &first, "agent-node-a").await,
        "node-a",
        &[],
    )
    .await;
    let mut ops = ExperimentsClient::new(channel_to(&env, &first, "operator").await);
    create(&mut ops, &doc("crashed", SPEC), true)
        .await
        .expect("started");
    wait_applied(&mut ops, "crashed").await;
    assert_eq!(a.held(), ["crashed-node-a-0"]);
    // Let a heartbeat or two reach the store.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut first = first;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    first.0.wait().expect("reap");
    let killed_at = now_ms();
    // This agent never comes back (it was connected to the dead process).
    drop(a);

    let second = spawn(&env, &config);
    let mut viewer = ExperimentsClient::new(channel_to(&env, &second, "viewer").await);
    let e = get(&mut viewer, "crashed").await;
    assert_eq!(
        phase(&e),
        pb::ExperimentPhase::Running,
        "an experiment whose end has not passed is resumed: {}",
        e.verdict_reason
    );
    assert!(
        e.log.iter().any(|l| l
            .message
            .starts_with("resumed: the coordinator was down from")),
        "{:?}",
        e.log
    );
    // The agent is not back within its lease (2 s): its lease lapsed, so it reverted.
    let e = wait_phase(&mut viewer, "crashed", pb::ExperimentPhase::Failed).await;
    let t = &e.targets[0];
    assert_eq!(t.revert_reason, pb::RevertReason::Lease as i32, "{t:?}");
    assert!(
        t.error.starts_with(
            "the agent did not come back within its lease (2s) after the coordinator restarted"
        ),
        "{t:?}"
    );
    let report = viewer
        .report(pb::ReportRequest {
            name: "crashed".into(),
            format: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    assert!(
        report.markdown.starts_with("# Experiment crashed — failed"),
        "{}",
        report.markdown
    );
    assert!(
        report.markdown.contains("| Coordinator down |"),
        "{}",
        report.markdown
    );
    let json: serde_json::Value = serde_json::from_str(&report.json).expect("json");
    let gap = &json["gaps"][0];
    let (from, to) = (
        gap["from_unix_ms"].as_i64().expect("from"),
        gap["to_unix_ms"].as_i64().expect("to"),
    );
    assert!(
        from <= killed_at && killed_at - from <= 2_500,
        "the gap starts at the last heartbeat before the kill: {from} vs kill at {killed_at}"
    );
    assert!(to >= killed_at, "the gap ends at the restart");
    drop(second);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
