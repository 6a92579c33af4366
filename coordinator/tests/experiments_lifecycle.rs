//! Experiments end to end against in-process coordinators and in-test agents over real mutual
//! TLS: dry run, create then start, apply -> running -> completed with every fault reverted on
//! every target, the events of Watch, and the reports.

mod common;

use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::*;
use common::*;
use faultline_proto::pb;
use tonic::Code;

const TWO_FAULTS: &str = "  duration: 2s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 50, workers: 1}, {kind: memory, size: 64Mi}]\n";

#[tokio::test]
async fn apply_run_complete_and_revert_everything() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[("zone", "a")]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[("zone", "b")]).await;
    let mut ops = experiments(&env, &c, "operator").await;

    let before = now_ms();
    let created = create(&mut ops, &doc("steady", TWO_FAULTS), true)
        .await
        .expect("created and started");
    let e = created.experiment.expect("experiment");
    assert_eq!(phase(&e), pb::ExperimentPhase::Running);
    assert_eq!((e.id.as_str(), e.name.as_str()), ("steady", "steady"));
    assert_eq!(e.created_by, "operator/operator");
    assert_eq!(e.duration_ms, 2000);
    let plan = created.plan.expect("plan");
    let selected: Vec<&str> = plan.selected.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(selected, ["node-a", "node-b"]);
    assert_eq!(plan.faults.len(), 2);
    assert_eq!(plan.selected[0].description, "zone=a");

    let running = wait_applied(&mut ops, "steady").await;
    assert_eq!(running.targets.len(), 4, "2 faults on each of 2 agents");
    let events = watch_to_end(&mut ops, "steady", Duration::from_secs(15)).await;
    let last = events
        .last()
        .expect("events")
        .experiment
        .clone()
        .expect("experiment");
    assert_eq!(phase(&last), pb::ExperimentPhase::Completed);
    assert!(
        events.iter().any(|e| e.message == "running"),
        "periodic events while running"
    );
    assert!(events.iter().all(|e| e.elapsed_ms <= 4000));

    let done = get(&mut ops, "steady").await;
    assert_eq!(phase(&done), pb::ExperimentPhase::Completed);
    assert!(
        done.verdict_reason
            .starts_with("completed: ran for 2s; 4 of 4 fault(s) reverted"),
        "{}",
        done.verdict_reason
    );
    let ran = done.ended_unix_ms - done.started_unix_ms;
    assert!((1900..4000).contains(&ran), "ran {ran} ms");
    for t in &done.targets {
        assert_eq!(t.state, pb::FaultState::Reverted as i32, "{t:?}");
        assert!(t.applied_unix_ms >= done.started_unix_ms && t.applied_unix_ms >= before);
        assert!(t.reverted_unix_ms >= t.applied_unix_ms, "{t:?}");
        assert!(t.revert_sent_unix_ms > 0 || t.revert_reason == pb::RevertReason::Deadline as i32);
        assert!(t.error.is_empty(), "{t:?}");
        assert_eq!(t.counters.get("test_ticks"), Some(&3));
    }
    // Every agent got ApplyFault for both faults with the deadline start + duration, and the
    // matching RevertFault at the end.
    for agent in [&a, &b] {
        let applies = agent.applies();
        assert_eq!(applies.len(), 2, "{}", agent.name);
        for (i, ap) in applies.iter().enumerate() {
            assert_eq!(ap.fault_id, format!("steady-{}-{i}", agent.name));
            assert_eq!(ap.experiment_id, "steady");
            assert_eq!(ap.deadline_unix_ms, done.started_unix_ms + 2000);
            assert!(ap.spec.is_some());
        }
        let reverts: Vec<String> = agent.reverts().into_iter().map(|r| r.fault_id).collect();
        assert_eq!(
            reverts,
            [
                format!("steady-{}-0", agent.name),
                format!("steady-{}-1", agent.name)
            ]
        );
        assert!(agent
            .reverts()
            .iter()
            .all(|r| r.reason == pb::RevertReason::Deadline as i32));
        assert!(
            agent.held().is_empty(),
            "{} still holds {:?}",
            agent.name,
            agent.held()
        );
    }
    // Telemetry was sampled while it ran.
    let t = done
        .telemetry
        .iter()
        .find(|t| t.agent == "node-a")
        .expect("telemetry of node-a");
    let cpu = t.cpu_busy_ratio.as_ref().expect("cpu");
    assert!(cpu.samples >= 1 && (cpu.avg - 0.1).abs() < 1e-9, "{cpu:?}");
    assert!(done.abort.is_none());

    // Reports: the JSON is the record, the Markdown tells the story.
    let report = ops
        .report(pb::ReportRequest {
            name: "steady".into(),
            format: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&report.json).expect("json report");
    assert_eq!(json["phase"], "completed");
    assert_eq!(json["targets"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["targets"][0]["state"], "reverted");
    assert!(
        report
            .markdown
            .starts_with("# Experiment steady — completed"),
        "{}",
        report.markdown
    );
    assert!(
        report
            .markdown
            .contains("| node-b | cpu 50% x 1 `steady-node-b-0` | Reverted |"),
        "{}",
        report.markdown
    );
    let md_only = ops
        .report(pb::ReportRequest {
            name: "steady".into(),
            format: "md".into(),
        })
        .await
        .expect("md")
        .into_inner();
    assert!(md_only.json.is_empty() && !md_only.markdown.is_empty());
    let err = ops
        .report(pb::ReportRequest {
            name: "steady".into(),
            format: "pdf".into(),
        })
        .await
        .expect_err("pdf");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "format: \"pdf\" is not a report format; use md or json (empty: both)"
    );

    let list = ops
        .list(pb::ListExperimentsRequest {
            phase: "completed".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.experiments.len(), 1);
    let err = ops
        .list(pb::ListExperimentsRequest {
            phase: "done".into(),
        })
        .await
        .expect_err("bad phase");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("phase: \"done\" is not a phase"),
        "{}",
        err.message()
    );

    // The name is taken now.
    let err = create(&mut ops, &doc("steady", TWO_FAULTS), true)
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.message(),
        "metadata.name: experiment \"steady\" already exists (phase completed); choose another name"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn dry_run_plans_without_storing_and_pending_experiments_start_later() {
    let env = Env::new();
    let c = start_open(&env).await;
    let _a = TestAgent::connect(&env, &c, "node-a", &[("zone", "a")]).await;
    let _b = TestAgent::connect(&env, &c, "node-b", &[("faultline.dev/protected", "true")]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc("later", "  duration: 1s\n  targets: {mode: percent, value: 50}\n  faults: [{kind: cpu, load: 10}]\n");

    let dry = ops
        .create(pb::CreateExperimentRequest {
            document: text.clone(),
            dry_run: true,
            start: true,
        })
        .await
        .expect("dry run")
        .into_inner();
    let plan = dry.plan.expect("plan");
    assert_eq!(plan.selected.len(), 1);
    assert_eq!(plan.selected[0].agent, "node-a");
    assert_eq!(plan.excluded.len(), 1);
    assert_eq!(plan.excluded[0].agent, "node-b");
    assert_eq!(
        plan.excluded[0].reason,
        "protected label (faultline.dev/protected=true)"
    );
    assert!(
        plan.selection
            .contains("mode percent 50% of 1 eligible = 1"),
        "{}",
        plan.selection
    );
    let e = dry.experiment.expect("experiment");
    assert_eq!((e.phase, e.id.as_str(), e.name.as_str()), (0, "", "later"));
    let err = ops
        .get(pb::GetExperimentRequest {
            name: "later".into(),
        })
        .await
        .expect_err("nothing stored");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "name: experiment \"later\" does not exist");

    let created = create(&mut ops, &text, false).await.expect("created");
    assert_eq!(
        phase(&created.experiment.expect("e")),
        pb::ExperimentPhase::Pending
    );
    assert_eq!(
        phase(&get(&mut ops, "later").await),
        pb::ExperimentPhase::Pending
    );
    let started = ops
        .start(pb::StartExperimentRequest {
            name: "later".into(),
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(phase(&started), pb::ExperimentPhase::Running);
    let err = ops
        .start(pb::StartExperimentRequest {
            name: "later".into(),
        })
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "experiment \"later\" is running: only a pending experiment can be started"
    );
    watch_to_end(&mut ops, "later", Duration::from_secs(10)).await;
    assert_eq!(
        phase(&get(&mut ops, "later").await),
        pb::ExperimentPhase::Completed
    );

    // A pending experiment can be aborted before it starts.
    let text = doc(
        "never",
        "  duration: 1s\n  targets: {mode: one}\n  faults: [{kind: cpu, load: 10}]\n",
    );
    create(&mut ops, &text, false).await.expect("created");
    let aborted = ops
        .abort(pb::AbortExperimentRequest {
            name: "never".into(),
            reason: "changed my mind".into(),
        })
        .await
        .expect("abort pending")
        .into_inner();
    assert_eq!(phase(&aborted), pb::ExperimentPhase::Aborted);
    assert_eq!(
        aborted.verdict_reason,
        "aborted before it started: aborted by operator/operator: changed my mind"
    );
    let err = ops
        .abort(pb::AbortExperimentRequest {
            name: "never".into(),
            reason: String::new(),
        })
        .await
        .expect_err("ended");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "experiment \"never\" is aborted: it has ended already"
    );
    c.shutdown().await;
}

/// An agent that keeps its lease only while it holds a fault (the real agent) gets no renewals
/// while idle, renewals naming its fault while it holds one, then exactly one that names
/// nothing (the backstop for a lost RevertFault), and none after that. An agent that did not
/// say so is renewed all along.
#[tokio::test]
async fn an_idle_agent_is_renewed_only_around_its_faults() {
    let env = Env::new();
    let c = start_open(&env).await;
    let quiet = TestAgent::connect_idle_rule(&env, &c, "node-a").await;
    let chatty = TestAgent::connect(&env, &c, "node-b", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(quiet.leases().len(), 0, "idle: {:?}", quiet.leases());
    assert!(chatty.leases().len() >= 2, "{:?}", chatty.leases());

    let spec =
        "  duration: 2s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 50, workers: 1}]\n";
    create(&mut ops, &doc("brief", spec), true)
        .await
        .expect("created and started");
    wait_applied(&mut ops, "brief").await;
    let events = watch_to_end(&mut ops, "brief", Duration::from_secs(15)).await;
    let last = events
        .last()
        .and_then(|e| e.experiment.clone())
        .expect("end");
    assert_eq!(phase(&last), pb::ExperimentPhase::Completed);
    let apply = quiet.applies()[0].clone();
    let fault = apply.fault_id.clone();
    let reverted = quiet.reverts()[0].fault_id.clone();
    assert_eq!(fault, reverted);
    // The order names the telemetry it was made from (the agent counts its lease from that).
    assert!(apply.telemetry_sequence > 0, "{apply:?}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_since = std::time::Instant::now() - Duration::from_secs(2);
    let leases = quiet.leases();
    let lists: Vec<&[String]> = leases
        .iter()
        .map(|(l, _)| l.vouched_fault_ids.as_slice())
        .collect();
    // Each renewal names the telemetry it answers (the agent counts the lease from it).
    assert!(
        leases.iter().all(|(l, _)| l.telemetry_sequence > 0),
        "{leases:?}"
    );
    let naming = lists.iter().filter(|v| **v == [fault.clone()]).count();
    assert!(naming >= 1, "renewed while holding {fault}: {lists:?}");
    // After the fault: a renewal that names nothing (two when one came between the vouch's
    // withdrawal and the RevertFault), then none.
    let after = lists.len() - naming;
    assert!(
        (1..=2).contains(&after) && lists[naming..].iter().all(|v| v.is_empty()),
        "renewals after the fault name nothing: {lists:?}"
    );
    assert!(
        leases.last().is_some_and(|(_, at)| *at < quiet_since),
        "no renewal in the last 2 s: {leases:?}"
    );
}
