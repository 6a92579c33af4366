//! Experiments end to end with the real binaries (root: the agents run real cpu and memory
//! workers): completion with every fault reverted on every agent, abort by `faultctl abort`, by a
//! Prometheus guard against a real Prometheus, by an HTTP probe, by a telemetry guard, and a
//! coordinator SIGKILLed mid-experiment.

use std::time::{Duration, Instant};

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::procs::run;
use faultline_tests::stack::{workers_of, Prometheus, Stack, TestService};
use faultline_tests::*;

/// Experiments here stress the CPU; one at a time keeps the figures meaningful.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn doc(name: &str, duration: &str, faults: &str, guards: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {duration}\n  targets:\n    mode: all\n  faults:\n{faults}  guards:\n{guards}  guardInterval: 500ms\n"
    )
}

const LIGHT_FAULTS: &str =
    "    - {kind: cpu, load: 20, workers: 1}\n    - {kind: memory, size: 32Mi}\n";

fn agents_workers(stack: &Stack) -> Vec<(String, Vec<u32>)> {
    stack
        .agents
        .iter()
        .map(|a| (a.name.clone(), workers_of(a.proc.pid())))
        .collect()
}

async fn wait_workers(stack: &Stack, present: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let all = agents_workers(stack);
        let ok = all.iter().all(|(_, w)| w.is_empty() != present);
        if ok {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "workers {} within {timeout:?}: {all:?}",
            if present {
                "did not start"
            } else {
                "still running"
            }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phase(e: &pb::Experiment) -> Phase {
    Phase::try_from(e.phase).unwrap_or(Phase::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_completes_and_every_fault_is_reverted_on_every_agent() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["exp-a", "exp-b"], Duration::from_secs(5));
    stack.spawn_agent("exp-a", "zone=a");
    stack.spawn_agent("exp-b", "zone=b");
    let e = stack
        .run_experiment(&doc("complete", "4s", LIGHT_FAULTS, "    []\n"))
        .await;
    assert_eq!(e.name, "complete");
    stack
        .wait_phase("complete", Phase::Running, Duration::from_secs(10))
        .await;
    wait_workers(&stack, true, Duration::from_secs(5)).await;

    let done = stack
        .wait_phase("complete", Phase::Completed, Duration::from_secs(20))
        .await;
    let done = if done
        .targets
        .iter()
        .all(|t| t.state == pb::FaultState::Reverted as i32)
    {
        done
    } else {
        stack
            .wait_all_reverted("complete", Duration::from_secs(10))
            .await
    };
    assert_eq!(
        done.targets.len(),
        4,
        "2 agents x 2 faults: {:?}",
        done.targets
    );
    for t in &done.targets {
        assert!(
            t.applied_unix_ms > 0 && t.reverted_unix_ms >= t.applied_unix_ms,
            "{t:?}"
        );
        assert!(t.error.is_empty(), "{t:?}");
    }
    wait_workers(&stack, false, Duration::from_secs(2)).await;

    let mut client = stack.experiments("viewer").await;
    let report = client
        .report(pb::ReportRequest {
            name: "complete".into(),
            format: "md".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert!(
        report.markdown.contains("complete")
            && report.markdown.to_lowercase().contains("completed"),
        "{}",
        report.markdown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faultctl_abort_reverts_everything() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["ab-a"], Duration::from_secs(5));
    stack.spawn_agent("ab-a", "");
    stack
        .run_experiment(&doc("by-hand", "60s", LIGHT_FAULTS, "    []\n"))
        .await;
    stack
        .wait_phase("by-hand", Phase::Running, Duration::from_secs(10))
        .await;
    wait_workers(&stack, true, Duration::from_secs(5)).await;

    let (ok, out) = run(
        &binary("faultctl"),
        &[
            "--coordinator",
            &format!("https://{}", stack.grpc),
            "--certs-dir",
            &stack.certs.path().display().to_string(),
            "--identity",
            "operator",
            "abort",
            "by-hand",
            "--reason",
            "operator pressed the button",
        ],
    );
    assert!(ok, "faultctl abort failed:\n{out}");
    let e = stack
        .wait_phase("by-hand", Phase::Aborted, Duration::from_secs(10))
        .await;
    let abort = e.abort.clone().expect("abort info");
    assert_eq!(abort.trigger, "api");
    assert!(
        abort.reason.contains("operator pressed the button"),
        "{abort:?}"
    );
    let gone = wait_workers(&stack, false, Duration::from_secs(3)).await;
    eprintln!(
        "faultctl abort: workers gone {} ms after the abort returned",
        gone.as_millis()
    );
    stack
        .wait_all_reverted("by-hand", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_guard_breach_aborts() {
    let _serial = SERIAL.lock().await;
    let service = TestService::start();
    service.set_metrics("# TYPE test_error_ratio gauge\ntest_error_ratio 0\n");
    let prom = Prometheus::start(&[service.addr]);
    prom.wait_for_series("test_error_ratio", Duration::from_secs(30));

    let mut stack = Stack::start(&["pg-a"], Duration::from_secs(5));
    stack.spawn_agent("pg-a", "");
    let guards = format!(
        "    - {{name: error-rate, prometheus: {{url: 'http://{}', query: 'max(test_error_ratio)', above: 0.5, for: 1s}}}}\n",
        prom.addr
    );
    stack
        .run_experiment(&doc("prom-guard", "60s", LIGHT_FAULTS, &guards))
        .await;
    stack
        .wait_phase("prom-guard", Phase::Running, Duration::from_secs(10))
        .await;
    wait_workers(&stack, true, Duration::from_secs(5)).await;
    // Healthy for a while: the guard keeps evaluating without breaching.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&stack.get("prom-guard").await), Phase::Running);

    let flipped = Instant::now();
    service.set_metrics("# TYPE test_error_ratio gauge\ntest_error_ratio 1\n");
    let e = stack
        .wait_phase("prom-guard", Phase::Aborted, Duration::from_secs(20))
        .await;
    let abort = e.abort.clone().expect("abort info");
    assert_eq!(
        (abort.trigger.as_str(), abort.guard.as_str()),
        ("guard", "error-rate"),
        "{abort:?}"
    );
    assert!((abort.observed_value - 1.0).abs() < 1e-9, "{abort:?}");
    wait_workers(&stack, false, Duration::from_secs(3)).await;
    let e = stack
        .wait_all_reverted("prom-guard", Duration::from_secs(5))
        .await;
    let abort = e.abort.expect("abort info");
    eprintln!(
        "prometheus guard: metric flipped -> aborted in {} ms; breach -> last revert acknowledged {} ms",
        flipped.elapsed().as_millis(),
        abort.latency_ms
    );
    assert!(
        abort.latency_ms > 0 && abort.latency_ms < 2000,
        "abort latency {} ms",
        abort.latency_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_guard_breach_aborts() {
    let _serial = SERIAL.lock().await;
    let service = TestService::start();
    let mut stack = Stack::start(&["hp-a"], Duration::from_secs(5));
    stack.spawn_agent("hp-a", "");
    let guards = format!(
        "    - {{name: health, http: {{url: 'http://{}/healthz', expectStatus: 200, timeout: 1s, failures: 2}}}}\n",
        service.addr
    );
    stack
        .run_experiment(&doc("probe-guard", "60s", LIGHT_FAULTS, &guards))
        .await;
    stack
        .wait_phase("probe-guard", Phase::Running, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(phase(&stack.get("probe-guard").await), Phase::Running);
    service.set_status(503);
    let e = stack
        .wait_phase("probe-guard", Phase::Aborted, Duration::from_secs(10))
        .await;
    let abort = e.abort.expect("abort info");
    assert_eq!(
        (abort.trigger.as_str(), abort.guard.as_str()),
        ("guard", "health"),
        "{abort:?}"
    );
    wait_workers(&stack, false, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_guard_breach_aborts() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["tg-a"], Duration::from_secs(5));
    stack.spawn_agent("tg-a", "");
    // The fault itself trips the guard: every CPU busy -> cpu_busy_ratio above 0.8.
    let faults = "    - {kind: cpu, load: 100}\n";
    let guards =
        "    - {name: node-cpu, telemetry: {metric: cpu_busy_ratio, above: 0.8, for: 1s}}\n";
    stack
        .run_experiment(&doc("cpu-guard", "60s", faults, guards))
        .await;
    let e = stack
        .wait_phase("cpu-guard", Phase::Aborted, Duration::from_secs(20))
        .await;
    let abort = e.abort.expect("abort info");
    assert_eq!(
        (abort.trigger.as_str(), abort.guard.as_str()),
        ("guard", "node-cpu"),
        "{abort:?}"
    );
    assert!(abort.observed_value > 0.8, "{abort:?}");
    wait_workers(&stack, false, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_sigkill_mid_experiment_agents_revert_within_lease() {
    let _serial = SERIAL.lock().await;
    let lease = Duration::from_secs(2);
    let mut stack = Stack::start(&["ck-a", "ck-b"], lease);
    stack.spawn_agent("ck-a", "");
    stack.spawn_agent("ck-b", "");
    stack
        .run_experiment(&doc("orphaned", "60s", LIGHT_FAULTS, "    []\n"))
        .await;
    stack
        .wait_phase("orphaned", Phase::Running, Duration::from_secs(10))
        .await;
    wait_workers(&stack, true, Duration::from_secs(5)).await;

    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    // Measured from the moment the coordinator is gone.
    let since_kill = wait_workers(&stack, false, lease + Duration::from_secs(3)).await;
    eprintln!(
        "coordinator SIGKILL -> every agent's workers gone in {} ms (lease {} ms)",
        since_kill.as_millis(),
        lease.as_millis()
    );
    assert!(
        since_kill <= lease + Duration::from_secs(1),
        "agents reverted after {since_kill:?}"
    );

    // Restarted after the leases lapsed: the experiment is resumed, and its targets are
    // recorded as reverted by lease (the agents' queued statuses say so).
    stack.start_coordinator();
    stack
        .wait_phase("orphaned", Phase::Failed, Duration::from_secs(15))
        .await;
    // The run fails as soon as the first agent is back without its faults; the other agent's
    // queued statuses ("reverted: lease") can arrive after that, as late acknowledgements.
    let e = wait_for(
        "every target's revert recorded",
        Duration::from_secs(10),
        || async {
            let e = stack.get("orphaned").await;
            e.targets
                .iter()
                .all(|t| t.reverted_unix_ms > 0)
                .then_some(e)
        },
    )
    .await;
    assert!(
        e.log.iter().any(|l| l.message.starts_with("resumed: ")),
        "{:?}",
        e.log
    );
    for t in &e.targets {
        assert_eq!(t.revert_reason, pb::RevertReason::Lease as i32, "{t:?}");
    }
    let mut client = stack.experiments("viewer").await;
    let report = client
        .report(pb::ReportRequest {
            name: "orphaned".into(),
            format: "json".into(),
        })
        .await
        .expect("report after restart")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&report.json).expect("report json");
    assert!(json["gaps"][0]["to_unix_ms"].as_i64().is_some(), "{json}");
}
