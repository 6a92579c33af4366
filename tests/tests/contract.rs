//! The lease contract with the real binaries (root: the agent runs real cpu workers): a fault
//! exists on a node only while the coordinator vouches for it.
//!
//! - A coordinator SIGKILLed and restarted inside the lease (as systemd's `RestartSec=2s` does)
//!   resumes its experiment: the agent keeps the fault, the guard is evaluated again and a
//!   breach aborts it within a second.
//! - A coordinator that comes back with a wiped store vouches for nothing: the agent reverts the
//!   fault as soon as it reconnects.

use std::time::{Duration, Instant};

use faultline_proto::pb::{self, ExperimentPhase as Phase};
use faultline_tests::stack::{agents_connected, workers_of, Stack, TestService};

/// These tests measure how fast workers disappear: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEASE: Duration = Duration::from_secs(10);

fn doc(name: &str, guards: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: 5m\n  targets:\n    mode: all\n  faults:\n    - {{kind: cpu, load: 10, workers: 1}}\n  guards:\n{guards}  guardInterval: 250ms\n"
    )
}

/// Polls until the agent's workers are present (or gone); returns how long that took.
async fn wait_workers(stack: &Stack, present: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let w = workers_of(stack.agents[0].proc.pid());
        if w.is_empty() != present {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "workers {} within {timeout:?}: {w:?}; agent log:\n{}",
            if present {
                "did not start"
            } else {
                "still running"
            },
            stack.agents[0].proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_connected(stack: &Stack, timeout: Duration) -> Instant {
    let start = Instant::now();
    while agents_connected(stack.coord_metrics) < 1.0 {
        assert!(
            start.elapsed() < timeout,
            "the agent did not reconnect within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Instant::now()
}

async fn start_and_kill(stack: &mut Stack, name: &str, guards: &str) {
    stack.spawn_agent("ct-a", "");
    stack.run_experiment(&doc(name, guards)).await;
    stack
        .wait_phase(name, Phase::Running, Duration::from_secs(10))
        .await;
    wait_workers(stack, true, Duration::from_secs(5)).await;
    // A heartbeat or two reach the store.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    // systemd's RestartSec=2s, less the time it takes to notice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restarted_inside_the_lease_resumes_and_its_guard_still_aborts() {
    let _serial = SERIAL.lock().await;
    let service = TestService::start();
    let mut stack = Stack::start(&["ct-a"], LEASE);
    let guards = format!(
        "    - {{name: health, http: {{url: 'http://{}/healthz', expectStatus: 200, timeout: 1s, failures: 1}}}}\n",
        service.addr
    );
    start_and_kill(&mut stack, "resumed", &guards).await;
    let restarted = Instant::now();
    stack.start_coordinator();
    let restart_ms = faultline_tests::now_unix_ms();

    let e = stack.get("resumed").await;
    assert_eq!(e.phase, Phase::Running as i32, "{}", e.verdict_reason);
    let resumed = e
        .log
        .iter()
        .find(|l| {
            l.message
                .starts_with("resumed: the coordinator was down from")
        })
        .unwrap_or_else(|| panic!("no resume in the log: {:?}", e.log));
    eprintln!("{}", resumed.message);
    wait_connected(&stack, Duration::from_secs(5)).await;
    // The agent kept its fault: the coordinator vouched for it in the Welcome.
    assert!(
        !workers_of(stack.agents[0].proc.pid()).is_empty(),
        "the resumed fault was reverted"
    );
    // The guard runs again.
    let first_guard = loop {
        let e = stack.get("resumed").await;
        if let Some(s) = e.guard_timeline.iter().find(|s| s.at_unix_ms >= restart_ms) {
            break s.at_unix_ms;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "no guard sample after the restart: {:?}",
            e.guard_timeline
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "coordinator restart -> first guard evaluation of the resumed experiment: {} ms",
        first_guard - restart_ms
    );
    // Still held well past the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!workers_of(stack.agents[0].proc.pid()).is_empty());

    let breached = Instant::now();
    service.set_status(503);
    let gone = wait_workers(&stack, false, Duration::from_secs(5)).await;
    eprintln!(
        "resumed experiment: guard breach -> workers gone in {} ms",
        gone.as_millis()
    );
    assert!(
        gone <= Duration::from_secs(1),
        "the breach took {gone:?} to revert"
    );
    let e = stack
        .wait_phase("resumed", Phase::Aborted, Duration::from_secs(5))
        .await;
    let abort = e.abort.expect("abort info");
    assert_eq!(
        (abort.trigger.as_str(), abort.guard.as_str()),
        ("guard", "health")
    );
    assert!(breached.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_a_wiped_store_reverts_what_it_does_not_know() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start(&["ct-a"], LEASE);
    start_and_kill(&mut stack, "forgotten", "    []\n").await;
    let data = stack.coordinator_data();
    std::fs::remove_dir_all(&data).expect("wipe the coordinator's store");
    stack.start_coordinator();
    let connected = wait_connected(&stack, Duration::from_secs(5)).await;
    let gone = wait_workers(&stack, false, Duration::from_secs(5)).await;
    let after_reconnect = connected.elapsed();
    eprintln!(
        "wiped store: agent reconnect -> fault reverted in {} ms",
        after_reconnect.as_millis()
    );
    assert!(
        after_reconnect <= Duration::from_secs(1),
        "reverted {after_reconnect:?} after the reconnect ({gone:?} after polling began)"
    );
    assert!(
        stack.agents[0]
            .proc
            .log_text()
            .contains("the coordinator no longer vouches for it"),
        "the agent says why"
    );
    let mut fleet = pb::fleet_client::FleetClient::new(stack.channel("viewer").await);
    let audit = fleet
        .audit_log(pb::AuditLogRequest { limit: 50 })
        .await
        .expect("audit")
        .into_inner();
    assert!(
        audit
            .entries
            .iter()
            .any(|a| a.action == "AgentSession.Reconcile" && a.detail.contains("forgotten")),
        "the coordinator audited the unvouched fault: {:?}",
        audit.entries
    );
}
