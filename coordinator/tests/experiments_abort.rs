//! Aborting experiments: by the API, by an HTTP probe that starts failing, by a telemetry guard
//! an agent trips, by a Prometheus guard (a fake Prometheus serving the real API's JSON); each
//! records who aborted, the observed value, the abort-sent time, every target's revert ack and
//! the abort latency.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::*;
use common::*;
use faultline_proto::pb;

/// Checks what every aborted experiment must show; returns its abort record.
fn assert_aborted(e: &pb::Experiment, trigger: &str, agents: &[&TestAgent]) -> pb::AbortInfo {
    assert_eq!(phase(e), pb::ExperimentPhase::Aborted, "{e:#?}");
    let a = e.abort.clone().expect("abort info");
    assert_eq!(a.trigger, trigger, "{a:?}");
    assert!(a.triggered_unix_ms >= e.started_unix_ms, "{a:?}");
    assert!(a.sent_unix_ms >= a.triggered_unix_ms, "{a:?}");
    assert_eq!(a.unacknowledged, 0, "{a:?}");
    let last = e
        .targets
        .iter()
        .map(|t| t.reverted_unix_ms)
        .max()
        .expect("targets");
    assert_eq!(a.last_revert_ack_unix_ms, last);
    assert_eq!(a.latency_ms as i64, last - a.triggered_unix_ms, "{a:?}");
    assert!(a.latency_ms < 2000, "abort latency {} ms", a.latency_ms);
    for t in &e.targets {
        assert_eq!(t.state, pb::FaultState::Reverted as i32, "{t:?}");
        assert_eq!(t.revert_reason, pb::RevertReason::Abort as i32, "{t:?}");
        assert!(
            t.revert_sent_unix_ms >= a.triggered_unix_ms
                && t.reverted_unix_ms >= t.revert_sent_unix_ms,
            "{t:?}"
        );
    }
    for agent in agents {
        assert!(
            agent.held().is_empty(),
            "{} still holds {:?}",
            agent.name,
            agent.held()
        );
        assert!(agent
            .reverts()
            .iter()
            .all(|r| r.reason == pb::RevertReason::Abort as i32));
    }
    a
}

#[tokio::test]
async fn abort_by_api_reverts_every_target_at_once() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc("by-api", "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 20}, {kind: cpu, load: 30}]\n");
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "by-api").await;

    let answer = ops
        .abort(pb::AbortExperimentRequest {
            name: "by-api".into(),
            reason: "game day over".into(),
        })
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(
        phase(&answer),
        pb::ExperimentPhase::Aborted,
        "Abort answers once RevertFault went out"
    );
    assert!(answer.abort.as_ref().is_some_and(|a| a.sent_unix_ms > 0));
    watch_to_end(&mut ops, "by-api", Duration::from_secs(15)).await;
    let e = get(&mut ops, "by-api").await;
    let info = assert_aborted(&e, "api", &[&a, &b]);
    assert_eq!(info.by, "operator/operator");
    assert_eq!(info.reason, "aborted by operator/operator: game day over");
    assert_eq!(
        e.verdict_reason,
        "aborted: aborted by operator/operator: game day over"
    );
    assert_eq!(e.targets.len(), 4);
    assert!(e.ended_unix_ms - e.started_unix_ms < 10_000);
    c.shutdown().await;
}

