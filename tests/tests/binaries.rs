//! The real binaries as an operator runs them: coordinator and agent processes over mTLS on
//! loopback, time from agent start to connected, `/metrics` accepted by `promtool check metrics`,
//! `faultctl agents list` per role, and a clean exit on SIGTERM.

use std::time::{Duration, Instant};

use faultline_tests::procs::{http_get, require_tool, run};
use faultline_tests::stack::{wait_ready, Stack};
use faultline_tests::*;

#[test]
fn binaries_connect_quickly_and_faultctl_lists_them_by_role() {
    let mut stack = Stack::start(&["bin-a", "bin-b"], Duration::from_secs(5));
    let t0 = Instant::now();
    stack.start_agent("bin-a", "zone=a,role=web");
    stack.start_agent("bin-b", "zone=b");
    let [a, b] = [&stack.agents[0], &stack.agents[1]];
    let ta = wait_ready(&a.proc, a.metrics, Duration::from_secs(5));
    let tb = wait_ready(&b.proc, b.metrics, Duration::from_secs(5));
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
    for agent in stack.agents.iter_mut() {
        let p = &mut agent.proc;
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
    let coordinator = stack.coordinator();
    let status = coordinator.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(
        status.success(),
        "coordinator exit {status:?}; log:\n{}",
        coordinator.log_text()
    );
}

#[test]
fn metrics_of_both_binaries_pass_promtool() {
    let promtool = require_tool("promtool", "prometheus");
    let mut stack = Stack::start(&["prom-a"], Duration::from_secs(5));
    stack.start_agent("prom-a", "zone=a");
    let agent = &stack.agents[0];
    let ma = agent.metrics;
    wait_ready(&agent.proc, ma, Duration::from_secs(5));
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
