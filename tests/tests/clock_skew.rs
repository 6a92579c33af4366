//! Clock skew cannot stretch or block a fault (real binaries under libfaketime, root: real cpu
//! workers). The coordinator sends each fault's remaining duration and the agent enforces it on
//! its monotonic clock from receipt, so an agent whose wall clock is 10 minutes ahead still
//! applies it (an absolute deadline would look past), and one 10 minutes behind still ends it on
//! time on its own, even with the coordinator gone (an absolute deadline would run 10 minutes
//! long until the lease lapsed).

use std::time::{Duration, Instant};

use faultline_proto::pb::{ExperimentPhase as Phase, FaultState};
use faultline_tests::procs::require_tool;
use faultline_tests::stack::{workers_of, Stack};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Long enough that only the agent's own deadline can end the fault in time.
const LEASE: Duration = Duration::from_secs(15);
const FAULT: Duration = Duration::from_secs(4);

fn libfaketime() -> &'static str {
    require_tool("faketime", "faketime");
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing: install Debian's faketime package (apt-get install faketime)"
    );
    lib
}

async fn skewed_fault_applies_and_ends_on_time(offset: &str) {
    let _serial = SERIAL.lock().await;
    let lib = libfaketime();
    let mut stack = Stack::start(&["skew-a"], LEASE);
    stack.start_agent_env(
        "skew-a",
        "",
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_RESET", "1"),
        ],
    );
    let a = &stack.agents[0];
    faultline_tests::stack::wait_ready(&a.proc, a.metrics, Duration::from_secs(10));
    let name = format!("skew{}", offset.replace(['+', '-'], "").replace('m', ""));
    let name = if offset.starts_with('-') {
        format!("{name}-behind")
    } else {
        format!("{name}-ahead")
    };
    let doc = format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {}s\n  targets:\n    mode: all\n  faults:\n    - {{kind: cpu, load: 10, workers: 1}}\n",
        FAULT.as_secs()
    );
    stack.run_experiment(&doc).await;
    let started = Instant::now();
    // It applies: a clock ahead does not make the order look expired.
    let e = loop {
        let e = stack.get(&name).await;
        let t = &e.targets[0];
        if t.state == FaultState::Applied as i32 {
            break e;
        }
        assert!(
            t.state != FaultState::Failed as i32,
            "the skewed agent refused the fault: {}",
            t.error
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not applied: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(e.phase, Phase::Running as i32);
    assert!(
        !workers_of(stack.agents[0].proc.pid()).is_empty(),
        "no worker runs"
    );
    // The coordinator goes away: only the agent's own clock can end the fault before the lease.
    stack
        .coordinator()
        .signal_and_wait("KILL", Duration::from_secs(5));
    loop {
        if workers_of(stack.agents[0].proc.pid()).is_empty() {
            break;
        }
        assert!(
            started.elapsed() < FAULT + Duration::from_secs(2),
            "agent {offset}: the fault outlived its {FAULT:?} (still running after {:?}); log:\n{}",
            started.elapsed(),
            stack.agents[0].proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = started.elapsed();
    eprintln!(
        "agent clock {offset}: fault of {FAULT:?} applied, ended {} ms after Create (lease {LEASE:?})",
        ended.as_millis()
    );
    assert!(
        ended >= FAULT - Duration::from_millis(500),
        "ended early: {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_ten_minutes_ahead_applies_and_ends_faults_on_time() {
    skewed_fault_applies_and_ends_on_time("+10m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_ten_minutes_behind_ends_faults_on_time_without_the_coordinator() {
    skewed_fault_applies_and_ends_on_time("-10m").await;
}
