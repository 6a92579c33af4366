//! The capabilities the DaemonSet gives the agent are what its faults need, no more, on this
//! kernel: `faultline-agent run` as root with the bounding set cut to the rendered DaemonSet's
//! `add` list (everything else dropped, no-new-privs as allowPrivilegeEscalation: false asks)
//! drops UDP inside a network namespace it finds through another user's process, puts a tbf
//! rate limit under the HTB root there, runs a CPU worker in that process's cgroups, pauses
//! it and writes an io file in its filesystem, then reverts all five; and with any one
//! capability of the list taken away, the run fails.
//!
//! Another user's process is what makes the list matter: reading its /proc/<pid>/ns/net and
//! opening its /proc/<pid>/root need SYS_PTRACE, signalling it KILL, joining its netns SYS_ADMIN
//! (which also admits bpf() and the TCX attachment), the qdiscs NET_ADMIN. Needs root, iproute2,
//! util-linux (setpriv) and python3.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_tests::binary;
use faultline_tests::procs::require_tool;
use serde_json::Value;

use super::chart::render;

/// A network namespace of this test's, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        require_tool("ip", "iproute2");
        let name = format!("fl-cap-{:06x}", std::process::id() & 0xff_ffff);
        let ok = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed (this test needs root)");
        };
        ok(&["netns", "add", &name]);
        let ns = Netns(name);
        ok(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child killed by PID and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends 100 datagrams to 127.0.0.1:9999 inside `ns` and returns how many arrived.
fn udp_delivered(ns: &str) -> u32 {
    let script = "import socket\n\
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(('127.0.0.1', 9999)); r.settimeout(0.3)\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        for i in range(100): s.sendto(b'x', ('127.0.0.1', 9999))\n\
        n = 0\n\
        try:\n\
        \x20   while True: r.recv(16); n += 1\n\
        except socket.timeout: pass\n\
        print(n)\n";
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .output()
        .expect("run python3 in the netns");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(") ").expect("comm").1;
    after.chars().next().expect("state")
}

/// A `faultline-agent run` of `faults` for `secs` seconds as root with only `caps` (e.g.
/// "+net_admin") in its bounding set; `during` runs once all faults are applied.
fn run_with(
    caps: &[String],
    faults: &std::path::Path,
    config: &std::path::Path,
    state: &std::path::Path,
    count: usize,
    during: impl FnOnce(),
) -> (bool, Vec<String>) {
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let mut agent = Killed(
        Command::new("setpriv")
            .args(["--reuid=0", "--regid=0", "--clear-groups", &bounding])
            .args(["--inh-caps=-all", "--no-new-privs"])
            .arg(binary("faultline-agent"))
            .args(["run", "-f"])
            .arg(faults)
            .args(["--duration", "3s", "--state-dir"])
            .arg(state)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultline-agent run"),
    );
    let mut lines = BufReader::new(agent.0.stdout.take().expect("stdout")).lines();
    let mut seen: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut during = Some(during);
    while let Some(Ok(line)) = lines.next() {
        seen.push(line);
        if seen.iter().filter(|l| l.starts_with("applied ")).count() == count {
            if let Some(f) = during.take() {
                f();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{seen:#?}");
    }
    let status = agent.0.wait().expect("wait for the run");
    (status.success() && during.is_none(), seen)
}

#[test]
fn the_daemonset_capabilities_are_what_the_faults_need() {
    require_tool("setpriv", "util-linux");
    require_tool("python3", "python3");
    let objs = render("faultline", &[]);
    let c = &objs["DaemonSet/faultline-agent"]["spec"]["template"]["spec"]["containers"][0];
    let add: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .filter_map(Value::as_str)
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);

    let ns = Netns::new();
    // Another user's process in the namespace: nobody (65534).
    let sleeper = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
            ])
            .args(["--clear-groups", "sleep", "300"])
            .spawn()
            .expect("spawn the sleeper"),
    );
    let pid = sleeper.0.id();
    assert_eq!(
        udp_delivered(&ns.0),
        100,
        "the namespace delivers before the fault"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    // The io directory, as the process sees it (its mount namespace shows the host's /tmp).
    let io_dir = dir.path().join("io");
    std::fs::create_dir(&io_dir).expect("mkdir io");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[limits]\nio_paths = [\"{}\"]\n", io_dir.display()),
    )
    .expect("write agent.toml");
    let faults = dir.path().join("faults.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: drop\nprobability: 1.0\ninterface: lo\nmatch: {{ports: [9999], protocol: udp}}\n\
             target: {{pid: {pid}}}\n---\n\
             kind: network\ninterface: lo\nrate: 10mbit\nmatch: {{ports: [8888]}}\ntarget: {{pid: {pid}}}\n---\n\
             kind: cpu\nload: 10\nworkers: 1\ntarget: {{pid: {pid}}}\n---\n\
             kind: process\naction: pause\nselector: {{pid: {pid}}}\n---\n\
             kind: io\npath: {}\nworkers: 1\nsize: 1Mi\nrate: 1Mi\ntarget: {{pid: {pid}}}\n",
            io_dir.display()
        ),
    )
    .expect("write faults");
    let io_bytes = || -> u64 {
        let inside = format!("/proc/{pid}/root{}", io_dir.display());
        std::fs::read_dir(inside)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(".faultline-io-")
                    })
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };

    let mut under = (u32::MAX, ' ', String::new(), 0);
    let (ok, seen) = run_with(&add, &faults, &config, &dir.path().join("state"), 5, || {
        let qdiscs = Command::new("tc")
            .args(["-n", &ns.0, "qdisc", "show", "dev", "lo"])
            .output()
            .expect("tc qdisc show");
        under = (
            udp_delivered(&ns.0),
            state_of(pid),
            String::from_utf8_lossy(&qdiscs.stdout).into_owned(),
            io_bytes(),
        );
    });
    println!(
        "with {add:?}: {}/100 datagrams delivered under the drop, the process in state {}, \
         {} bytes in its io file, qdiscs:\n{}",
        under.0, under.1, under.3, under.2
    );
    assert!(
        ok,
        "the run failed with the DaemonSet's capabilities: {seen:#?}"
    );
    assert_eq!(under.0, 0, "{seen:#?}");
    assert_eq!(under.1, 'T', "the process is stopped while paused");
    assert!(
        under.2.contains("qdisc htb fa17:") && under.2.contains("qdisc tbf"),
        "{}",
        under.2
    );
    assert!(
        under.3 > 0,
        "the io worker writes in the process's filesystem"
    );
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("reverted ")).count(),
        5,
        "{seen:#?}"
    );
    assert_eq!(io_bytes(), 0, "the io file is gone after the revert");
    assert_eq!(
        udp_delivered(&ns.0),
        100,
        "delivery is back after the revert"
    );
    assert_ne!(state_of(pid), 'T', "the process runs again");

    // No capability of the list is spare.
    for (i, cap) in add.iter().enumerate() {
        let mut fewer = add.clone();
        fewer.remove(i);
        let state = dir.path().join(format!("state-{i}"));
        let (ok, seen) = run_with(&fewer, &faults, &config, &state, 5, || {});
        let failed: Vec<&String> = seen.iter().filter(|l| l.starts_with("failed ")).collect();
        println!("without {cap}: {failed:?}");
        assert!(
            !ok && !failed.is_empty(),
            "the faults still work without {cap}: {seen:#?}"
        );
        assert_ne!(
            state_of(pid),
            'T',
            "a failed run leaves the process running"
        );
    }
}
