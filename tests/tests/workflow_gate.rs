//! A workflow's own steady-state hypothesis and `faultctl run -f` with a Workflow document,
//! with the real binaries (root: the agents run real cpu workers); and a workflow across a
//! graceful coordinator stop. The service the checks probe is degraded by the fault itself
//! (503 while the agent's workers run and for a set delay after).
//!
//! - a workflow check that does not hold before the first step: no step starts, the agent
//!   counts no injection and no worker ever appears, `faultctl run` exits 4;
//! - a service that recovers 3 s after the last step: the workflow's `recovery_ms` within
//!   2,000..4,500, `faultctl run` exits 0 (and 3 for an aborted workflow);
//! - SIGTERM to the coordinator in the middle of a step: the faults are reverted at once, and
//!   after the restart the workflow goes on and succeeds, `faultctl run` following it across.

#[path = "hypothesis/support.rs"]
#[allow(dead_code)] // shared with hypothesis.rs, whose experiment documents are not used here
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_tests::continuous::*;
use faultline_tests::stack::{workers_of, Stack};
use faultline_tests::*;
use support::{faultctl_run, injections, one_agent, steady, DegradedService};

/// These stress the CPU and time recoveries; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A workflow of `steps` (YAML lines under `steps:`) with the workflow-level `steady` block.
fn workflow(name: &str, steps: &str, steady: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n{steady}  steps:\n{steps}"
    )
}

fn cpu_step(name: &str, duration: &str) -> String {
    format!("    - name: {name}\n      experiment: {{duration: {duration}, targets: {{mode: all}}, faults: {CPU}}}\n")
}

