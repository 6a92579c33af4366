//! Helpers of the qdisc tests: two network namespaces joined by a veth pair (removed by Drop
//! even when a test fails), work on threads inside a namespace, `tc` to look at the result,
//! the network driver; traffic ([`traffic`]), golden data ([`golden`]) and fault-holding child
//! processes ([`holder`]).
#![allow(dead_code)]

use std::fs::File;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use faultline_agent::engine::driver::{Driver, FaultCtx};
use faultline_agent::net::{network, NetConfig};
use nix::sched::{setns, CloneFlags};

/// Kernel tests of one binary run one at a time (throughput on 2 CPUs).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test changes qdiscs in network namespaces it creates: run it as root");
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool).arg("-V").output().is_ok();
        assert!(ok, "`{tool}` is missing: apt-get install iproute2");
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces `<name>-a` and `<name>-b`, veth `va` (10.201.0.1) <-> `vb` (10.201.0.2).
pub struct Pair {
    pub a: String,
    pub b: String,
}

pub const A_IP: &str = "10.201.0.1";
pub const B_IP: &str = "10.201.0.2";

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let id: u32 = rand::random::<u32>() % 1_000_000;
        let p = Pair {
            a: format!("fl-q-{tag}-{id}-a"),
            b: format!("fl-q-{tag}-{id}-b"),
        };
        sh(&format!("ip netns add {}", p.a));
        sh(&format!("ip netns add {}", p.b));
        sh(&format!(
            "ip link add va netns {} type veth peer name vb netns {}",
            p.a, p.b
        ));
        for (ns, dev, ip) in [(&p.a, "va", A_IP), (&p.b, "vb", B_IP)] {
            sh(&format!("ip -n {ns} addr add {ip}/24 dev {dev}"));
            sh(&format!("ip -n {ns} link set {dev} up"));
            sh(&format!("ip -n {ns} link set lo up"));
        }
        // A small receive buffer on both ends: what the receiver has not read yet stays
        // small, so bytes read over a window are bytes that arrived in it.
        for ns in [&p.a, &p.b] {
            sh(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv4.tcp_rmem='4096 131072 131072'"
            ));
        }
        p
    }

    pub fn path_a(&self) -> String {
        format!("/run/netns/{}", self.a)
    }

    pub fn path_b(&self) -> String {
        format!("/run/netns/{}", self.b)
    }

    /// `ip ARGS` inside A.
    pub fn ip_a(&self, args: &str) -> String {
        sh(&format!("ip -n {} {args}", self.a))
    }

    pub fn tc_a(&self, args: &str) -> String {
        sh(&format!("ip netns exec {} tc {args}", self.a))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Runs `f` on a new thread inside the netns at `path`.
pub fn spawn_in<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

pub fn driver() -> Arc<dyn Driver> {
    network::drivers(&NetConfig::default())
        .into_iter()
        .next()
        .expect("the network driver")
}

pub fn ctx(id: &str) -> FaultCtx {
    FaultCtx {
        fault_id: id.to_string(),
        deadline: SystemTime::now() + Duration::from_secs(120),
    }
}

pub fn mbit(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

pub mod golden;
pub mod holder;
pub mod traffic;
#[allow(unused_imports)]
pub use golden::*;
#[allow(unused_imports)]
pub use holder::*;
#[allow(unused_imports)]
pub use traffic::*;
