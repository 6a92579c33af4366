//! Helpers for the eBPF network tests (root, real kernel): network namespaces joined by a veth
//! pair (removed by Drop guards, even when a test fails), UDP senders/receivers created inside
//! those namespaces, loss measurement by sequence numbers, and driver plumbing.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{Driver, FaultCtx, Recipe};
use faultline_agent::net::drop::DropDriver;
use faultline_agent::net::{netns, KernelLease, NetConfig, ProtectedTraffic};
use faultline_core::fault::{Cidr, DropFault, Fault, FaultSpec, Target, TrafficMatch};

/// Fails (never skips) when the test cannot run here, saying what is missing.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the eBPF network tests need root (network namespaces, veth, bpf)"
    );
    let ok = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the eBPF network tests need `ip`: apt-get install iproute2"
    );
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tag() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// A network namespace `fl-t-<rand>`, deleted on drop (with the interfaces inside it).
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new() -> Ns {
        let name = format!("fl-t-{}", tag());
        ip(&["netns", "add", &name]);
        let ns = Ns { name };
        ns.exec(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n <ns> ...`
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has 10.200.1.1/24 on `if_a`, `b` has
/// 10.200.1.2/24 and 10.200.1.3/24 on `if_b`; `a` routes by default through `if_a`.
pub struct Pair {
    pub a: Ns,
    pub b: Ns,
    pub if_a: String,
    pub if_b: String,
}

pub const A: &str = "10.200.1.1";
pub const B: &str = "10.200.1.2";
/// A second address of `b`: another peer behind the same interface.
pub const B2: &str = "10.200.1.3";

impl Pair {
    pub fn new() -> Pair {
        let a = Ns::new();
        let b = Ns::new();
        let t = tag();
        let (if_a, if_b) = (format!("fla{t}"), format!("flb{t}"));
        ip(&["link", "add", &if_a, "type", "veth", "peer", "name", &if_b]);
        // From here the namespaces own the interfaces (deleted with them).
        let moved = Command::new("ip")
            .args(["link", "set", &if_a, "netns", &a.name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && Command::new("ip")
                .args(["link", "set", &if_b, "netns", &b.name])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !moved {
            let _ = Command::new("ip").args(["link", "del", &if_a]).status();
            panic!("cannot move {if_a}/{if_b} into their namespaces");
        }
        a.exec(&["addr", "add", &format!("{A}/24"), "dev", &if_a]);
        b.exec(&["addr", "add", &format!("{B}/24"), "dev", &if_b]);
        b.exec(&["addr", "add", &format!("{B2}/24"), "dev", &if_b]);
        a.exec(&["link", "set", &if_a, "up"]);
        b.exec(&["link", "set", &if_b, "up"]);
        a.exec(&["route", "add", "default", "via", B, "dev", &if_a]);
        Pair { a, b, if_a, if_b }
    }
}

/// Receive buffer of test sockets: a whole measurement fits even if the receiving thread is
/// starved (a busy machine), so only the fault loses datagrams.
const RCVBUF: usize = 64 << 20;

/// A UDP socket created inside `ns` (it stays in that netns whatever thread uses it).
pub fn udp_in(ns: &Path, bind: &str) -> UdpSocket {
    let bind: SocketAddr = bind.parse().expect("bind address");
    let sock = netns::run_in(Some(ns), move || UdpSocket::bind(bind))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF)
        .expect("SO_RCVBUFFORCE");
    sock
}

/// What arrived of a numbered burst.
#[derive(Debug)]
pub struct Measured {
    pub sent: u32,
    pub received: u32,
}

impl Measured {
    pub fn loss(&self) -> f64 {
        1.0 - f64::from(self.received) / f64::from(self.sent)
    }
}

/// Receives numbered datagrams on `rx` while `send` runs, then a little longer; returns the
/// distinct sequence numbers seen, each with its arrival time.
pub fn receive_while<F: FnOnce()>(rx: &UdpSocket, send: F) -> Vec<(u32, Instant)> {
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let rx = rx.try_clone().expect("clone socket");
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let receiver = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut set = BTreeSet::new();
        let mut buf = [0u8; 64];
        let mut quiet_since: Option<Instant> = None;
        loop {
            match rx.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if set.insert(seq) {
                        seen.push((seq, Instant::now()));
                    }
                    quiet_since = None;
                }
                Ok(_) => {}
                Err(_) => {
                    if d.load(Ordering::SeqCst) {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if q.elapsed() > Duration::from_millis(200) {
                            break;
                        }
                    }
                }
            }
        }
        seen
    });
    send();
    done.store(true, Ordering::SeqCst);
    receiver.join().expect("receiver thread")
}

/// Sends `n` numbered datagrams from `tx` to `to`, paced so no socket buffer overflows.
pub fn send_numbered(tx: &UdpSocket, to: SocketAddr, first: u32, n: u32) {
    for seq in first..first + n {
        let mut msg = [0u8; 32];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        // A dropped datagram is silent; an error here is a real failure.
        tx.send_to(&msg, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
        if seq % 32 == 31 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Sends `n` datagrams `tx` -> `to` (received on `rx`) and measures what arrived.
pub fn measure(tx: &UdpSocket, rx: &UdpSocket, to: &str, n: u32) -> Measured {
    let to: SocketAddr = to.parse().expect("destination");
    let seen = receive_while(rx, || send_numbered(tx, to, 0, n));
    Measured {
        sent: n,
        received: u32::try_from(seen.len()).expect("count"),
    }
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

pub fn driver(protected: &[&str], lease: &KernelLease) -> Arc<DropDriver> {
    let cfg = NetConfig {
        protected: ProtectedTraffic {
            addresses: protected
                .iter()
                .map(|a| a.parse::<IpAddr>().expect("ip"))
                .collect(),
        },
        lease: lease.clone(),
        ..NetConfig::default()
    };
    let d = Arc::new(DropDriver::new(&cfg));
    let weak: std::sync::Weak<DropDriver> = Arc::downgrade(&d);
    lease.subscribe(weak);
    d
}

pub fn ctx(secs: u64) -> FaultCtx {
    FaultCtx {
        fault_id: format!("t-{}", tag()),
        deadline: SystemTime::now() + Duration::from_secs(secs),
    }
}

pub fn drop_spec(ns: &Path, interface: Option<&str>, p: f64, m: TrafficMatch) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(ns.display().to_string()),
        fault: Fault::Drop(DropFault {
            interface: interface.map(str::to_owned),
            probability: p,
            matcher: m,
        }),
    }
}

/// Plans and applies; panics with the driver's error.
pub fn apply(d: &dyn Driver, ctx: &FaultCtx, spec: &FaultSpec) -> Recipe {
    let planned = d.plan(ctx, spec).unwrap_or_else(|e| panic!("plan: {e}"));
    d.apply(ctx, spec, &planned)
        .unwrap_or_else(|e| panic!("apply: {e}"))
}

/// A health counter by name.
pub fn counter(d: &dyn Driver, r: &Recipe, name: &str) -> u64 {
    match d.health(r) {
        faultline_agent::engine::driver::Health::Ok(c) => c
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no counter {name} in {c:?}")),
        other => panic!("health: {other:?}"),
    }
}

/// Counts the datagrams arriving on `rx` while `run` runs, then until 200 ms of quiet.
pub fn count_while<F: FnOnce()>(rx: &UdpSocket, run: F) -> usize {
    count_by_source(rx, run).values().sum()
}

/// Counts the datagrams arriving on `rx` by source address while `run` runs, then until
/// 200 ms of quiet.
pub fn count_by_source<F: FnOnce()>(rx: &UdpSocket, run: F) -> BTreeMap<IpAddr, usize> {
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let rx = rx.try_clone().expect("clone socket");
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let receiver = std::thread::spawn(move || {
        let mut counts = BTreeMap::new();
        let mut buf = [0u8; 64];
        let mut quiet_since: Option<Instant> = None;
        loop {
            match rx.recv_from(&mut buf) {
                Ok((_, from)) => {
                    *counts.entry(from.ip()).or_insert(0) += 1;
                    quiet_since = None;
                }
                Err(_) if d.load(Ordering::SeqCst) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_millis(200) {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        counts
    });
    run();
    done.store(true, Ordering::SeqCst);
    receiver.join().expect("receiver thread")
}

/// Sends numbered datagrams every `gap` for `total`, from `tx` to `to`, recording when each
/// was sent; returns (seq, sent at) pairs.
pub fn send_timed(
    tx: &UdpSocket,
    to: SocketAddr,
    gap: Duration,
    total: Duration,
) -> Vec<(u32, Instant)> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut seq = 0u32;
    while start.elapsed() < total {
        let mut msg = [0u8; 32];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        tx.send_to(&msg, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
        out.push((seq, Instant::now()));
        seq += 1;
        std::thread::sleep(gap);
    }
    out
}

/// When the first datagram got through (its send time), given what was sent and received.
pub fn first_through(sent: &[(u32, Instant)], seen: &[(u32, Instant)]) -> Option<Instant> {
    let first = seen.iter().map(|(s, _)| *s).min()?;
    sent.iter().find(|(s, _)| *s == first).map(|(_, t)| *t)
}

/// A helper process: this test binary run again for one `#[ignore]`d test (`name`) with `env`
/// set, its stdout piped. Killed and reaped by PID on drop, so a failing test leaves none.
pub struct Helper(pub std::process::Child);

impl Helper {
    pub fn start(name: &str, env: (&str, &str)) -> Helper {
        let exe = std::env::current_exe().expect("test executable");
        let child = Command::new(exe)
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the helper process {name}: {e}"));
        Helper(child)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names of the programs attached to `iface`'s TCX egress in `ns` (the kernel's own list).
pub fn tcx_egress(ns: &Path, iface: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let iface = iface.to_string();
    netns::run_in(Some(ns), move || {
        SchedClassifier::query_tcx(&iface, TcAttachType::Egress)
            .map(|(_, progs)| {
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|e| panic!("querying the TCX programs of {iface}: {e}"))
    })
    .expect("netns thread")
}

/// How many kept-link dispatchers (`keep::PROGRAM`) are on `iface`'s TCX egress in `ns`.
pub fn dispatchers(ns: &Path, iface: &str) -> usize {
    tcx_egress(ns, iface)
        .iter()
        .filter(|n| n.as_str() == faultline_agent::net::keep::PROGRAM)
        .count()
}
