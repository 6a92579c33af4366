//! The real binary's `run` and `recover` subcommands: bad input exits 2 naming the document
//! and field (nothing changed), limits from --config are enforced, and a real cpu fault is
//! applied and reverted at the end with the lines scripts follow (`applied <id> <kind>`,
//! `reverted <id> <reason>`).

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::command;

fn run(args: &[&str]) -> (Output, String, String) {
    let out = command(args).output().expect("run faultline-agent");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// Tests that get as far as the start-up sweep run one at a time: a sweep removes the workers
/// of any other agent process that uses the same binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn a_bad_document_exits_2_naming_document_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let file = write(
        dir.path(),
        "fault.yaml",
        "kind: cpu\nload: 50\n---\nkind: cpu\nload: 150\n",
    );
    let (out, stdout, stderr) = run(&["run", "-f", &file, "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("{file} document 2: load: 150 is outside 1..=100")),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "nothing applied: {stdout}");
    assert!(
        !Path::new(&state).exists(),
        "nothing touched, not even the state dir"
    );

    let file = write(
        dir.path(),
        "kill.yaml",
        "kind: process\naction: kill\nsignal: SIGFOO\nselector: {pid: 99999}\n",
    );
    let (out, _, stderr) = run(&["run", "-f", &file, "--state-dir", &state]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("document 1: signal: \"SIGFOO\" is not a signal"),
        "{stderr}"
    );
}

#[test]
fn config_errors_and_limits_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let file = write(dir.path(), "cpu.yaml", "kind: cpu\nload: 10\nworkers: 1\n");
    let bad = write(
        dir.path(),
        "bad.toml",
        "[limits]\nmax_concurrent_faults = 0\n",
    );
    let (out, _, stderr) = run(&["run", "-f", &file, "--state-dir", &state, "--config", &bad]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--config {bad}: limits.max_concurrent_faults: 0 is outside 1..=1000"
        )),
        "{stderr}"
    );
    let hour = write(dir.path(), "hour.toml", "[limits]\nmax_duration = \"1h\"\n");
    let (out, _, stderr) = run(&[
        "run",
        "-f",
        &file,
        "--state-dir",
        &state,
        "--config",
        &hour,
        "--duration",
        "2h",
    ]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("--duration: duration 2h exceeds the agent's max_duration 1h (agent config)"),
        "{stderr}"
    );
    // The daemon reads the same file and refuses it before starting.
    let (out, _, stderr) = run(&[
        "--coordinator",
        "https://127.0.0.1:1",
        "--node-name",
        "node-a",
        "--config",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("limits.max_concurrent_faults"), "{stderr}");
}

#[test]
fn an_io_fault_outside_io_paths_is_refused_with_the_allowed_list() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let config = write(
        dir.path(),
        "agent.toml",
        &format!("[limits]\nio_paths = [\"{}\"]\n", io_dir.display()),
    );
    let file = write(
        dir.path(),
        "io.yaml",
        "kind: io\npath: /var/tmp\nworkers: 1\nsize: 1Mi\n",
    );
    let (out, stdout, stderr) = run(&[
        "run",
        "-f",
        &file,
        "--state-dir",
        &state,
        "--config",
        &config,
        "--duration",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let want = format!(
        "spec.path: /var/tmp is not one of the agent's io_paths [{}] (agent config)",
        io_dir.display()
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("failed run-") && l.ends_with(&want)),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: 0 applied, 0 reverted, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn recover_on_a_clean_state_dir_finds_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let (out, stdout, stderr) = run(&["recover", "--state-dir", &state]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "recovery: nothing found (the journal is empty and the sweep found no orphans)"
    );
}

#[test]
fn run_applies_a_real_cpu_fault_and_reverts_it_at_the_end() {
    let _serial = serial();
    assert!(
        is_root(),
        "this test runs cpu workers in cgroups and needs root (run the tests as root)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let file = write(dir.path(), "cpu.yaml", "kind: cpu\nload: 10\nworkers: 1\n");
    let started = Instant::now();
    let (out, stdout, stderr) = run(&[
        "run",
        "-f",
        &file,
        "--duration",
        "3s",
        "--state-dir",
        &state,
    ]);
    let took = started.elapsed();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("applied "))
        .and_then(|rest| {
            let mut w = rest.split_whitespace();
            let id = w.next()?;
            (w.next()? == "cpu").then(|| id.to_string())
        })
        .unwrap_or_else(|| panic!("no `applied <id> cpu` line:\n{stdout}\n{stderr}"));
    assert!(
        stdout.contains(&format!("reverted {id} deadline")),
        "{stdout}"
    );
    assert!(
        stdout.contains("progress 2s elapsed, 1s remaining"),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: 1 applied, 1 reverted, 0 failed"),
        "{stdout}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (out, stdout, _) = run(&["recover", "--state-dir", &state]);
    assert!(out.status.success());
    assert!(
        stdout.contains("nothing found"),
        "nothing left after the run: {stdout}"
    );
}
