//! io faults write in the TARGET's filesystem, on the real kernel (as root): a target in a
//! mount namespace of its own, with a private tmpfs over the io directory, gets the file in
//! THAT tmpfs (seen through /proc/<pid>/root, absent from the host's directory); revert, a
//! journaled recovery after the agent was SIGKILLed and the sweep of a lost journal all remove
//! it there; a symbolic link planted at the file's name or as the directory is never followed.
//!
//! Its own test binary, one test at a time: `run` and `recover` sweep away the workers of
//! every other user of the same agent binary.

mod host_support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use faultline_agent::engine::driver::{DriverError, RevertOutcome};
use faultline_agent::host::proc::ProcTable;
use faultline_agent::host::{scan, Protected};
use faultline_core::fault::{ContainerRef, Target};
use host_support::standalone::*;
use host_support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_on(target: Target, dir: &Path) -> faultline_core::fault::FaultSpec {
    let mut spec = io(dir, 1, 4 * MIB, 0);
    spec.target = target;
    spec
}

/// A directory on the host for the namespace to mount over; world-searchable so that the
/// tmpfs inside is reachable.
fn host_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    d
}

fn file_name(id: &str) -> String {
    format!(".faultline-io-{id}-0")
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[test]
fn an_io_fault_on_a_private_mount_namespace_writes_into_its_tmpfs() {
    require_root();
    let _s = serial();
    let dir = host_dir();
    let ns = PrivateMount::over(dir.path());
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));

    // By pid, and by container (the process in a cgroup named like a runtime's scope).
    let cid = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let parent = TestCgroup::new("pids");
    let scope = parent.child(&format!("docker-{cid}.scope"));
    faultline_agent::host::cgroup::join(&scope, ns.pid()).expect("move into the scope");
    let container = Target::Container(ContainerRef {
        container_id: format!("docker://{cid}"),
        ..ContainerRef::default()
    });
    for target in [Target::Pid(ns.pid()), container] {
        let id = unique("io-ns");
        let mut fault = Applied::new(&stress, &ctx(&id, 60), &io_on(target.clone(), dir.path()));
        let inside = ns.inside(&dir.path().join(file_name(&id)));
        let on_host = dir.path().join(file_name(&id));
        let grew = wait_for(Duration::from_secs(5), || {
            (len(&inside) > 0).then(|| len(&inside))
        });
        println!(
            "{target:?}: {} holds {grew:?} bytes; {} exists: {}",
            inside.display(),
            on_host.display(),
            on_host.exists()
        );
        assert!(
            grew.is_some(),
            "the worker writes into the namespace's tmpfs"
        );
        assert!(!on_host.exists(), "nothing lands in the host's directory");
        assert_eq!(
            fault.recipe.data["io"]["root"]["pid"].as_u64(),
            Some(u64::from(ns.pid())),
            "written through the target's root"
        );
        let mode = std::fs::metadata(&inside).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert_eq!(fault.revert(), RevertOutcome::Reverted);
        assert!(!inside.exists(), "revert removes it in the tmpfs");
    }
    let left: Vec<_> = std::fs::read_dir(ns.inside(dir.path()))
        .expect("ls")
        .collect();
    assert!(left.is_empty(), "nothing left in the tmpfs: {left:?}");
}

/// Stops the io worker of a fault (so that it cannot remove its file on the agent's death:
/// only recovery may) and returns its pid.
fn stop_worker(fault_id: &str) -> u32 {
    let proc = ProcTable::new("/proc");
    let w = scan::owned(&proc, Path::new(EXE))
        .into_iter()
        .find(|o| o.role == "__worker" && o.fault_id == fault_id)
        .expect("the io worker runs");
    let pid = w.stat.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the worker");
    assert!(wait_for(Duration::from_secs(2), || (state(pid) == 'T').then_some(())).is_some());
    pid
}