#[tokio::test]
async fn abort_by_http_probe_after_consecutive_failures() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let (service, status) = health_server().await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "by-probe",
        &format!(
            "  duration: 60s\n  targets: {{mode: all}}\n  faults: [{{kind: cpu, load: 20}}]\n  guardInterval: 100ms\n  guards:\n    - {{name: health, http: {{url: \"{}/healthz\", expectStatus: 200, timeout: 500ms, failures: 3}}}}\n",
            service.url()
        ),
    );
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "by-probe").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        phase(&get(&mut ops, "by-probe").await),
        pb::ExperimentPhase::Running,
        "healthy: keeps running"
    );
    status.store(503, Ordering::SeqCst);
    let events = watch_to_end(&mut ops, "by-probe", Duration::from_secs(15)).await;
    let e = get(&mut ops, "by-probe").await;
    let info = assert_aborted(&e, "guard", &[&a]);
    assert_eq!(
        (info.guard.as_str(), info.guard_type.as_str()),
        ("health", "http")
    );
    assert_eq!(info.observed_value, 503.0);
    assert!(
        info.reason.starts_with(
            "guard health (http) breached: status 503, expected 200: 3 of 3 failure(s) in a row"
        ),
        "{}",
        info.reason
    );
    let breach = e
        .guard_timeline
        .iter()
        .find(|s| s.breached)
        .expect("breach sample");
    assert_eq!(breach.at_unix_ms, info.triggered_unix_ms);
    assert_eq!(breach.outcome, "breached");
    assert!(e
        .guard_timeline
        .iter()
        .any(|s| s.value == 200.0 && s.outcome == "ok"));
    assert!(service
        .requests
        .lock()
        .expect("requests")
        .iter()
        .all(|p| p == "/healthz"));
    // Watch carried the latest guard values.
    assert!(events
        .iter()
        .any(|ev| ev.latest_guards.iter().any(|g| g.guard == "health")));
    drop(service);
    c.shutdown().await;
}

#[tokio::test]
async fn abort_by_telemetry_guard_when_a_target_runs_hot() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let b = TestAgent::connect(&env, &c, "node-b", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "by-telemetry",
        "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 20}]\n  guardInterval: 100ms\n  guards:\n    - {name: node-cpu, telemetry: {metric: cpu_busy_ratio, above: 0.9, for: 300ms}}\n",
    );
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "by-telemetry").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        phase(&get(&mut ops, "by-telemetry").await),
        pb::ExperimentPhase::Running
    );
    b.set_cpu(0.97);
    watch_to_end(&mut ops, "by-telemetry", Duration::from_secs(15)).await;
    let e = get(&mut ops, "by-telemetry").await;
    let info = assert_aborted(&e, "guard", &[&a, &b]);
    assert_eq!(
        (info.guard.as_str(), info.guard_type.as_str()),
        ("node-cpu", "telemetry")
    );
    assert_eq!(info.observed_value, 0.97);
    assert!(
        info.reason
            .contains("0.9700 on node-b above 0.9 for 300ms: breached"),
        "{}",
        info.reason
    );
    // It held the violation for the whole `for` before breaching.
    let first_hot = e
        .guard_timeline
        .iter()
        .find(|s| s.value == 0.97)
        .expect("a hot sample")
        .at_unix_ms;
    assert!(
        info.triggered_unix_ms - first_hot >= 300,
        "breached {} ms after the first hot sample",
        info.triggered_unix_ms - first_hot
    );
    c.shutdown().await;
}