/// The JSON report at the end of `faultctl run --report json`.
fn json_report(out: &str) -> serde_json::Value {
    let start = out
        .rfind("\n{\n")
        .map_or_else(|| out.find("{\n").unwrap_or(0), |i| i + 1);
    serde_json::from_str(&out[start..out.rfind('}').expect("end of the report") + 1])
        .unwrap_or_else(|e| panic!("report json: {e}\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_check_that_does_not_hold_starts_no_step_and_run_exits_4() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("wg-a");
    let pid = stack.agents[0].proc.pid();
    let service = DegradedService::start(pid, Duration::ZERO, true);
    let before = injections(&stack);
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
    let doc = workflow(
        "wgb",
        &(cpu_step("first", "3s") + &cpu_step("second", "3s")),
        &steady(&service.url(), "10s"),
    );
    let (code, out) = faultctl_run(&stack, &doc, &[]);
    watching.store(false, Ordering::SeqCst);
    watcher.join().expect("watcher");
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
    let w = faultline_tests::continuous::workflow(&stack, "wgb").await;
    assert_eq!(w.phase, "failed");
    for s in &w.steps {
        assert_eq!(s.state, "skipped", "{s:?}");
        assert!(s.experiment.is_empty(), "{s:?}");
    }
    let h = w.hypothesis.expect("hypothesis");
    assert_eq!(h.verdict, "failed");
    assert!(!h.checks[0].held_before);
    assert_eq!(h.checks[0].before_value, 503.0);
    // No experiment was ever created for the steps.
    let mut client = stack.experiments("viewer").await;
    let listed = client
        .list(faultline_proto::pb::ListExperimentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.experiments.is_empty(), "{:?}", listed.experiments);
    // describe shows the verdict and which check did not hold.
    let text = ctl_ok(&stack, &["describe", "workflow", "wgb"]);
    assert!(text.contains("Steady-state hypothesis: failed"), "{text}");
    assert!(
        text.contains("did not hold: status 503, expected 200"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_recovery_is_measured_after_the_last_step_and_run_exits_0() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("wr-a");
    let service = DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(3), false);
    let doc = workflow(
        "wgr",
        &(cpu_step("first", "2s")
            + "    - name: pause\n      suspend: {duration: 1s}\n"
            + &cpu_step("last", "2s")),
        &steady(&service.url(), "20s"),
    );
    let started = Instant::now();
    let (code, out) = faultctl_run(&stack, &doc, &["--report", "json"]);
    eprintln!(
        "faultctl run printed:\n{}",
        &out[..out.find("\n{\n").unwrap_or(out.len())]
    );
    assert_eq!(code, 0, "succeeded with the hypothesis passed:\n{out}");
    assert!(out.contains("step first succeeded"), "live progress: {out}");
    assert!(
        out.contains("watching the steady state"),
        "live progress: {out}"
    );
    let report = json_report(&out);
    assert_eq!(report["phase"], "succeeded", "{report}");
    assert_eq!(
        report["hypothesis"]["verdict"], "passed",
        "{}",
        report["hypothesis"]
    );
    let recovery = report["hypothesis"]["checks"][0]["recovery_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("recovery_ms: {}", report["hypothesis"]));
    eprintln!(
        "workflow recovery_ms of a service that recovers 3 s after the last revert: {recovery} (run took {} ms)",
        started.elapsed().as_millis()
    );
    assert!(
        (2_000..=4_500).contains(&recovery),
        "recovery_ms {recovery} outside 2000..=4500"
    );
    // Measured from the last revert of the last step's experiment, not of the first.
    let last = stack.get("wgr-last").await;
    let reverted = last
        .targets
        .iter()
        .map(|t| t.reverted_unix_ms)
        .max()
        .unwrap_or(0);
    assert_eq!(
        report["hypothesis"]["recovery_from_unix_ms"].as_i64(),
        Some(reverted),
        "{}",
        report["hypothesis"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_workflow_still_watches_recovery_and_run_exits_3() {
    let _serial = SERIAL.lock().await;
    let stack = one_agent("wa-a");
    let service = DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(1), false);
    let doc = workflow(
        "wga",
        &cpu_step("long", "60s"),
        &steady(&service.url(), "20s"),
    );
    let file = write(&stack, "wga.yaml", &doc);
    let mut run = Running::start(&stack, &file);
    let until = Instant::now() + Duration::from_secs(15);
    while workers_of(stack.agents[0].proc.pid()).is_empty() {
        assert!(Instant::now() < until, "no worker started");
        std::thread::sleep(Duration::from_millis(50));
    }
    ctl_ok(&stack, &["abort", "workflow", "wga", "--reason", "test"]);
    let (code, out) = run.finish(Duration::from_secs(30));
    assert_eq!(code, 3, "aborted:\n{out}");
    let w = faultline_tests::continuous::workflow(&stack, "wga").await;
    assert_eq!(w.phase, "aborted");
    let h = w.hypothesis.expect("hypothesis");
    assert_eq!(h.verdict, "passed", "{h:?}");
    let recovery = h.checks[0].recovery_ms.expect("recovery_ms");
    eprintln!(
        "aborted workflow: recovery_ms {recovery} for a service that recovers 1 s after the revert"
    );
    assert!((500..=2_500).contains(&recovery), "{recovery}");
}

/// `faultctl run -f FILE` in the background; killed by PID if the test ends first.
struct Running {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Running {
    fn start(stack: &Stack, file: &str) -> Running {
        let log = stack.dir.path().join(format!("run-{}.log", free_port()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary("faultctl"))
            .args([
                "--coordinator",
                &format!("https://{}", stack.grpc),
                "--certs-dir",
                &stack.certs.path().display().to_string(),
                "--identity",
                "operator",
                "run",
                "-f",
                file,
            ])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn faultctl run");
        Running {
            child: Some(child),
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn finish(&mut self, timeout: Duration) -> (i32, String) {
        let until = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return (status.code().unwrap_or(-1), self.output());
            }
            assert!(
                Instant::now() < until,
                "faultctl run did not end within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_coordinator_stop_mid_step_does_not_fail_the_workflow() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["wt-a"], Duration::from_secs(5));
    stack.spawn_agent("wt-a", "");
    let agent = stack.agents[0].proc.pid();
    let doc = workflow(
        "wgt",
        &(cpu_step("first", "8s") + &cpu_step("second", "2s")),
        "",
    );
    let file = write(&stack, "wgt.yaml", &doc);
    let mut run = Running::start(&stack, &file);
    let until = Instant::now() + Duration::from_secs(15);
    while workers_of(agent).is_empty() {
        assert!(
            Instant::now() < until,
            "no worker started:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The graceful stop reverts the step's fault at once, as for any experiment.
    let stopped = Instant::now();
    let status = stack
        .coordinator()
        .signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.success(), "coordinator exit: {status:?}");
    let gone = loop {
        if workers_of(agent).is_empty() {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "a worker outlived the graceful stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "graceful stop: the step's workers were gone {} ms after SIGTERM",
        gone.as_millis()
    );
    std::thread::sleep(Duration::from_secs(1));
    stack.start_coordinator();
    let restarted = Instant::now();
    // The rest of the step runs again after the restart.
    let back = loop {
        if !workers_of(agent).is_empty() {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the interrupted step did not go on after the restart:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "after the restart the step's fault was back in {} ms",
        back.as_millis()
    );
    let (code, out) = run.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "the workflow succeeded:\n{out}");
    let w = faultline_tests::continuous::workflow(&stack, "wgt").await;
    assert_eq!(w.phase, "succeeded", "{w:#?}");
    assert_eq!(step(&w, "first").state, "succeeded");
    assert_eq!(step(&w, "second").state, "succeeded");
    assert!(
        w.log.iter().any(|l| l
            .message
            .contains("stopped by the coordinator's graceful stop")),
        "{:#?}",
        w.log
    );
    // The rest of the step: what was left of its 8 s, not another 8 s.
    let first = stack.get("wgt-first").await;
    let ran = first.ended_unix_ms - first.started_unix_ms;
    eprintln!("the rest of the first step ran {ran} ms");
    assert!((3_000..=7_500).contains(&ran), "{ran}");
    assert!(workers_of(agent).is_empty(), "a worker is left");
}

#[test]
fn run_refuses_a_schedule_and_several_documents_saying_what_to_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schedule = dir.path().join("schedule.yaml");
    std::fs::write(
        &schedule,
        "apiVersion: faultline.dev/v1\nkind: Schedule\nmetadata: {name: nightly}\nspec:\n  schedule: '@daily'\n  experiment: {duration: 5s, targets: {mode: all}, faults: [{kind: cpu, load: 10}]}\n",
    )
    .expect("write");
    let two = dir.path().join("two.yaml");
    let exp = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: a}\nspec: {duration: 5s, targets: {mode: all}, faults: [{kind: cpu, load: 10}]}\n";
    std::fs::write(&two, format!("{exp}---\n{exp}")).expect("write");
    for (file, want) in [
        (&schedule, "faultctl schedule trigger NAME"),
        (&two, "has 2 documents"),
    ] {
        let out = Command::new(binary("faultctl"))
            .args(["--coordinator", "https://127.0.0.1:9", "--certs-dir"])
            .arg(dir.path())
            .args(["run", "-f"])
            .arg(file)
            .output()
            .expect("run faultctl");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains(want), "{text}");
        assert!(
            text.starts_with("--file") || text.contains("--file:"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_during_the_recovery_watch_goes_on_watching_after_its_restart() {
    let _serial = SERIAL.lock().await;
    let mut stack = one_agent("wk-a");
    let service = DegradedService::start(stack.agents[0].proc.pid(), Duration::from_secs(5), false);
    let doc = workflow(
        "wgk",
        &cpu_step("burn", "2s"),
        &steady(&service.url(), "30s"),
    );
    ctl_ok(&stack, &["apply", "-f", &write(&stack, "wgk.yaml", &doc)]);
    let until = Instant::now() + Duration::from_secs(20);
    let watching = loop {
        let w = faultline_tests::continuous::workflow(&stack, "wgk").await;
        if w.hypothesis
            .as_ref()
            .is_some_and(|h| h.recovery_from_unix_ms > 0)
        {
            break w;
        }
        assert!(
            Instant::now() < until,
            "the recovery watch did not start: {w:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(watching.phase, "succeeded");
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    stack.start_coordinator();
    let until = Instant::now() + Duration::from_secs(40);
    let h = loop {
        let w = faultline_tests::continuous::workflow(&stack, "wgk").await;
        let h = w.hypothesis.expect("hypothesis");
        if h.verdict != "pending" {
            break h;
        }
        assert!(
            Instant::now() < until,
            "left pending after the restart: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(h.verdict, "passed", "{h:?}");
    let from = watching
        .hypothesis
        .expect("hypothesis")
        .recovery_from_unix_ms;
    assert_eq!(
        h.recovery_from_unix_ms, from,
        "measured from the same revert"
    );
    let recovery = h.checks[0].recovery_ms.expect("recovery_ms");
    eprintln!(
        "recovery_ms across a coordinator SIGKILL during the watch: {recovery} (service: 5 s)"
    );
    assert!((4_500..=7_500).contains(&recovery), "{recovery}");
}
