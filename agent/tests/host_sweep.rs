//! The sweep on the real kernel (as root): orphan workers, io files and pause guards of our
//! executable that no journal entry names are removed; named ones are kept. Its own test
//! binary, because a sweep acts on every worker of the agent executable on the host.

mod host_support;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::Protected;
use host_support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn deadline_ms(secs: u64) -> String {
    let at = SystemTime::now() + Duration::from_secs(secs);
    at.duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sweep_kills_orphan_workers_and_removes_orphan_io_files() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let orphan_id = unique("orphan");
    let me = std::process::id().to_string();
    let mut worker = Held::spawn(&strings(&[
        "__worker",
        "cpu",
        "--fault-id",
        &orphan_id,
        "--deadline-unix-ms",
        &deadline_ms(60),
        "--parent-pid",
        &me,
        "--load",
        "5",
    ]));
    worker.say("go");
    let proc = ProcTable::new("/proc");
    let wpid = worker.child.id();
    assert!(
        wait_for(Duration::from_secs(2), || proc
            .stat(wpid)
            .ok()
            .filter(|s| s.state != 'Z'))
        .is_some(),
        "the orphan worker runs"
    );
    let orphan_file = dir.path().join(format!(".faultline-io-{orphan_id}-0"));
    std::fs::write(&orphan_file, b"left behind").expect("write orphan file");
    // A journaled fault's file stays.
    let known_id = unique("known");
    let known = stress
        .plan(&ctx(&known_id, 30), &io(dir.path(), 1, MIB, 0))
        .expect("plan the known fault");
    let known_file = dir.path().join(format!(".faultline-io-{known_id}-0"));
    std::fs::write(&known_file, b"journaled").expect("write known file");
    let other_file = dir.path().join("not-ours");
    std::fs::write(&other_file, b"x").expect("write");

    let lines = stress.sweep(&[known]);
    println!("sweep: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("killed orphan cpu worker pid {wpid}"))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("removed orphan io file") && l.contains(&orphan_id)),
        "{lines:?}"
    );
    use std::os::unix::process::ExitStatusExt;
    let st = worker.child.wait().expect("wait");
    assert_eq!(st.signal(), Some(9), "the orphan worker was killed");
    assert!(!orphan_file.exists());
    assert!(known_file.exists(), "a journaled fault's file is kept");
    assert!(other_file.exists(), "files that are not ours are kept");
    let again = stress.sweep(&[]);
    assert!(
        again.iter().all(|l| !l.contains("worker")),
        "nothing of ours left running: {again:?}"
    );
}

#[test]
fn sweep_resumes_the_processes_of_orphan_guards() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_, process) = drivers(&config(&[], Protected::default()));
    let target = Sleeper::new("60");
    let proc = ProcTable::new("/proc");
    let id = proc.identity(target.pid()).expect("identity");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(target.pid() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    assert!(wait_for(Duration::from_secs(2), || (target.state() == 'T')
        .then_some(()))
    .is_some());
    let guard_id = unique("orphan-guard");
    let mut guard = Held::spawn(&strings(&[
        "__guard",
        "--fault-id",
        &guard_id,
        "--deadline-unix-ms",
        &deadline_ms(60),
        "--pids",
        &id.to_string(),
    ]));
    let gpid = guard.child.id();
    assert!(wait_for(Duration::from_secs(2), || (state(gpid) == 'S')
        .then_some(()))
    .is_some());
    let lines = process.sweep(&[]);
    println!("sweep: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("orphan pause guard pid {gpid}"))
                && l.contains("resuming 1 process")),
        "{lines:?}"
    );
    assert!(
        matches!(target.state(), 'S' | 'R'),
        "resumed: {}",
        target.state()
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(guard.child.wait().expect("wait").signal(), Some(9));
    guard.stdin = None;
}
