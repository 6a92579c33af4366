//! Notifications with the real binaries (root: real cpu workers): a webhook receiver (a real
//! HTTP server here) gets each event of each run exactly once, signed with HMAC-SHA256 of the
//! body; a receiver that is down or hangs does not slow an abort.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::receiver::{Mode, Receiver};
use faultline_tests::stack::{workers_of, Stack};
use faultline_tests::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "webhook-test-secret";

fn webhook_config(dir: &std::path::Path, url: &str) -> String {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret file");
    format!(
        "\n[[notifications]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"{}\"\nevents = [\"started\", \"aborted\", \"completed\", \"failed\", \"hypothesis_failed\"]\n",
        secret.display()
    )
}

fn doc(name: &str, duration: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {duration}\n  targets: {{mode: all}}\n  faults:\n    - {{kind: cpu, load: 20, workers: 1}}\n"
    )
}

/// A stack whose coordinator notifies `url`; the secret file lives in a dir of its own.
fn stack_notifying(agent: &str, url: Option<&str>) -> (Stack, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("secrets dir");
    let extra = url.map_or(String::new(), |u| webhook_config(secrets.path(), u));
    let mut stack = Stack::start_with(&[agent], Duration::from_secs(5), &extra);
    stack.spawn_agent(agent, "");
    (stack, secrets)
}

fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// (run name, event) -> how many times it arrived; every signature checked on the way.
fn events(r: &Receiver) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for req in r.received() {
        assert_eq!(req.method, "POST");
        let sig = req
            .headers
            .get("x-faultline-signature")
            .unwrap_or_else(|| panic!("unsigned: {:?}", req.headers));
        assert_eq!(sig, &expected_signature(&req.body), "bad signature");
        let body: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
        // A workflow's own events say so; its steps' experiments notify as experiments.
        let kind = body["kind"].as_str().unwrap_or_default();
        let name = body["name"].as_str().unwrap_or_default();
        let want = if matches!(name, "wh-flow" | "wh-gate") {
            "workflow"
        } else {
            "experiment"
        };
        assert_eq!(kind, want, "{body}");
        let summary = body["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.contains("http://") && !summary.contains("https://"),
            "{summary}"
        );
        let key = (
            body["name"].as_str().unwrap_or_default().to_string(),
            body["event"].as_str().unwrap_or_default().to_string(),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

async fn abort(stack: &Stack, name: &str) -> pb::Experiment {
    let mut client = stack.experiments("operator").await;
    client
        .abort(pb::AbortExperimentRequest {
            name: name.into(),
            reason: "test abort".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("abort {name}: {s:?}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_each_event_once_signed() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start(Mode::Answer);
    let url = format!("http://{}/hooks/faultline", receiver.addr);
    let (stack, _secrets) = stack_notifying("wh-a", Some(&url));

    stack.run_experiment(&doc("wh-complete", "2s")).await;
    stack
        .wait_phase("wh-complete", Phase::Completed, Duration::from_secs(20))
        .await;
    stack.run_experiment(&doc("wh-abort", "60s")).await;
    stack
        .wait_phase("wh-abort", Phase::Running, Duration::from_secs(10))
        .await;
    abort(&stack, "wh-abort").await;
    stack
        .wait_all_reverted("wh-abort", Duration::from_secs(10))
        .await;
    // Refused before injection: its steady-state check cannot reach its service.
    let refused = format!(
        "{}  steadyState:\n    checks: [{{name: svc, http: {{url: 'http://127.0.0.1:{}/'}}}}]\n",
        doc("wh-refused", "10s"),
        free_port()
    );
    stack.run_experiment(&refused).await;
    stack
        .wait_phase("wh-refused", Phase::Failed, Duration::from_secs(10))
        .await;
    // A workflow: its own start and end, and its step's experiment, each once.
    let flow = "apiVersion: faultline.dev/v1\nkind: Workflow\nmetadata: {name: wh-flow}\nspec:\n  steps:\n    - name: burn\n      experiment: {duration: 2s, targets: {mode: all}, faults: [{kind: cpu, load: 20, workers: 1}]}\n";
    let mut workflows = pb::workflows_client::WorkflowsClient::new(stack.channel("operator").await);
    workflows
        .create(pb::CreateWorkflowRequest {
            document: flow.into(),
        })
        .await
        .expect("create workflow");
    // A workflow whose own steady-state check does not hold: started, failed (its verdict in
    // the body) and hypothesis failed; no step, so no experiment event.
    let gate = format!(
        "apiVersion: faultline.dev/v1\nkind: Workflow\nmetadata: {{name: wh-gate}}\nspec:\n  steadyState:\n    checks: [{{name: svc, http: {{url: 'http://127.0.0.1:{}/'}}}}]\n  steps:\n    - name: burn\n      experiment: {{duration: 2s, targets: {{mode: all}}, faults: [{{kind: cpu, load: 20, workers: 1}}]}}\n",
        free_port()
    );
    workflows
        .create(pb::CreateWorkflowRequest { document: gate })
        .await
        .expect("create workflow wh-gate");
    receiver.wait_for("14 notifications", Duration::from_secs(30), |r| {
        r.len() >= 14
    });
    // Anything duplicated would arrive within the retries' backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = events(&receiver);
    let want: BTreeMap<(String, String), usize> = [
        ("wh-complete", "started"),
        ("wh-complete", "completed"),
        ("wh-abort", "started"),
        ("wh-abort", "aborted"),
        ("wh-refused", "started"),
        ("wh-refused", "failed"),
        ("wh-refused", "hypothesis_failed"),
        ("wh-flow", "started"),
        ("wh-flow", "completed"),
        ("wh-flow-burn", "started"),
        ("wh-flow-burn", "completed"),
        ("wh-gate", "started"),
        ("wh-gate", "failed"),
        ("wh-gate", "hypothesis_failed"),
    ]
    .into_iter()
    .map(|(n, e)| ((n.to_string(), e.to_string()), 1))
    .collect();
    assert_eq!(got, want, "each event exactly once");
    for req in receiver.received() {
        let body: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
        if body["name"] == "wh-gate" && body["event"] != "started" {
            assert_eq!(body["verdict"], "failed", "{body}");
            assert!(
                body["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains("steady-state")),
                "{body}"
            );
        }
    }
    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().all(|p| p == "/hooks/faultline"), "{paths:?}");
    let (code, metrics) =
        faultline_tests::procs::http_get(stack.coord_metrics, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let delivered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("faultline_coordinator_notifications_total")
                && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(delivered, 14.0, "{metrics}");
}

/// Starts and aborts an experiment; its abort latency (trigger -> last revert acknowledged).
async fn abort_latency(stack: &Stack, name: &str) -> u64 {
    stack.run_experiment(&doc(name, "60s")).await;
    stack
        .wait_phase(name, Phase::Running, Duration::from_secs(10))
        .await;
    // Abort a fault that is really in place: the agent's cpu worker runs.
    let pid = stack.agents[0].proc.pid();
    wait_for("the cpu worker", Duration::from_secs(10), || async {
        (!workers_of(pid).is_empty()).then_some(())
    })
    .await;
    // Let the started notification reach (or hang on) the receiver first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let called = std::time::Instant::now();
    let e = abort(stack, name).await;
    let answered = called.elapsed();
    assert_eq!(e.phase, Phase::Aborted as i32);
    stack.wait_all_reverted(name, Duration::from_secs(10)).await;
    // The run is over (and its agent free for the next) once it logged "finished".
    let e = wait_for("the run to finish", Duration::from_secs(10), || async {
        let e = stack.get(name).await;
        e.log
            .iter()
            .any(|l| l.message.starts_with("finished: "))
            .then_some(e)
    })
    .await;
    let abort = e.abort.expect("abort");
    if abort.latency_ms == 0 {
        eprintln!("{abort:?}\n{:?}\n{:#?}", e.targets, e.log);
    }
    let latency = abort.latency_ms;
    eprintln!(
        "{name}: Abort answered in {} ms, abort latency {latency} ms",
        answered.as_millis()
    );
    assert!(answered < Duration::from_secs(1), "Abort took {answered:?}");
    latency
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hanging_receiver_does_not_slow_an_abort() {
    let _serial = SERIAL.lock().await;
    let (plain, _s0) = stack_notifying("dl-base", None);
    let mut baseline = Vec::new();
    for i in 0..3 {
        baseline.push(abort_latency(&plain, &format!("base-{i}")).await);
    }
    drop(plain);

    let hanging = Receiver::start(Mode::Hang);
    let (stack, _s1) = stack_notifying("dl-hang", Some(&format!("http://{}/", hanging.addr)));
    let mut hung = Vec::new();
    for i in 0..3 {
        hung.push(abort_latency(&stack, &format!("hang-{i}")).await);
    }
    assert!(
        !hanging.received().is_empty(),
        "the hanging receiver was called"
    );
    drop(stack);

    // Down: nothing listens on the port.
    let (stack, _s2) = stack_notifying(
        "dl-down",
        Some(&format!("http://127.0.0.1:{}/", free_port())),
    );
    let mut down = Vec::new();
    for i in 0..3 {
        down.push(abort_latency(&stack, &format!("down-{i}")).await);
    }
    eprintln!(
        "abort latency (ms): no notifications {baseline:?}, hanging webhook {hung:?}, webhook down {down:?}"
    );
    let worst_base = baseline.iter().copied().max().unwrap_or(0);
    for l in hung.iter().chain(&down) {
        assert!(
            *l < 1000 && *l <= worst_base + 500,
            "abort latency {l} ms with a dead receiver (baseline {baseline:?})"
        );
    }
    // The failures were audited (after their 4 attempts, about 3.5 s for a refused connection),
    // naming the destination and the run, never the secret.
    let fleet = pb::fleet_client::FleetClient::new(stack.channel("viewer").await);
    let audited = wait_for("a Notify audit entry", Duration::from_secs(15), || {
        let mut fleet = fleet.clone();
        async move {
            let entries = fleet
                .audit_log(pb::AuditLogRequest { limit: 200 })
                .await
                .expect("audit log")
                .into_inner()
                .entries;
            entries.into_iter().find(|e| e.action == "Notify")
        }
    })
    .await;
    eprintln!(
        "audit: {} {}: {}",
        audited.identity, audited.action, audited.detail
    );
    assert!(
        audited.detail.starts_with("webhook notification ")
            && audited.detail.contains("not delivered after 4 attempts"),
        "{audited:?}"
    );
    assert!(!audited.detail.contains(SECRET));
    // The failures were counted.
    let (_, metrics) =
        faultline_tests::procs::http_get(stack.coord_metrics, "/metrics").expect("metrics");
    let failed_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("faultline_coordinator_notification_attempts_total")
                && l.contains("result=\"error\"")
        })
        .collect();
    assert!(
        failed_lines.iter().any(|l| !l.ends_with(" 0")),
        "attempts to a dead receiver are counted: {failed_lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_triggers_on_abort_and_resolves_on_recovery_and_slack_gets_text() {
    let _serial = SERIAL.lock().await;
    let pagerduty = Receiver::start(Mode::Answer);
    let slack = Receiver::start(Mode::Answer);
    let secrets = tempfile::tempdir().expect("secrets");
    let key_file = secrets.path().join("routing-key");
    std::fs::write(&key_file, "R0UT1NGKEY\n").expect("routing key");
    let extra = format!(
        "\n[[notifications]]\nkind = \"pagerduty\"\nurl = \"http://{}/v2/enqueue\"\nsecret_file = \"{}\"\nevents = [\"aborted\", \"failed\", \"hypothesis_failed\"]\n\n[[notifications]]\nkind = \"slack\"\nurl = \"http://{}/services/T0/B0/X\"\nevents = [\"aborted\"]\n",
        pagerduty.addr,
        key_file.display(),
        slack.addr
    );
    let mut stack = Stack::start_with(&["pd-a"], Duration::from_secs(5), &extra);
    stack.spawn_agent("pd-a", "");
    stack.run_experiment(&doc("pd-abort", "60s")).await;
    let pid = stack.agents[0].proc.pid();
    wait_for("the cpu worker", Duration::from_secs(10), || async {
        (!workers_of(pid).is_empty()).then_some(())
    })
    .await;
    abort(&stack, "pd-abort").await;
    pagerduty.wait_for("trigger and resolve", Duration::from_secs(15), |r| {
        r.len() >= 2
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<serde_json::Value> = pagerduty
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let actions: Vec<&str> = bodies
        .iter()
        .map(|b| b["event_action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"], "{bodies:#?}");
    for b in &bodies {
        assert_eq!(b["routing_key"], "R0UT1NGKEY");
        assert_eq!(b["dedup_key"], "faultline/experiment/pd-abort");
    }
    assert!(
        bodies[0]["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("pd-abort aborted")),
        "{:#?}",
        bodies[0]
    );
    slack.wait_for("one slack message", Duration::from_secs(10), |r| {
        !r.is_empty()
    });
    let got = slack.received();
    assert_eq!(got.len(), 1, "only the listed event");
    let text: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert!(
        text["text"]
            .as_str()
            .is_some_and(|t| t.contains("*pd-abort* aborted")),
        "{text}"
    );
}