/// `run` of an io fault on `pid` writing in `dir`, SIGKILLed once the file is there; returns
/// the fault id and the file as the host reaches it.
fn killed_run(
    state_dir: &Path,
    faults: &Path,
    config: &str,
    ns: &PrivateMount,
    dir: &Path,
) -> (String, PathBuf) {
    let mut agent = AgentRun::start(faults, "60s", state_dir, &["--config", config], None);
    let id = agent.applied("io");
    let inside = ns.inside(&dir.join(file_name(&id)));
    assert!(
        wait_for(Duration::from_secs(5), || inside.exists().then_some(())).is_some(),
        "{} exists during the fault",
        inside.display()
    );
    let worker = stop_worker(&id);
    agent.child.kill().expect("SIGKILL the agent");
    let _ = agent.child.wait();
    assert!(
        wait_for(Duration::from_secs(5), || matches!(
            state(worker),
            '?' | 'Z'
        )
        .then_some(()))
        .is_some(),
        "the worker died with the agent"
    );
    assert!(
        inside.exists(),
        "the file outlived the agent (for recovery to remove)"
    );
    (id, inside)
}

#[test]
fn after_an_agent_sigkill_recover_removes_the_file_in_the_targets_filesystem() {
    require_root();
    let _s = serial();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = host_dir();
    let ns = PrivateMount::over(dir.path());
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[limits]\nio_paths = [\"{}\"]\n", dir.path().display()),
    )
    .expect("write config");
    let config = config.display().to_string();
    let faults = work.path().join("io.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: io\npath: {}\nworkers: 1\nsize: 4Mi\ntarget: {{pid: {}}}\n",
            dir.path().display(),
            ns.pid()
        ),
    )
    .expect("write faults");
    let state = work.path().join("state");

    // The journal names the fault: recovery reverts it through the target's root.
    let (id, inside) = killed_run(&state, &faults, &config, &ns, dir.path());
    let (code, out) = recover(&state, &["--config", &config]);
    println!("recover with the journal: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("reverted fault {id} (io)")), "{out}");
    assert!(!inside.exists(), "recovery removed {}", inside.display());

    // The journal is lost: the sweep finds the file by its name in the target's filesystem.
    let (id, inside) = killed_run(&state, &faults, &config, &ns, dir.path());
    std::fs::remove_dir_all(state.join("journal")).expect("lose the journal");
    let (code, out) = recover(&state, &["--config", &config]);
    println!("recover without the journal: {out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(|l| l.contains("removed orphan io file")
            && l.contains(&format!(
                "{}/{}",
                ns.inside(dir.path()).display(),
                file_name(&id)
            ))),
        "{out}"
    );
    assert!(!inside.exists(), "the sweep removed {}", inside.display());
    assert!(
        std::fs::read_dir(dir.path()).expect("ls").next().is_none(),
        "host dir untouched"
    );
}

#[test]
fn a_planted_symlink_is_never_followed() {
    require_root();
    let _s = serial();
    let dir = host_dir();
    let ns = PrivateMount::over(dir.path());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "precious").expect("write victim");

    // A link where the file would go.
    let (stress, _) = drivers(&config(&[dir.path()], Protected::default()));
    let id = unique("io-link");
    let link = ns.inside(&dir.path().join(file_name(&id)));
    std::os::unix::fs::symlink(&victim, &link).expect("plant the link");
    let c = ctx(&id, 30);
    let spec = io_on(Target::Pid(ns.pid()), dir.path());
    let planned = stress.plan(&c, &spec).expect("plan");
    let err = stress
        .apply(&c, &spec, &planned)
        .expect_err("the link is not followed");
    let msg = err.to_string();
    println!("apply with a planted link: {msg}");
    assert!(
        msg.contains(&format!("{} is a symbolic link", link.display())),
        "{msg}"
    );
    stress
        .revert(&planned)
        .expect("revert after the failed apply");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    assert!(
        link.symlink_metadata().is_ok(),
        "a link that is not ours is left alone"
    );

    // A link as the directory.
    let sub = dir.path().join("sub");
    std::os::unix::fs::symlink(elsewhere.path(), ns.inside(&sub)).expect("plant the dir link");
    let (stress, _) = drivers(&config(&[&sub], Protected::default()));
    let r = stress.plan(
        &ctx(&unique("io-dirlink"), 30),
        &io_on(Target::Pid(ns.pid()), &sub),
    );
    let msg = match r {
        Err(DriverError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    println!("plan with a linked directory: {msg}");
    assert!(
        msg.contains(&format!("{} is a symbolic link", ns.inside(&sub).display())),
        "{msg}"
    );
    let there: Vec<_> = std::fs::read_dir(elsewhere.path()).expect("ls").collect();
    assert_eq!(
        there.len(),
        1,
        "nothing written through the link: {there:?}"
    );
}
