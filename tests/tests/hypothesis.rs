//! The steady-state hypothesis and `faultctl run` with the real binaries (root: the agents run
//! real cpu workers). The service the checks probe is degraded by the fault itself: it answers
//! 503 while the agent's cpu workers run and for a set delay after they are gone, so its
//! recovery follows the revert the way a real service's does.
//!
//! - a check that does not hold before injection: no ApplyFault is ever sent (no worker, the
//!   agent counts no injection), `faultctl run` exits 4 and names the check;
//! - recovery 3 s after the revert is measured as `recovery_ms` within 2,000..4,500;
//! - `faultctl run` exits 0, 3, 4 and 5;
//! - guards over HTTPS with basic auth against Debian's Prometheus (`--web.config.file`).

#[path = "hypothesis/prometheus_tls.rs"]
mod prometheus_tls;
#[path = "hypothesis/support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::stack::{workers_of, Stack};
use faultline_tests::*;
use support::{doc, faultctl_run, injections, one_agent, steady, DegradedService};

/// Experiments here stress the CPU; one at a time keeps the timings meaningful.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_does_not_hold_before_injection_injects_nothing_and_run_exits_4() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("ss-a");
    let pid = stack.agents[0].proc.pid();
    let service = DegradedService::start(pid, Duration::ZERO, true);
    let before = injections(&stack);
    // Watch the agent's processes for the whole run: a single worker would be an injection.
    let watching = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(AtomicBool::new(false));
    let (w, s) = (watching.clone(), seen.clone());
    let watcher = std::thread::spawn(move || {
        while w.load(Ordering::SeqCst) {
            if !workers_of(pid).is_empty() {
                s.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let started = Instant::now();
    let (code, out) = faultctl_run(
        &stack,
        &doc(
            "broken-before",
            "5s",
            "    []\n",
            &steady(&service.url(), "10s"),
        ),
        &[],
    );
    watching.store(false, Ordering::SeqCst);
    watcher.join().expect("watcher");
    eprintln!(
        "pre-injection refusal: faultctl run exited {code} after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(code, 4, "faultctl run must exit 4:\n{out}");
    assert!(
        out.contains("steady-state check checkout-health (http): status 503, expected 200 did not hold before injection"),
        "{out}"
    );
    assert!(
        !seen.load(Ordering::SeqCst),
        "a worker ran: something was injected"
    );
    assert_eq!(injections(&stack), before, "the agent counted an injection");
    let e = stack.get("broken-before").await;
    assert_eq!(e.phase, Phase::Failed as i32);
    assert!(
        e.targets.is_empty(),
        "no target was dispatched: {:?}",
        e.targets
    );
    assert!(
        e.log
            .iter()
            .any(|l| l.message.contains("no ApplyFault was sent")),
        "{:?}",
        e.log
    );
    let h = e.hypothesis.expect("hypothesis");
    assert_eq!(h.verdict, "failed");
    assert!(!h.checks[0].held_before);
    assert_eq!(h.checks[0].before_value, 503.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_time_is_measured_from_the_revert_and_run_exits_0() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("rc-a");
    let service = DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(3), false);
    let (code, out) = faultctl_run(
        &stack,
        &doc("recovers", "3s", "    []\n", &steady(&service.url(), "20s")),
        &["--report", "json"],
    );
    assert_eq!(code, 0, "completed with the hypothesis passed:\n{out}");
    let report: serde_json::Value = serde_json::from_str(
        &out[out.find("{\n").expect("json report")..out.rfind("}").expect("end") + 1],
    )
    .unwrap_or_else(|e| panic!("report json: {e}\n{out}"));
    assert_eq!(report["phase"], "completed");
    assert_eq!(
        report["hypothesis"]["verdict"], "passed",
        "{}",
        report["hypothesis"]
    );
    let recovery = report["hypothesis"]["checks"][0]["recovery_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("recovery_ms: {}", report["hypothesis"]));
    eprintln!("recovery_ms of a service that recovers 3 s after the revert: {recovery}");
    assert!(
        (2_000..=4_500).contains(&recovery),
        "recovery_ms {recovery} outside 2000..=4500"
    );
    // The impact saw the service go down under the fault and come back.
    let impact = report["impact"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "checkout-health"))
        .unwrap_or_else(|| panic!("impact: {}", report["impact"]))
        .clone();
    assert_eq!(impact["before"], 200.0);
    assert_eq!(impact["during"], 503.0);
    assert_eq!(impact["deviated"], true);
    let findings: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect();
    eprintln!("findings: {findings:#?}");
    assert!(
        findings.iter().any(|f| f
            .starts_with("checkout-health (http check) rose from 200 to 503 within")
            && f.contains("recoveryWithin 20s met")),
        "{findings:#?}"
    );
    // The Markdown report shows the same.
    let mut client = stack.experiments("viewer").await;
    let md = client
        .report(pb::ReportRequest {
            name: "recovers".into(),
            format: "md".into(),
        })
        .await
        .expect("report")
        .into_inner()
        .markdown;
    assert!(
        md.contains("## Steady-state hypothesis") && md.contains("Verdict: **passed**"),
        "{md}"
    );
    assert!(
        md.trim_end()
            .ends_with(&format!("- {}", findings.last().expect("a finding"))),
        "the findings come last:\n{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_5_when_the_service_recovers_too_late() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("late-a");
    let service = DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(3), false);
    let (code, out) = faultctl_run(
        &stack,
        &doc(
            "recovers-late",
            "2s",
            "    []\n",
            &steady(&service.url(), "1s"),
        ),
        &[],
    );
    assert_eq!(code, 5, "completed, hypothesis failed:\n{out}");
    assert!(out.contains("steady-state hypothesis failed"), "{out}");
    assert!(
        out.contains("not recovered within recoveryWithin 1s after the revert: checkout-health did not hold again (status 503, expected 200)"),
        "{out}"
    );
    let e = stack.get("recovers-late").await;
    assert_eq!(e.phase, Phase::Completed as i32);
    // JUnit for CI test tabs: the check fails, the run passes.
    let (ok, junit) = faultline_tests::procs::run(
        &binary("faultctl"),
        &[
            "--coordinator",
            &format!("https://{}", stack.grpc),
            "--certs-dir",
            &stack.certs.path().display().to_string(),
            "report",
            "recovers-late",
            "--format",
            "junit",
        ],
    );
    assert!(ok, "{junit}");
    assert!(
        junit.contains("<testcase classname=\"faultline.recovers-late\" name=\"run\""),
        "{junit}"
    );
    assert!(
        junit.contains("name=\"steady-state/checkout-health\"")
            && junit
                .contains("<failure message=\"did not hold again within recoveryWithin 1000 ms\">"),
        "{junit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_3_when_a_guard_aborts() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("ab3-a");
    let service = DegradedService::start(
        stack.agents[0].proc.pid(),
        Duration::from_millis(500),
        false,
    );
    let guards = format!(
        "    - {{name: health-guard, http: {{url: '{}', expectStatus: 200, timeout: 1s, failures: 1}}}}\n",
        service.url()
    );
    let (code, out) = faultctl_run(
        &stack,
        &doc("guarded", "30s", &guards, &steady(&service.url(), "10s")),
        &[],
    );
    assert_eq!(code, 3, "aborted by the guard:\n{out}");
    let e = stack.get("guarded").await;
    let abort = e.abort.expect("abort");
    assert_eq!(
        (abort.trigger.as_str(), abort.guard.as_str()),
        ("guard", "health-guard")
    );
    // Aborted runs still watch the recovery.
    let h = e.hypothesis.expect("hypothesis");
    assert_eq!(h.verdict, "passed", "{h:?}");
    eprintln!(
        "guard abort: latency {} ms; the service held again {:?} ms after the last revert",
        abort.latency_ms, h.checks[0].recovery_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_send_their_method_body_headers_and_the_token_from_its_file() {
    use faultline_tests::receiver::{Mode, Receiver};
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start(Mode::Answer);
    let stack = one_agent("req-a");
    let token_file = stack.dir.path().join("probe-token");
    let token = "t0ken-from-a-file";
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let check = format!(
        "  steadyState:\n    recoveryWithin: 10s\n    checks:\n      - {{name: order-probe, http: {{url: 'http://{}/orders/probe?dry=1', method: POST, body: '{{\"sku\": 42}}', headers: {{X-Probe: faultline, Content-Type: application/json}}, auth: {{bearerTokenFile: '{}'}}}}}}\n",
        receiver.addr,
        token_file.display()
    );
    let (code, out) = faultctl_run(&stack, &doc("probe-request", "1s", "    []\n", &check), &[]);
    assert_eq!(code, 0, "{out}");
    let got = receiver.received();
    assert!(
        got.len() >= 2,
        "before injection and after the revert: {got:?}"
    );
    for r in &got {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/orders/probe?dry=1")
        );
        assert_eq!(r.body, br#"{"sku": 42}"#.to_vec());
        assert_eq!(
            r.headers.get("x-probe").map(String::as_str),
            Some("faultline")
        );
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {token}").as_str())
        );
    }
    // The token is read from its file, and is nowhere in the record, the report or the log.
    let e = stack.get("probe-request").await;
    let record = format!("{e:?}");
    assert!(!record.contains(token), "the record holds the token");
    let mut client = stack.experiments("viewer").await;
    let report = client
        .report(pb::ReportRequest {
            name: "probe-request".into(),
            format: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    assert!(!report.json.contains(token) && !report.markdown.contains(token));
    let log = stack.coordinator.as_ref().expect("coordinator").log_text();
    assert!(
        !log.contains(token),
        "the coordinator's log holds the token"
    );
}

/// Waits until the experiment's log says the recovery watch began.
async fn wait_watching(stack: &Stack, name: &str) {
    wait_for("the recovery watch", Duration::from_secs(20), || async {
        let e = stack.get(name).await;
        e.log
            .iter()
            .any(|l| l.message.starts_with("watching the steady state"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_watch_stops_on_abort_and_a_restart_never_leaves_it_pending() {
    let _serial = SERIAL.lock().await;
    let mut stack = one_agent("rw-a");
    let service =
        DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(120), false);
    let check = steady(&service.url(), "5m");

    // Aborted while it watches: the watch stops at once, the hypothesis fails saying why.
    stack
        .run_experiment(&doc("watch-abort", "1s", "    []\n", &check))
        .await;
    wait_watching(&stack, "watch-abort").await;
    let mut client = stack.experiments("operator").await;
    let asked = Instant::now();
    client
        .abort(pb::AbortExperimentRequest {
            name: "watch-abort".into(),
            reason: "enough".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("abort during the recovery watch: {s:?}"));
    let e = wait_for("the run to finish", Duration::from_secs(10), || async {
        let e = stack.get("watch-abort").await;
        e.hypothesis
            .as_ref()
            .is_some_and(|h| h.verdict != "pending")
            .then_some(e)
    })
    .await;
    eprintln!(
        "recovery watch stopped {} ms after Abort",
        asked.elapsed().as_millis()
    );
    assert_eq!(e.phase, Phase::Completed as i32);
    let h = e.hypothesis.expect("hypothesis");
    assert_eq!(h.verdict, "failed");
    assert!(
        h.reason
            .starts_with("the recovery watch was stopped (aborted by operator/"),
        "{}",
        h.reason
    );

    // The coordinator is killed while it watches: at its next start the hypothesis is failed,
    // never left pending. (A new service: the first one stays down for its 120 s.)
    drop(service);
    let service =
        DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(120), false);
    let check = steady(&service.url(), "5m");
    stack
        .run_experiment(&doc("watch-kill", "1s", "    []\n", &check))
        .await;
    wait_watching(&stack, "watch-kill").await;
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    stack.start_coordinator();
    let e = stack.get("watch-kill").await;
    let h = e.hypothesis.expect("hypothesis");
    assert_eq!(
        (h.verdict.as_str(), h.reason.as_str()),
        (
            "failed",
            "the coordinator stopped while it watched the recovery"
        )
    );
}
