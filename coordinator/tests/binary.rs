//! The real `faultline-coordinator` binary: flag and config errors exit 2 naming the flag or
//! field; a normal run logs where it listens, serves /metrics, and exits 0 on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::http::{http_get, promtool_check};
use common::Env;

const BIN: &str = env!("CARGO_BIN_EXE_faultline-coordinator");

/// Runs the binary to completion with `args` (and no FAULTLINE_* variables from outside).
fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("FAULTLINE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run faultline-coordinator")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn base_args(env: &Env) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        env.data().display().to_string(),
        "--certs-dir".into(),
        env.certs().display().to_string(),
    ]
}

fn with(base: &[String], extra: &[&str]) -> Vec<String> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_owned(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

#[test]
fn a_lease_out_of_range_exits_2_naming_the_flag() {
    let env = Env::new();
    let out = run_owned(&with(&base_args(&env), &["--lease", "0s"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: --lease: 0s is outside the allowed range 1s..=1m"),
        "{}",
        stderr(&out)
    );
    let out = run_owned(&with(&base_args(&env), &["--lease", "soon"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--lease: \"soon\" is not a duration"),
        "{}",
        stderr(&out)
    );
    let out = run_owned(&with(
        &base_args(&env),
        &["--lease", "3s", "--renew-interval", "5s"],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("--renew-interval 5s must be greater than 0 and shorter than --lease 3s"),
        "{}",
        stderr(&out)
    );
    assert!(!env.data().exists(), "nothing is created for bad flags");
}

#[test]
fn missing_certificates_exit_2_naming_the_flags() {
    let env = Env::new();
    let out = run(&["--data-dir", &env.data().display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--certs-dir"), "{err}");
    assert!(
        err.contains("(missing: --tls-cert, --tls-key, --client-ca)"),
        "{err}"
    );

    let out = run(&["--tls-cert", "/nonexistent/c.pem", "--client-ca", "/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("(missing: --tls-key)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_certificates_are_a_runtime_failure() {
    let env = Env::new();
    let mut args = base_args(&env);
    args[7] = env.dir.path().join("nowhere").display().to_string();
    let out = run_owned(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere/ca.pem"), "{}", stderr(&out));
}

#[test]
fn a_bad_config_file_exits_2_naming_the_field() {
    let env = Env::new();
    let file = env.dir.path().join("coordinator.toml");
    std::fs::write(&file, "[policy]\nmax_fleet_percent_under_fault = 150\n").expect("write");
    let out = run_owned(&with(
        &base_args(&env),
        &["--config", &file.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("policy.max_fleet_percent_under_fault: 150 is outside 1..=100"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&file, "[policy]\nmax_parallel = 3\n").expect("write");
    let out = run_owned(&with(
        &base_args(&env),
        &["--config", &file.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("policy.max_parallel: unknown field `max_parallel`"),
        "{}",
        stderr(&out)
    );
    // The pod policy: the refusal names the field and what it accepts.
    for (text, want) in [
        (
            "[policy]\nmax_pod_percent_per_namespace = 0\n",
            "policy.max_pod_percent_per_namespace: 0 is outside 1..=100",
        ),
        (
            "[policy]\nmax_pod_percent_per_namespace = 101\n",
            "policy.max_pod_percent_per_namespace: 101 is outside 1..=100",
        ),
        (
            "[policy]\nprotected_namespaces = [\"kube-system\", \"Payments_EU\"]\n",
            "policy.protected_namespaces[1]: \"Payments_EU\" is not a namespace name: use 1..=63 \
             of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        let out = run_owned(&with(
            &base_args(&env),
            &["--config", &file.display().to_string()],
        ));
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{text}: {}", stderr(&out));
    }
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "[default: 0.0.0.0:7443]",
        "--metrics-listen",
        "[default: 0.0.0.0:9466]",
        "--data-dir",
        "[default: /var/lib/faultline-coordinator]",
        "--certs-dir",
        "--lease",
        "Range 1s..=60s",
        "--renew-interval",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--client-ca",
        "--log-format",
        "[env: FAULTLINE_LEASE=]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn addr_after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {line}"))
        + marker.len()..];
    rest.split([',', ' ', '/']).next().expect("address")
}

fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
}

/// Waits without blocking the runtime, so this test's own gRPC connection keeps answering
/// the server's graceful shutdown.
async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn runs_serves_metrics_and_exits_0_on_sigterm() {
    let env = Env::new();
    let config = env.dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        "[policy]\nprotected_namespaces = [\"kube-system\", \"payments\"]\n\
         max_pod_percent_per_namespace = 20\n",
    )
    .expect("write config");
    let args = with(
        &base_args(&env),
        &["--lease", "3s", "--config", &config.display().to_string()],
    );
    let child = Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn faultline-coordinator");
    let mut child = Running(child);
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a 'coordinator listening on' log line within 10 s");
        if line.contains("coordinator listening on") {
            break line;
        }
    };
    assert!(
        !listening.contains('\u{1b}'),
        "no colour codes in logs to a pipe: {listening}"
    );
    let grpc: std::net::SocketAddr = addr_after(&listening, "listening on ")
        .parse()
        .expect("grpc");
    let metrics: std::net::SocketAddr = addr_after(&listening, "metrics on http://")
        .parse()
        .expect("metrics");
    assert_eq!(grpc.ip().to_string(), "127.0.0.1");

    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# HELP faultline_coordinator_agents_connected "),
        "{body}"
    );
    assert!(body.contains("faultline_coordinator_halted 0"), "{body}");
    promtool_check(&body);
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);

    // A gRPC client gets through to the binary's Fleet service.
    let url =
        faultline_identity::tls::CoordinatorUrl::parse(&format!("https://{grpc}")).expect("url");
    let ch = faultline_identity::tls::connect(&url, &env.paths("viewer"), common::TIMEOUT)
        .await
        .expect("connect");
    let policy = faultline_proto::pb::fleet_client::FleetClient::new(ch)
        .get_policy(faultline_proto::pb::GetPolicyRequest {})
        .await
        .expect("GetPolicy")
        .into_inner();
    assert_eq!(policy.lease_ms, 3000);
    // The pod policy of --config, as the coordinator enforces it.
    assert_eq!(policy.protected_namespaces, ["kube-system", "payments"]);
    assert_eq!(policy.max_pod_percent_per_namespace, 20.0);

    let stopping = Instant::now();
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, Duration::from_secs(12)).await;
    // The reader thread ends at EOF, which comes with the exit.
    let logs: Vec<String> =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(2)).ok()).collect();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "graceful stop took {:?}:\n{}",
        stopping.elapsed(),
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|l| l.contains("SIGTERM received")),
        "{logs:?}"
    );
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        Path::new(&env.data()).join("store").exists(),
        "the store is in --data-dir"
    );
}
