//! cgroup-scoped `drop` (cgroup_skb links) against the real kernel (root): two processes in
//! the same network namespace, one placed in a cgroup2 cgroup the test creates; only that
//! process's datagrams are dropped.

mod net_ebpf_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::net::KernelLease;
use faultline_core::fault::{DropFault, Fault, FaultSpec, Target, TrafficMatch};
use net_ebpf_support::*;

const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// A cgroup2 cgroup, removed on drop (after its processes are gone).
struct Cgroup {
    name: String,
    dir: PathBuf,
}

impl Cgroup {
    fn new() -> Cgroup {
        let root = PathBuf::from(CGROUP2);
        assert!(
            root.join("cgroup.procs").exists(),
            "cgroup-scoped drops need cgroup2 mounted at {CGROUP2}"
        );
        let name = format!("fl-t-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup { name, dir }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A bash process in netns `ns` that sends `n` datagrams to `to` (one socket each, bash's
/// /dev/udp) once a line arrives on its stdin. Killed by PID on drop.
struct Sender(Child);

impl Sender {
    fn new(ns: &std::path::Path, to: &str, port: u16, n: u32) -> Sender {
        let script = format!(
            "read go; for i in $(seq 1 {n}); do echo \"$i\" 2>/dev/null > /dev/udp/{to}/{port}; \
             if [ $((i % 20)) -eq 0 ]; then sleep 0.01; fi; done"
        );
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["bash", "-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn nsenter bash (util-linux, bash)");
        Sender(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn go_and_wait(&mut self) {
        let stdin = self.0.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("start sender");
        let status = self.0.wait().expect("wait sender");
        assert!(status.success(), "sender exited with {status}");
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cgroup_scoped_drop_hits_only_processes_in_that_cgroup() {
    require_root();
    let p = Pair::new();
    let cg = Cgroup::new();
    let d = driver(&[], &KernelLease::new());
    let rx_in = udp_in(&p.b.path(), &format!("{B}:7001"));
    let rx_out = udp_in(&p.b.path(), &format!("{B}:7002"));

    let mut inside = Sender::new(&p.a.path(), B, 7001, 200);
    let mut outside = Sender::new(&p.a.path(), B, 7002, 200);
    std::fs::write(cg.dir.join("cgroup.procs"), inside.pid().to_string())
        .expect("move the sender into the test cgroup");

    let spec = FaultSpec {
        target: Target::Cgroup(format!("/{}", cg.name)),
        fault: Fault::Drop(DropFault {
            interface: None,
            probability: 1.0,
            matcher: TrafficMatch::default(),
        }),
    };
    let c = ctx(120);
    let r = apply(d.as_ref(), &c, &spec);
    assert_eq!(r.data["scope"]["type"], "cgroup");
    assert_eq!(r.data["programs"][0], "fl_drop_cg_eg");

    let got_in = count_while(&rx_in, || inside.go_and_wait());
    let got_out = count_while(&rx_out, || outside.go_and_wait());
    let dropped = counter(d.as_ref(), &r, "packets_dropped");
    println!("cgroup drop: in-cgroup process 200 sent {got_in} received; other process 200 sent {got_out} received; dropped {dropped}");
    assert_eq!(got_in, 0, "the process in the cgroup loses everything");
    assert_eq!(got_out, 200, "the process outside the cgroup loses nothing");
    assert!(dropped >= 200, "the program counted the drops: {dropped}");

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    let mut again = Sender::new(&p.a.path(), B, 7001, 100);
    std::fs::write(cg.dir.join("cgroup.procs"), again.pid().to_string()).expect("move");
    assert_eq!(
        count_while(&rx_in, || again.go_and_wait()),
        100,
        "after revert the cgroup's traffic flows"
    );
}

#[test]
fn cgroup_target_with_an_interface_is_refused() {
    require_root();
    let cg = Cgroup::new();
    let d = driver(&[], &KernelLease::new());
    let spec = FaultSpec {
        target: Target::Cgroup(format!("/{}", cg.name)),
        fault: Fault::Drop(DropFault {
            interface: Some("eth0".into()),
            probability: 1.0,
            matcher: TrafficMatch::default(),
        }),
    };
    let e = d.plan(&ctx(60), &spec).expect_err("refused");
    assert!(
        e.to_string()
            .contains("cannot be combined with target cgroup"),
        "{e}"
    );
}
