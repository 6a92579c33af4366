//! The real `faultline-agent` binary: SIGTERM/SIGINT revert everything and exit 0, the metrics
//! endpoint, the state-dir lock, and where the node name comes from.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};

#[test]
fn sigterm_reverts_everything_and_exits_zero() {
    let s = setup();
    let mut agent = Running::spawn(command(&s.args(&[])));
    agent.wait_for_line("starting as node-a", Duration::from_secs(10));
    agent.wait_for_line("cannot connect to", Duration::from_secs(10));
    let sent = Instant::now();
    kill(agent.pid(), Signal::SIGTERM).expect("send SIGTERM");
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM:\n{}", agent.stderr()));
    let log = agent.stderr();
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{log}");
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(log.contains("received SIGTERM: shutting down"), "{log}");
    assert!(
        log.contains("reverted all faults (reason shutdown)"),
        "the log must say everything was reverted with reason shutdown:\n{log}"
    );
    let recovery = log
        .find("reverted all faults (reason recovery)")
        .unwrap_or_else(|| panic!("no start-up recovery in the log:\n{log}"));
    let connect = log.find("cannot connect to").expect("connect failure");
    assert!(
        recovery < connect,
        "recovery comes before the first connection:\n{log}"
    );
    assert!(
        log.contains("connection refused") || log.contains("Connection refused"),
        "the connect failure names its reason:\n{log}"
    );
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let s = setup();
    let mut agent = Running::spawn(command(&s.args(&[])));
    agent.wait_for_line("starting as node-a", Duration::from_secs(10));
    kill(agent.pid(), Signal::SIGINT).expect("send SIGINT");
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5 s of SIGINT:\n{}", agent.stderr()));
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(agent
        .stderr()
        .contains("reverted all faults (reason shutdown)"));
}

#[test]
fn metrics_endpoint_passes_promtool_and_is_not_ready_while_disconnected() {
    let s = setup();
    let mut agent = Running::spawn(command(&s.args(&[])));
    let line = agent.wait_for_line("serving /metrics", Duration::from_secs(10));
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    agent.wait_for_line("cannot connect to", Duration::from_secs(10));
    let metrics = http_get(addr, "/metrics");
    let body = metrics
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no HTTP body: {metrics}"));
    for name in [
        "faultline_agent_session_connected 0",
        "faultline_agent_reconnects_total",
        "faultline_agent_telemetry_sent_total 0",
        "faultline_agent_lease_renewals_total 0",
        "faultline_agent_lease_lapses_total 0",
        "faultline_agent_revert_all_total{reason=\"recovery\"} 1",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(p) => p,
        Err(e) => panic!("promtool is needed for this test ({e}): apt-get install prometheus"),
    };
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(http_get(addr, "/readyz").starts_with("HTTP/1.1 503"));
    assert!(http_get(addr, "/healthz").starts_with("HTTP/1.1 200"));
}

#[test]
fn a_second_agent_on_the_same_state_dir_names_the_first() {
    let s = setup();
    let mut first = Running::spawn(command(&s.args(&[])));
    first.wait_for_line("starting as node-a", Duration::from_secs(10));
    let (status, err) = run_to_exit(&s.args(&[]));
    assert_eq!(status.code(), Some(1), "{err}");
    let lock = s.state.join("agent.lock");
    assert!(err.contains(&lock.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("PID {}", first.child.id())),
        "the message names the other agent's PID:\n{err}"
    );
}

#[test]
fn node_name_defaults_to_node_name_env_then_hostname() {
    let s = setup();
    let mut args = s.args(&[]);
    args.drain(2..4); // no --node-name
    let mut cmd = command(&args);
    cmd.env("NODE_NAME", "node-b");
    let mut agent = Running::spawn(cmd);
    // --certs-dir then picks agent-node-b.pem, which matches.
    agent.wait_for_line("starting as node-b", Duration::from_secs(10));
    kill(agent.pid(), Signal::SIGTERM).expect("SIGTERM");
    let status = agent.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());

    // Neither flag nor $NODE_NAME: the hostname, lowercased.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read the hostname")
        .trim()
        .to_lowercase();
    let cert = s.certs.join("agent-node-a.pem");
    let key = s.certs.join("agent-node-a-key.pem");
    let (status, err) = run_to_exit(&[
        "--coordinator",
        &s.coordinator,
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
        "--ca",
        s.certs.join("ca.pem").to_str().expect("utf-8"),
        "--state-dir",
        s.state.to_str().expect("utf-8"),
    ]);
    if host != "node-a" {
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(&host), "the hostname {host:?} is named: {err}");
    }
}
