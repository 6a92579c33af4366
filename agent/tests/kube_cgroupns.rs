//! The agent in a private cgroup namespace, as a DaemonSet pod on a cgroup v2 node runs (root,
//! real kernel): a process that sits in its own cgroup and unshares a cgroup namespace reads a
//! pod's cgroups as `/..`-relative paths; the `faultline-agent` binary started that way joins
//! the host's cgroup namespace before anything else and then finds the pod and drops only its
//! datagrams, and without CAP_SYS_ADMIN it warns and refuses the pod with the fix.

mod kube_pod_support;
mod net_ebpf_support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_pod_support::*;
use net_ebpf_support::require_root;

const EXE: &str = env!("CARGO_BIN_EXE_faultline-agent");
const N: u32 = 200;

fn require_util_linux() {
    for tool in ["unshare", "setpriv", "nsenter"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the cgroup namespace tests need `{tool}`: apt-get install util-linux"
        );
    }
}

/// A node with one pod and its neighbour (systemd driver, cgroup2 + v1), and the agent's own
/// cgroup `<top>/agent` in the same hierarchies: the root of the agent's private namespace.
struct Setup {
    agent_dirs: Vec<PathBuf>,
    node: Node,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        require_util_linux();
        let mut node = Node::new(Layout::V2AndV1(CgroupDriver::Systemd));
        let path = format!("{}/agent", node.tree.top);
        let hs = node.pods[0].hierarchies.clone();
        let agent_dirs = hs.iter().map(|h| node.tree.make(h, &path)).collect();
        Setup { agent_dirs, node }
    }

    /// `argv` run by a shell that first moves itself into the agent's cgroups, then execs
    /// `unshare -C` (a new cgroup namespace rooted there) and `argv`: the PID stays the same.
    fn private(&self, argv: &[&str]) -> Command {
        let moves: String = self
            .agent_dirs
            .iter()
            .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
            .collect();
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("{moves}exec unshare -C \"$@\""))
            .arg("sh")
            .args(argv);
        c
    }

    /// `path` as seen from the agent's namespace root `<top>/agent`.
    fn relative(&self, path: &str) -> String {
        let rest = path
            .strip_prefix(&self.node.tree.top)
            .expect("a path under the test's top cgroup");
        format!("/..{rest}")
    }

    /// A fault file: drop every datagram of pods[0]'s app container to the peer.
    fn fault_file(&self, dir: &std::path::Path) -> PathBuf {
        let pod = &self.node.pods[0];
        let file = dir.join("drop.yaml");
        std::fs::write(
            &file,
            format!(
                "kind: drop\nprobability: 1.0\n\
                 target: {{pod: \"{}\", container: \"containerd://{}\"}}\n\
                 match: {{destinations: [\"{PEER}/32\"], ports: [{PORT}], protocol: udp}}\n",
                pod.uid, pod.container_id
            ),
        )
        .expect("write the fault file");
        file
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_private_cgroup_namespace_reads_a_pods_cgroups_as_relative_paths() {
    let s = Setup::new();
    let pod = &s.node.pods[0];
    let out = s
        .private(&["cat", &format!("/proc/{}/cgroup", pod.app.pid())])
        .output()
        .expect("run cat in a private cgroup namespace");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = text(&out.stdout);
    println!(
        "/proc/{}/cgroup from the private namespace:\n{seen}",
        pod.app.pid()
    );
    let rel = s.relative(&pod.container_path);
    for h in &pod.hierarchies {
        let prefix = if h.controllers.is_empty() {
            "0::".to_string()
        } else {
            format!(":{}:", h.controllers.join(","))
        };
        assert!(
            seen.lines().any(|l| l.ends_with(&format!("{prefix}{rel}"))),
            "{} reads as {rel}: {seen}",
            h.label()
        );
    }
    assert!(
        rel.starts_with("/../kubepods.slice/kubepods-burstable.slice/"),
        "{rel}"
    );
}

#[test]
fn the_agent_without_cap_sys_admin_warns_and_refuses_the_pod() {
    let s = Setup::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = s.fault_file(dir.path());
    let state = dir.path().join("state");
    let config = s.node.agent_config(dir.path());
    let out: Output = s
        .private(&[
            "setpriv",
            "--bounding-set=-sys_admin",
            EXE,
            "run",
            "-f",
            file.to_str().expect("utf-8 path"),
            "--duration",
            "5s",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the agent");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "a fault failed to apply");
    assert!(
        stderr.contains("cannot join the host's cgroup namespace")
            && stderr.contains("setns needs CAP_SYS_ADMIN")
            && stderr.contains("container and pod targets whose cgroups lie outside"),
        "the warning names the cause and the consequence: {stderr}"
    );
    let pod = &s.node.pods[0];
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("failed run-"))
        .unwrap_or_else(|| panic!("no failed line: {stdout}"));
    // The first hierarchy line of /proc/<pid>/cgroup that climbs out (pids, cpu or cgroup2).
    assert!(
        failed.contains(&format!("pid {} reads as cgroup ", pod.app.pid()))
            && failed.contains(&format!(
                ":{}, a path relative to the agent's own cgroup namespace",
                s.relative(&pod.container_path)
            )),
        "{failed}"
    );
    assert!(
        failed.contains("run the agent with hostPID and CAP_SYS_ADMIN"),
        "{failed}"
    );
}

#[test]
fn the_agent_joins_the_host_cgroup_namespace_and_drops_only_the_pods_datagrams() {
    let mut s = Setup::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = s.fault_file(dir.path());
    let state = dir.path().join("state");
    let config = s.node.agent_config(dir.path());
    let (pod, neighbour) = s.node.burst(N);
    assert_eq!(
        (pod, neighbour),
        (N as usize, N as usize),
        "no fault, no loss"
    );

    let mut agent = Proc(
        s.private(&[
            EXE,
            "run",
            "-f",
            file.to_str().expect("utf-8 path"),
            "--duration",
            "60s",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent"),
    );
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = agent.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = agent.0.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    while !lines.iter().any(|l: &String| l.starts_with("applied ")) {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                assert!(!l.starts_with("failed "), "the agent failed: {l}");
                lines.push(l);
            }
            Err(_) => panic!("the agent applied nothing within 30 s: {lines:?}"),
        }
    }

    let (pod, neighbour) = s.node.burst(N);
    println!("agent in a private cgroup namespace, fault on: pod {pod}/{N} received, neighbour {neighbour}/{N} received");
    assert_eq!(pod, 0, "the pod loses every datagram to the peer");
    assert_eq!(neighbour, N as usize, "the neighbour loses none");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the agent");
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = agent.0.try_wait().expect("wait the agent") {
            break st;
        }
        assert!(Instant::now() < until, "the agent did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    lines.extend(rx.try_iter());
    let stderr = stderr_reader.join().expect("stderr reader");
    println!("stdout:\n{}\nstderr:\n{stderr}", lines.join("\n"));
    assert!(
        status.success(),
        "the agent exits 0 after reverting: {status}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("reverted run-") && l.ends_with(" shutdown")),
        "{lines:?}"
    );
    assert!(
        stderr.contains("joined the host's cgroup namespace"),
        "the agent says it joined: {stderr}"
    );
    assert!(
        stderr.contains(&format!("cgroup2 {}", s.node.pods[0].container_path)),
        "the drop is attached on the pod's cgroup as the host names it: {stderr}"
    );

    let (pod, neighbour) = s.node.burst(N);
    println!(
        "after the agent reverted: pod {pod}/{N} received, neighbour {neighbour}/{N} received"
    );
    assert_eq!(
        (pod, neighbour),
        (N as usize, N as usize),
        "traffic flows again"
    );
}
