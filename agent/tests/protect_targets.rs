//! Protected means protected, proven on the real kernel through the real agent
//! (`faultline-agent run -f` with `--config`, root): every spelling of a protected cgroup is
//! refused and its sibling is not; processes of a pod in a protected namespace (kubelet-shaped
//! cgroups and pod log directories) are refused as name-pattern, pid, cgroup and netns targets
//! with the rule named, while the same forms on a pod of another namespace apply; a netns target
//! that is a FIFO, a file or a directory is refused at once with the field named, and an
//! `ip netns add` namespace works; protected names hold whether a selector matches a process's
//! name or its command line.

mod kube_pod_support;
mod net_ebpf_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, DriverError, FaultCtx};
use faultline_agent::host::HostConfig;
use faultline_agent::net::{network, NetConfig};
use faultline_core::fault::doc::parse_fault;
use faultline_core::fault::Target;
use kube_pod_support::{
    hex, place, pod_paths, pod_uid, tag, CgroupDriver, CgroupTree, Mounts, Proc,
};
use net_ebpf_support::{require_root, Ns};

const EXE: &str = env!("CARGO_BIN_EXE_faultline-agent");

/// `run` sweeps the workers of every other agent process of this binary: one run at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one `faultline-agent run` printed, how it ended and how long it took.
struct Run {
    code: Option<i32>,
    out: String,
    took: Duration,
}

impl Run {
    fn refused_with(&self, want: &str) {
        assert_eq!(self.code, Some(1), "expected a refusal:\n{}", self.out);
        let failed = self
            .out
            .lines()
            .find(|l| l.starts_with("failed run-"))
            .unwrap_or_else(|| panic!("no `failed` line:\n{}", self.out));
        assert!(failed.contains(want), "want {want:?} in:\n{failed}");
        assert!(
            !self.out.contains("\napplied "),
            "nothing applied:\n{}",
            self.out
        );
    }

    fn applied(&self) {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.out);
        assert!(self.out.contains("\napplied run-"), "{}", self.out);
    }
}

/// A temp dir with the agent config and the fault file, and the run's state dir.
struct Agent {
    dir: tempfile::TempDir,
}

impl Agent {
    fn new(config: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agent.toml"), config).expect("write config");
        Agent { dir }
    }

    /// Runs `fault` for `secs`; `during` is called once the fault is applied (or right away
    /// when it is refused). A run that does not end within 30 s is killed (by PID) and fails
    /// the test: a wedged agent is a failure, never a hang.
    fn run(&self, fault: &str, secs: u32, during: impl FnOnce()) -> Run {
        let _one = serial();
        let file = self.dir.path().join("fault.yaml");
        std::fs::write(&file, fault).expect("write fault");
        let started = Instant::now();
        let mut child = Command::new(EXE)
            .args(["run", "-f"])
            .arg(&file)
            .args(["--duration", &format!("{secs}s"), "--state-dir"])
            .arg(self.dir.path().join("state"))
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn faultline-agent run");
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut out = String::new();
        let mut during = Some(during);
        let deadline = started + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    let decided = line.starts_with("applied ") || line.starts_with("failed ");
                    out.push('\n');
                    out.push_str(&line);
                    if decided {
                        if let Some(f) = during.take() {
                            f();
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("faultline-agent run did not end within 30s:{out}");
            }
        }
        let status = child.wait().expect("wait");
        let took = started.elapsed();
        let _ = reader.join();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        out.push_str("\n--- stderr\n");
        out.push_str(&err);
        Run {
            code: status.code(),
            out,
            took,
        }
    }
}

/// The state letter of a process (`S`, `T`, ...), `?` once it is gone.
fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .unwrap_or('?')
}

fn cpu_on(target: &str) -> String {
    format!("kind: cpu\nload: 10\nworkers: 1\ntarget: {target}\n")
}

fn drop_in(netns: &Path) -> String {
    format!(
        "kind: drop\nprobability: 1.0\ninterface: lo\ntarget: {{netns: \"{}\"}}\n",
        netns.display()
    )
}

fn pause(selector: &str) -> String {
    format!("kind: process\naction: pause\ncount: 0\nselector: {selector}\n")
}

// ---------------------------------------------------------------------------------------------
// Cgroup spellings
// ---------------------------------------------------------------------------------------------

