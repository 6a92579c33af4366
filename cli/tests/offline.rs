//! Commands that need no coordinator, and the errors a user sees when it cannot be used.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_faultctl");

fn faultctl(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FAULTLINE_COORDINATOR")
        .env_remove("FAULTLINE_CERTS_DIR")
        .env_remove("FAULTLINE_IDENTITY")
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_needs_no_coordinator() {
    let expected = format!("faultctl {}\n", env!("CARGO_PKG_VERSION"));
    let out = faultctl(&["version"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), expected);
    let out = faultctl(&["--version"]);
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn unreachable_coordinator_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().to_str().expect("utf-8 path");
    let init = faultctl(&["certs", "init", "--dir", d]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    // A loopback port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let started = Instant::now();
    let out = faultctl(&["--coordinator", &url, "--certs-dir", d, "agents", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: coordinator unreachable at {url}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("check --coordinator"), "hint: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused connection must fail fast"
    );
}

#[test]
fn missing_certificates_name_the_path_and_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("nowhere");
    let d = d.to_str().expect("utf-8 path");
    let out = faultctl(&["--certs-dir", d, "--identity", "operator", "policy"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{d}/operator.pem")), "{stderr}");
    assert!(stderr.contains(&format!("{d}/ca.pem")), "{stderr}");
    assert!(
        stderr.contains(&format!("faultctl certs init --dir {d}")),
        "{stderr}"
    );
}

#[test]
fn bad_global_flags_name_the_flag() {
    let out = faultctl(&["--coordinator", "http://127.0.0.1:7443", "agents", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: --coordinator: "), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");

    let out = faultctl(&["--timeout", "0s", "agents", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
    assert!(stderr.contains("100ms..=10m"), "{stderr}");

    let out = faultctl(&["--identity", "root", "agents", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--identity"), "{stderr}");

    let out = faultctl(&["audit", "--limit", "0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--limit") && stderr.contains("1..=10000"),
        "{stderr}"
    );
}

#[test]
fn every_command_explains_itself() {
    for args in [
        vec!["--help"],
        vec!["certs", "init", "--help"],
        vec!["agents", "list", "--help"],
        vec!["audit", "--help"],
        vec!["halt", "--help"],
        vec!["apply", "--help"],
        vec!["get", "experiments", "--help"],
        vec!["describe", "experiment", "--help"],
        vec!["watch", "--help"],
        vec!["abort", "--help"],
        vec!["report", "--help"],
    ] {
        let out = faultctl(&args);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        assert!(help.contains("--coordinator <URL>"), "{args:?}: {help}");
        assert!(help.contains("[default: 5s]"), "{args:?}: {help}");
    }
    let help = text(&faultctl(&["certs", "init", "--help"]).stdout);
    assert!(help.contains("1..=3650"), "{help}");
}

#[test]
fn experiment_argument_errors_name_the_flag_and_exit_2() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["apply"], &["--file <FILE>"]),
        (
            &["apply", "-f", "x.yaml", "--dry-run", "--no-start"],
            &["--no-start", "--dry-run"],
        ),
        (
            &["get", "experiments", "--phase", "done"],
            &["--phase", "running"],
        ),
        (
            &["describe", "experiment", "Bad_Name"],
            &["Bad_Name", "1..=63"],
        ),
        (&["watch", "-x"], &["'-x'"]),
        (
            &["abort", "exp-1", "--reason", " "],
            &["--reason", "must not be empty"],
        ),
        (
            &["report", "exp-1", "--format", "html"],
            &["--format", "md", "json"],
        ),
        (&["get", "pods"], &["pods"]),
    ];
    for (args, needles) in cases {
        let out = faultctl(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{args:?}: missing {n:?} in {stderr}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn apply_reads_the_file_before_dialling() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.yaml");
    let m = missing.to_str().expect("utf-8 path");
    // No coordinator and no certificates: the file is checked first.
    let out = faultctl(&["--certs-dir", "/nonexistent", "apply", "-f", m]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: {m}: cannot read the experiment document (-f): "
        )),
        "{stderr}"
    );
    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "\n").expect("write");
    let out = faultctl(&["apply", "-f", empty.to_str().expect("utf-8")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the document is empty"), "{stderr}");
}