#[tokio::test]
async fn abort_by_prometheus_guard_with_no_data_and_errors_in_the_timeline() {
    let env = Env::new();
    let c = start_open(&env).await;
    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let (prom, value) = fake_prometheus().await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "by-prometheus",
        &format!(
            "  duration: 60s\n  targets: {{mode: all}}\n  faults: [{{kind: cpu, load: 20}}]\n  guardInterval: 100ms\n  guards:\n    - {{name: error-rate, prometheus: {{url: \"{}\", query: 'sum(rate(demo_requests_total{{outcome!=\"ok\"}}[5s]))', above: 0.05, for: 200ms}}}}\n",
            prom.url()
        ),
    );
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "by-prometheus").await;
    eventually(Duration::from_secs(5), "a healthy sample", || {
        let mut ops = ops.clone();
        async move {
            let e = get(&mut ops, "by-prometheus").await;
            e.guard_timeline
                .iter()
                .any(|s| s.outcome == "ok" && s.value == 0.01)
                .then_some(())
        }
    })
    .await;
    *value.lock().expect("value") = None;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        phase(&get(&mut ops, "by-prometheus").await),
        pb::ExperimentPhase::Running,
        "no data does not breach"
    );
    *value.lock().expect("value") = Some(0.5);
    watch_to_end(&mut ops, "by-prometheus", Duration::from_secs(15)).await;
    let e = get(&mut ops, "by-prometheus").await;
    let info = assert_aborted(&e, "guard", &[&a]);
    assert_eq!(
        (info.guard.as_str(), info.guard_type.as_str()),
        ("error-rate", "prometheus")
    );
    assert_eq!(info.observed_value, 0.5);
    let no_data = e
        .guard_timeline
        .iter()
        .find(|s| s.outcome == "no_data")
        .expect("a no-data sample");
    assert!(!no_data.breached && no_data.value.is_nan());
    assert!(
        no_data
            .detail
            .starts_with("no data: the query returned an empty result"),
        "{}",
        no_data.detail
    );
    assert!(
        e.log
            .iter()
            .any(|l| l.message.starts_with("guard error-rate: no_data: no data")),
        "{:#?}",
        e.log
    );
    assert!(e
        .guard_timeline
        .iter()
        .any(|s| s.outcome == "ok" && s.value == 0.01));
    let path = prom.requests.lock().expect("requests")[0].clone();
    assert!(path.starts_with("/api/v1/query?query=sum%28rate%28demo_requests_total%7Boutcome%21%3D%22ok%22%7D%5B5s%5D%29%29"), "{path}");
    c.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_prometheus_aborts_unless_the_guard_ignores_errors() {
    let env = Env::new();
    let c = start_open(&env).await;
    let _a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let _b = TestAgent::connect(&env, &c, "node-b", &[]).await;
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut ops = experiments(&env, &c, "operator").await;
    let guard = |on_error: &str| {
        format!(
            "  guards:\n    - {{name: prom, prometheus: {{url: \"http://{closed}\", query: up, below: 1, timeout: 300ms}}{on_error}}}\n"
        )
    };
    let spec = "  duration: 2s\n  targets: {agents: {names: [node-a]}, mode: all}\n  faults: [{kind: cpu, load: 20}]\n  guardInterval: 100ms\n";
    create(
        &mut ops,
        &doc("strict", &format!("{spec}{}", guard(""))),
        true,
    )
    .await
    .expect("started");
    let spec_b = spec.replace("node-a", "node-b");
    create(
        &mut ops,
        &doc(
            "lenient",
            &format!("{spec_b}{}", guard(", onError: ignore")),
        ),
        true,
    )
    .await
    .expect("started");
    watch_to_end(&mut ops, "strict", Duration::from_secs(15)).await;
    let strict = get(&mut ops, "strict").await;
    assert_eq!(phase(&strict), pb::ExperimentPhase::Aborted);
    let info = strict.abort.expect("abort");
    assert!(info.reason.starts_with("guard prom (prometheus) could not be evaluated: cannot be evaluated: connecting to 127.0.0.1"), "{}", info.reason);
    assert!(
        info.reason.ends_with("aborting (onError: abort)"),
        "{}",
        info.reason
    );
    assert!(info.observed_value.is_nan());
    watch_to_end(&mut ops, "lenient", Duration::from_secs(15)).await;
    let lenient = get(&mut ops, "lenient").await;
    assert_eq!(
        phase(&lenient),
        pb::ExperimentPhase::Completed,
        "{}",
        lenient.verdict_reason
    );
    // The guard task's last evaluation (the timeline also holds a look before the injection
    // and one after the revert, which are not judged).
    let s = lenient
        .guard_timeline
        .iter()
        .rev()
        .find(|s| s.at_unix_ms <= lenient.ended_unix_ms && s.at_unix_ms > lenient.started_unix_ms)
        .expect("samples");
    assert_eq!(s.outcome, "error");
    assert!(
        !s.breached && s.error.ends_with("ignored (onError: ignore)"),
        "{s:?}"
    );
    c.shutdown().await;
}
