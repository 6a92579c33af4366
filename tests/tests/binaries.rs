//! The real binaries as an operator runs them: coordinator and agent processes over mTLS on
//! loopback, time from agent start to connected, `/metrics` accepted by `promtool check metrics`,
//! `faultctl agents list` per role, and a clean exit on SIGTERM.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_tests::procs::{http_get, require_tool, run, Proc};
use faultline_tests::*;

struct Stack {
    certs: Certs,
    _dirs: Vec<tempfile::TempDir>,
    logs: tempfile::TempDir,
    coordinator: Proc,
    grpc: SocketAddr,
    coord_metrics: SocketAddr,
}

fn start_stack(agents: &[&str]) -> Stack {
    let certs = Certs::new(agents);
    let data = tempfile::tempdir().expect("data");
    let logs = tempfile::tempdir().expect("logs");
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let coord_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args: Vec<String> = vec![
        "--listen".into(),
        grpc.to_string(),
        "--metrics-listen".into(),
        coord_metrics.to_string(),
        "--data-dir".into(),
        data.path().display().to_string(),
        "--certs-dir".into(),
        certs.path().display().to_string(),
        "--lease".into(),
        "5s".into(),
    ];
    let coordinator = Proc::spawn(
        "coordinator",
        &binary("faultline-coordinator"),
        &args,
        logs.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(coord_metrics, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "coordinator not ready within 10 s; log:\n{}",
            coordinator.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Stack {
        certs,
        _dirs: vec![data],
        logs,
        coordinator,
        grpc,
        coord_metrics,
    }
}

fn spawn_agent(stack: &mut Stack, name: &str, labels: &str) -> (Proc, SocketAddr) {
    let state = tempfile::tempdir().expect("state");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args: Vec<String> = vec![
        "--coordinator".into(),
        format!("https://{}", stack.grpc),
        "--node-name".into(),
        name.into(),
        "--labels".into(),
        labels.into(),
        "--state-dir".into(),
        state.path().display().to_string(),
        "--metrics-listen".into(),
        metrics.to_string(),
        "--certs-dir".into(),
        stack.certs.path().display().to_string(),
        "--telemetry-interval".into(),
        "1s".into(),
    ];
    let p = Proc::spawn(name, &binary("faultline-agent"), &args, stack.logs.path());
    stack._dirs.push(state);
    (p, metrics)
}

fn wait_ready(p: &Proc, metrics: SocketAddr, timeout: Duration) -> Duration {
    let start = Instant::now();
    while http_get(metrics, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            start.elapsed() < timeout,
            "{} not connected within {timeout:?}; log:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn binaries_connect_quickly_and_faultctl_lists_them_by_role() {
    let mut stack = start_stack(&["bin-a", "bin-b"]);
    let t0 = Instant::now();
    let (mut a, ma) = spawn_agent(&mut stack, "bin-a", "zone=a,role=web");
    let (mut b, mb) = spawn_agent(&mut stack, "bin-b", "zone=b");
    let ta = wait_ready(&a, ma, Duration::from_secs(5));
    let tb = wait_ready(&b, mb, Duration::from_secs(5));
    eprintln!(
        "agent start -> connected: bin-a {} ms, bin-b {} ms (both within {} ms of the first spawn)",
        ta.as_millis(),
        tb.as_millis(),
        t0.elapsed().as_millis()
    );

    let faultctl = binary("faultctl");
    let url = format!("https://{}", stack.grpc);
    let certs = stack.certs.path().display().to_string();
    for identity in ["viewer", "operator", "admin"] {
        let (ok, out) = run(
            &faultctl,
            &[
                "--coordinator",
                &url,
                "--certs-dir",
                &certs,
                "--identity",
                identity,
                "-o",
                "json",
                "agents",
                "list",
            ],
        );
        assert!(ok, "faultctl agents list as {identity} failed:\n{out}");
        let json: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let agents = json.as_array().expect("array");
        assert_eq!(agents.len(), 2, "{out}");
        assert!(out.contains("\"zone\"") && out.contains("web"), "{out}");
    }
    let (ok, table) = run(
        &faultctl,
        &[
            "--coordinator",
            &url,
            "--certs-dir",
            &certs,
            "agents",
            "list",
        ],
    );
    assert!(ok, "{table}");
    assert!(
        table.contains("bin-a") && table.contains("bin-b") && table.contains("connected"),
        "{table}"
    );

    // A viewer may not halt the fleet; faultctl says so and fails.
    let (ok, out) = run(
        &faultctl,
        &[
            "--coordinator",
            &url,
            "--certs-dir",
            &certs,
            "--identity",
            "viewer",
            "halt",
            "--reason",
            "test",
        ],
    );
    assert!(!ok, "viewer halt must fail:\n{out}");
    assert!(out.to_lowercase().contains("permission denied"), "{out}");

    // SIGTERM: agents revert everything and exit 0; then the coordinator.
    for p in [&mut a, &mut b] {
        let status = p.signal_and_wait("TERM", Duration::from_secs(10));
        assert!(
            status.success(),
            "{} exit {status:?}; log:\n{}",
            p.name,
            p.log_text()
        );
        assert!(
            p.log_text().to_lowercase().contains("shutdown"),
            "{}",
            p.log_text()
        );
    }
    let status = stack
        .coordinator
        .signal_and_wait("TERM", Duration::from_secs(15));
    assert!(
        status.success(),
        "coordinator exit {status:?}; log:\n{}",
        stack.coordinator.log_text()
    );
}

#[test]
fn metrics_of_both_binaries_pass_promtool() {
    let promtool = require_tool("promtool", "prometheus");
    let mut stack = start_stack(&["prom-a"]);
    let (agent, ma) = spawn_agent(&mut stack, "prom-a", "zone=a");
    wait_ready(&agent, ma, Duration::from_secs(5));
    // Let a couple of renewals and telemetry samples happen so counters exist.
    std::thread::sleep(Duration::from_millis(2500));

    for (who, addr, must_have) in [
        (
            "coordinator",
            stack.coord_metrics,
            &[
                "faultline_coordinator_agents_connected 1",
                "faultline_coordinator_sessions_opened_total",
                "faultline_coordinator_lease_renewals_total",
            ][..],
        ),
        (
            "agent",
            ma,
            &[
                "faultline_agent_session_connected 1",
                "faultline_agent_telemetry_sent_total",
                "faultline_agent_lease_renewals_total",
            ][..],
        ),
    ] {
        let (code, body) =
            http_get(addr, "/metrics").unwrap_or_else(|| panic!("{who} /metrics unreachable"));
        assert_eq!(code, 200, "{who}: {body}");
        for m in must_have {
            assert!(body.contains(m), "{who} metrics lack {m}:\n{body}");
        }
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn promtool");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("feed promtool");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics rejects the {who}'s /metrics:\n{}{}\n--- body ---\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