#[test]
fn every_spelling_of_a_protected_cgroup_is_refused_and_its_sibling_is_not() {
    require_root();
    let mounts = Mounts::find();
    let mut tree = CgroupTree::new();
    let top = tree.top.clone();
    for h in [&mounts.v2, &mounts.v1[0]] {
        tree.make(h, &format!("{top}/x"));
        tree.make(h, &format!("{top}/x2"));
    }
    let agent = Agent::new(&format!("[limits]\nprotected_cgroups = [\"{top}/x\"]\n"));
    let rule =
        format!("under the protected cgroup {top}/x (agent config limits.protected_cgroups)");
    for spelling in [
        format!("/{top}/x"),
        format!("/.{top}/x"),
        format!("{top}/x/"),
        format!("{top}//x"),
        format!("{top}/./x/."),
    ] {
        let run = agent.run(&cpu_on(&format!("{{cgroup: \"{spelling}\"}}")), 1, || {});
        run.refused_with(&rule);
        println!("cgroup {spelling:?}: refused in {:?}", run.took);
    }
    let run = agent.run(&cpu_on(&format!("{{cgroup: \"{top}\"}}")), 1, || {});
    run.refused_with(&format!("cgroup {top} holds the protected cgroup {top}/x"));

    let x2 = mounts.v2.dir(&format!("{top}/x2")).expect("x2 dir");
    let mut workers = 0;
    let run = agent.run(&cpu_on(&format!("{{cgroup: \"{top}/x2\"}}")), 1, || {
        workers = std::fs::read_to_string(x2.join("cgroup.procs"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
    });
    run.applied();
    assert_eq!(workers, 1, "the cpu worker ran in {top}/x2:\n{}", run.out);
}

// ---------------------------------------------------------------------------------------------
// Pods of protected namespaces
// ---------------------------------------------------------------------------------------------

/// One kubelet-shaped pod: a process in its own netns, in the container's cgroup (systemd
/// driver) of cgroup2 and the v1 `pids` and `cpu` hierarchies, and its pod log directory.
struct Pod {
    // The process dies before its namespace goes.
    proc: Proc,
    ns: Ns,
    uid: String,
    container_path: String,
    argv: String,
}

/// Pods and their cgroups and log directories, removed on drop (processes first).
struct Pods {
    pods: Vec<Pod>,
    tree: CgroupTree,
    logs: tempfile::TempDir,
    /// The digits that make these pods' command lines unique on the machine.
    run: String,
}

impl Pods {
    /// `pods[0]` in kube-system, `pods[1]` in shop.
    fn new() -> Pods {
        let mounts = Mounts::find();
        let mut tree = CgroupTree::new();
        let logs = tempfile::tempdir().expect("tempdir");
        let run = format!("{:06}", rand::random::<u32>() % 1_000_000);
        let mut pods = Vec::new();
        for (i, (namespace, name)) in [
            ("kube-system", "coredns-7db6d8ff4d-x2x4q"),
            ("shop", "checkout-1"),
        ]
        .iter()
        .enumerate()
        {
            let uid = pod_uid();
            let (_, container_path, _) =
                pod_paths(CgroupDriver::Systemd, &tree.top, &uid, &hex(64), &hex(64));
            let ns = Ns::new();
            let seconds = format!("3600.{run}{}", i + 1);
            let proc = Proc(
                Command::new("nsenter")
                    .arg(format!("--net={}", ns.path().display()))
                    .args(["sleep", &seconds])
                    .spawn()
                    .expect("spawn nsenter sleep (util-linux)"),
            );
            for h in std::iter::once(&mounts.v2).chain(&mounts.v1) {
                place(&tree.make(h, &container_path), proc.pid());
            }
            std::fs::create_dir(logs.path().join(format!("{namespace}_{name}_{uid}")))
                .expect("pod log dir");
            pods.push(Pod {
                proc,
                ns,
                uid,
                container_path,
                argv: format!("sleep {seconds}"),
            });
        }
        let p = Pods {
            pods,
            tree,
            logs,
            run,
        };
        // nsenter execs sleep: wait until the command line says so.
        let until = Instant::now() + Duration::from_secs(5);
        while p.pods.iter().any(|pod| argv(pod.proc.pid()) != pod.argv) {
            assert!(Instant::now() < until, "the pod processes did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn config(&self) -> String {
        format!(
            "[limits]\nprotected_namespaces = [\"kube-system\"]\npod_logs_dir = \"{}\"\n",
            self.logs.path().display()
        )
    }
}

fn argv(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

const NS_RULE: &str =
    "in the protected namespace kube-system (agent config limits.protected_namespaces)";

#[test]
fn a_protected_namespaces_pod_is_refused_as_every_target_form_and_another_pod_is_not() {
    require_root();
    let pods = Pods::new();
    let agent = Agent::new(&pods.config());
    let (ks, shop) = (&pods.pods[0], &pods.pods[1]);
    let ks_pod = format!("pod kube-system/coredns-7db6d8ff4d-x2x4q (uid {})", ks.uid);
    let ks_pid = ks.proc.pid();
    let shop_pid = shop.proc.pid();

    // Name pattern: only the kube-system process matches, so nothing may be selected.
    let only_ks = format!("{{name: \"^sleep 3600\\\\.{}1$\"}}", pods.run);
    let run = agent.run(&pause(&only_ks), 1, || {});
    run.refused_with(&format!(
        "no targetable process matches name pattern \"^sleep 3600\\\\.{}1$\" (left alone: pid {ks_pid} is in {ks_pod}, {NS_RULE})",
        pods.run
    ));
    // Both match with count 0: only the shop pod's process is paused.
    let both = format!("{{name: \"^sleep 3600\\\\.{}[12]$\"}}", pods.run);
    let mut seen = ('?', '?');
    let run = agent.run(&pause(&both), 1, || seen = (state(ks_pid), state(shop_pid)));
    run.applied();
    assert_eq!(
        seen,
        ('S', 'T'),
        "(kube-system, shop) while paused:\n{}",
        run.out
    );
    assert_eq!((state(ks_pid), state(shop_pid)), ('S', 'S'), "resumed");

    // Pid: as a process selector and as a cpu target.
    let run = agent.run(&pause(&format!("{{pid: {ks_pid}}}")), 1, || {});
    run.refused_with(&format!("pid {ks_pid} is in {ks_pod}, {NS_RULE}"));
    let run = agent.run(&cpu_on(&format!("{{pid: {ks_pid}}}")), 1, || {});
    run.refused_with(&format!("pid {ks_pid} is in {ks_pod}, {NS_RULE}"));
    agent
        .run(&cpu_on(&format!("{{pid: {shop_pid}}}")), 1, || {})
        .applied();

    // Cgroup: the container's, and the pod's parent slice that holds both pods.
    let run = agent.run(
        &cpu_on(&format!("{{cgroup: \"{}\"}}", ks.container_path)),
        1,
        || {},
    );
    run.refused_with(&format!(
        "cgroup {} is in {ks_pod}, {NS_RULE}",
        ks.container_path
    ));
    let qos = format!("{}/kubepods.slice", pods.tree.top);
    let run = agent.run(&cpu_on(&format!("{{cgroup: \"{qos}\"}}")), 1, || {});
    run.refused_with(&format!("cgroup {qos} holds "));
    run.refused_with(NS_RULE);
    agent
        .run(
            &cpu_on(&format!("{{cgroup: \"{}\"}}", shop.container_path)),
            1,
            || {},
        )
        .applied();

    // Netns: the pod's namespace, by its `ip netns` path and through /proc.
    for path in [
        ks.ns.path(),
        PathBuf::from(format!("/proc/{ks_pid}/ns/net")),
    ] {
        let run = agent.run(&drop_in(&path), 1, || {});
        run.refused_with(&format!(
            "spec.target.netns_path: {} is the network namespace of a protected process: pid {ks_pid} is in {ks_pod}, {NS_RULE}",
            path.display()
        ));
    }
    agent.run(&drop_in(&shop.ns.path()), 1, || {}).applied();
    assert_eq!((state(ks_pid), state(shop_pid)), ('S', 'S'));

    // A pod the kubelet's log directories do not name is in an unknown namespace: protected.
    let logs = pods.logs.path();
    let shop_dir = logs.join(format!("shop_checkout-1_{}", shop.uid));
    std::fs::remove_dir(&shop_dir).expect("remove the shop pod's log dir");
    let run = agent.run(&cpu_on(&format!("{{pid: {shop_pid}}}")), 1, || {});
    run.refused_with(&format!(
        "pid {shop_pid} is in pod {}, whose namespace the agent cannot tell ({} has no <namespace>_<name>_{} directory",
        shop.uid,
        logs.display(),
        shop.uid
    ));
    run.refused_with(
        "a pod of unknown namespace counts as protected (agent config limits.protected_namespaces)",
    );
}

// ---------------------------------------------------------------------------------------------
// Network namespace files
// ---------------------------------------------------------------------------------------------

fn plan_error(driver: &dyn Driver, fault: &str) -> (String, Duration) {
    let spec = parse_fault(fault).expect("fault");
    let ctx = FaultCtx {
        fault_id: format!("t-{}", tag()),
        deadline: std::time::SystemTime::now() + Duration::from_secs(30),
    };
    let started = Instant::now();
    match driver.plan(&ctx, &spec) {
        Err(DriverError::Refused(m)) => (m, started.elapsed()),
        other => panic!("expected a refusal for {fault}, got {other:?}"),
    }
}

#[test]
fn a_netns_target_that_is_no_network_namespace_is_refused_at_once_naming_the_field() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("initctl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let file = dir.path().join("file");
    std::fs::write(&file, "not a namespace").expect("write");
    let cases = [
        (fifo.clone(), "a fifo"),
        (file.clone(), "a regular file"),
        (dir.path().to_path_buf(), "a directory"),
    ];
    let tbf = network::drivers(&NetConfig::default())
        .pop()
        .expect("network driver");
    let agent = Agent::new("[limits]\n");
    for (path, what) in &cases {
        let want = format!(
            "spec.target.netns_path: {} is not a network namespace ({what}); a netns target is a network namespace file such as /run/netns/NAME or /proc/PID/ns/net",
            path.display()
        );
        // Through the real binary: the whole run, start-up and recovery included.
        let run = agent.run(&drop_in(path), 1, || {});
        run.refused_with(&want);
        // The network (tbf) driver's plan alone.
        let fault = format!(
            "kind: network\nrate: 1mbit\ntarget: {{netns: \"{}\"}}\n",
            path.display()
        );
        let (msg, took) = plan_error(tbf.as_ref(), &fault);
        assert_eq!(msg, want);
        println!(
            "netns {what}: run refused in {:?}, network plan in {took:?}",
            run.took
        );
        // The refusal itself (the plan) is timed here; the whole run also starts the binary
        // and recovers its journal, and its bound only shows that nothing blocked.
        assert!(
            took < Duration::from_millis(100),
            "network plan took {took:?}"
        );
        assert!(
            run.took < Duration::from_secs(3),
            "the run took {:?}",
            run.took
        );
    }
    // A real namespace works, as a path and as a drop target.
    let ns = Ns::new();
    let r = faultline_agent::host::target::Resolver::new(&HostConfig::default())
        .resolve(&Target::Netns(ns.path().display().to_string()))
        .expect("an ip netns namespace");
    assert_eq!(r.netns, Some(ns.path()));
    agent.run(&drop_in(&ns.path()), 1, || {}).applied();
}

// ---------------------------------------------------------------------------------------------
// Protected names: name and command line alike
// ---------------------------------------------------------------------------------------------

/// A copy of `sleep` run as `<dir>/<comm>` with argv[0] `arg0`: its name (comm) and command
/// line differ, each unique on the machine.
fn named_sleeper(dir: &Path, comm: &str, arg0: &str) -> Proc {
    let exe = dir.join(comm);
    std::fs::copy("/bin/sleep", &exe).expect("copy /bin/sleep (coreutils)");
    // A thread of this test binary forking while the copy's write descriptor is open makes
    // exec fail with ETXTBSY until that child execs or exits: try again for a moment.
    let mut tries = 0;
    let child = loop {
        match Command::new(&exe).arg0(arg0).arg("3600").spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => break r.unwrap_or_else(|e| panic!("run {}: {e}", exe.display())),
        }
    };
    let p = Proc(child);
    let until = Instant::now() + Duration::from_secs(5);
    while argv(p.pid()) != format!("{arg0} 3600") {
        assert!(Instant::now() < until, "{comm} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

#[test]
fn a_protected_name_holds_whether_the_selector_matches_name_or_command_line() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let t = tag();
    // Protected by its command line, selected by its name.
    let a = named_sleeper(dir.path(), &format!("flpa{t}"), &format!("xyz{t}"));
    // Protected by its name, selected by its command line.
    let b = named_sleeper(dir.path(), &format!("flpb{t}"), &format!("abc{t}"));
    // Not protected: selected either way.
    let c = named_sleeper(dir.path(), &format!("flpc{t}"), &format!("qrs{t}"));
    let agent = Agent::new(&format!(
        "[limits]\nprotected_names = [\"^xyz{t} \", \"^flpb{t}$\"]\n"
    ));
    let cases = [
        (format!("^flpa{t}$"), a.pid(), format!("^xyz{t} ")),
        (format!("^abc{t} 3600$"), b.pid(), format!("^flpb{t}$")),
    ];
    for (selector, pid, pattern) in &cases {
        let run = agent.run(&pause(&format!("{{name: \"{selector}\"}}")), 1, || {});
        run.refused_with(&format!("pid {pid} "));
        run.refused_with(&format!(
            "matches the protected name pattern {pattern:?} on its name or command line"
        ));
        let run = agent.run(&pause(&format!("{{pid: {pid}}}")), 1, || {});
        run.refused_with(&format!("matches the protected name pattern {pattern:?}"));
        assert_eq!(state(*pid), 'S', "never paused");
    }
    for selector in [format!("^flpc{t}$"), format!("^qrs{t} 3600$")] {
        let mut seen = '?';
        let run = agent.run(&pause(&format!("{{name: \"{selector}\"}}")), 1, || {
            seen = state(c.pid())
        });
        run.applied();
        assert_eq!(seen, 'T', "{selector} paused the unprotected process");
        assert_eq!(state(c.pid()), 'S', "resumed");
    }
    assert_eq!((state(a.pid()), state(b.pid())), ('S', 'S'));
}
