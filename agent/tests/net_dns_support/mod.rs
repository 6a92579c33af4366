//! Helpers for the dns fault's root tests: a real resolver (Debian's dnsmasq) in one network
//! namespace, clients in another (the veth pair of `net_ebpf_support`), raw DNS queries built
//! here, glibc lookups through `getent hosts` with a resolv.conf for the client namespace, and
//! cgroup2 directories. Every namespace, process, cgroup and file is removed by a Drop guard,
//! even when a test fails.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{Driver, FaultCtx, Recipe};
use faultline_agent::net::dns::DnsDriver;
use faultline_agent::net::{netns, KernelLease, NetConfig};
use faultline_core::fault::{DnsAction, DnsFault, DnsName, Fault, FaultSpec, Target};

use crate::net_ebpf_support::{self as ebpf_support, Pair, B};

mod capture;
mod child;
// Not every test crate that includes these helpers uses both.
#[allow(unused_imports)]
pub use capture::*;
#[allow(unused_imports)]
pub use child::*;

/// Names dnsmasq serves (no upstream): exact host records and a domain.
pub const GOOD: &str = "good.fl.test";
pub const BAD: &str = "bad.fl.test";
/// Anything below svc.fl.test answers 10.9.9.3.
pub const SVC_DOMAIN: &str = "svc.fl.test";
pub const GOOD_ADDR: &str = "10.9.9.1";
/// IPv6 addresses of the pair's ends (`a`, `b`), added with nodad.
pub const A6: &str = "fd42:200::1";
pub const B6: &str = "fd42:200::2";

/// Fails (never skips) when dnsmasq or getent is missing.
pub fn require_tools() {
    ebpf_support::require_root();
    for (tool, pkg) in [("dnsmasq", "dnsmasq"), ("getent", "libc-bin")] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "the dns tests need {tool}: apt-get install {pkg}");
    }
}

/// dnsmasq serving GOOD, BAD and *.SVC_DOMAIN on B:53 inside `ns`; killed by PID on drop.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    pub fn start(ns: &str) -> Dnsmasq {
        Dnsmasq::start_on(ns, &format!("{B},{B6}"))
    }

    /// dnsmasq listening on `addrs` (comma-separated) in `ns`.
    pub fn start_on(ns: &str, addrs: &str) -> Dnsmasq {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={addrs}"))
            .args(["--port=53", "--cache-size=0", "--pid-file="])
            .arg(format!("--host-record={GOOD},{GOOD_ADDR}"))
            .arg(format!("--host-record={BAD},10.9.9.2"))
            .arg(format!("--address=/{SVC_DOMAIN}/10.9.9.3"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        Dnsmasq { child }
    }

    /// Waits until it answers GOOD from `client`.
    pub fn wait_ready(&mut self, client: &UdpSocket) {
        self.wait_ready_at(client, &format!("{B}:53"));
    }

    /// Waits until `server` answers GOOD from `client`.
    pub fn wait_ready_at(&mut self, client: &UdpSocket, server: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Some(a) = query_to(client, server, GOOD, 1, false, Duration::from_millis(200)) {
                if a.rcode == 0 && a.answers > 0 {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("dnsmasq exited ({st}): {err}");
            }
        }
        panic!("dnsmasq never answered {GOOD}");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pair with dnsmasq on B (namespace `b`); clients live in `a`, whose default route is the
/// veth, with /etc/netns/<a>/resolv.conf pointing at B (used by `ip netns exec a getent`).
pub struct Lab {
    pub pair: Pair,
    pub dnsmasq: Dnsmasq,
    pub resolv: ResolvConf,
    pub client: UdpSocket,
}

impl Lab {
    pub fn new() -> Lab {
        require_tools();
        let pair = Pair::new();
        pair.a.exec(&[
            "addr",
            "add",
            &format!("{A6}/64"),
            "dev",
            &pair.if_a,
            "nodad",
        ]);
        pair.b.exec(&[
            "addr",
            "add",
            &format!("{B6}/64"),
            "dev",
            &pair.if_b,
            "nodad",
        ]);
        let resolv = ResolvConf::new(&pair.a.name);
        let dnsmasq = Dnsmasq::start(&pair.b.name);
        let client = ebpf_support::udp_in(&pair.a.path(), "0.0.0.0:0");
        let mut lab = Lab {
            pair,
            dnsmasq,
            resolv,
            client,
        };
        lab.dnsmasq.wait_ready(&lab.client);
        lab
    }

    pub fn netns(&self) -> PathBuf {
        self.pair.a.path()
    }

    /// `ip netns exec <a> getent hosts NAME`: the address glibc resolved, or None.
    pub fn getent(&self, name: &str) -> Option<String> {
        getent_in(&self.pair.a.name, None, name)
    }
}

/// `getent hosts NAME` in netns `ns` (optionally first moved into the cgroup2 directory
/// `cgroup`): the first address glibc returned, or None when the lookup failed.
pub fn getent_in(ns: &str, cgroup: Option<&Path>, name: &str) -> Option<String> {
    // The cgroup is joined before `ip netns exec`, which remounts /sys for the namespace.
    let join = match cgroup {
        Some(c) => format!("echo $$ > {}/cgroup.procs && ", c.display()),
        None => String::new(),
    };
    let script = format!("{join}exec ip netns exec {ns} getent hosts {name}");
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run getent");
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// /etc/netns/<ns>/resolv.conf (`ip netns exec` mounts it over /etc/resolv.conf); removed on
/// drop with its directory.
pub struct ResolvConf {
    dir: PathBuf,
}

impl ResolvConf {
    pub fn new(ns: &str) -> ResolvConf {
        let dir = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<ns>");
        let guard = ResolvConf { dir };
        std::fs::write(
            guard.dir.join("resolv.conf"),
            format!("nameserver {B}\noptions timeout:1 attempts:1\n"),
        )
        .expect("write resolv.conf");
        guard
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // /etc/netns itself only when this test made it the last entry.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// A cgroup2 directory under the unified hierarchy, removed on drop (its processes are
/// killed by PID first).
pub struct Cgroup2 {
    pub dir: PathBuf,
    /// Path relative to the cgroup2 root (`/fl-dns-xxxx/target`).
    pub path: String,
}

pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

impl Cgroup2 {
    pub fn new(path: &str) -> Cgroup2 {
        assert!(
            Path::new(CGROUP2_ROOT).join("cgroup.procs").exists(),
            "the dns pod-scoping test needs cgroup2 mounted at {CGROUP2_ROOT}"
        );
        let dir = Path::new(CGROUP2_ROOT).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup2 {
            dir,
            path: path.to_string(),
        }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The parent, when the test made one for this cgroup and it is now empty.
        if let Some(parent) = self.dir.parent() {
            if parent != Path::new(CGROUP2_ROOT) {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// A child process killed by PID on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A query as built here: ID, RD, one question (type A or as given, class IN); with `edns`
/// an OPT record (payload 1232, a client cookie), which the fault's answer must cut.
pub fn build_query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
        q.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    }
    q
}

/// What came back for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub answers: u16,
    /// The answer's question section equals the query's.
    pub same_question: bool,
    pub len: usize,
}

/// Sends one query from `sock` to B:53 and waits `timeout` for the answer with its ID.
pub fn query(
    sock: &UdpSocket,
    name: &str,
    id: u16,
    edns: bool,
    timeout: Duration,
) -> Option<Answer> {
    query_to(sock, &format!("{B}:53"), name, id, edns, timeout)
}

/// Sends one query from `sock` to `server` and waits `timeout` for the answer with its ID.
pub fn query_to(
    sock: &UdpSocket,
    server: &str,
    name: &str,
    id: u16,
    edns: bool,
    timeout: Duration,
) -> Option<Answer> {
    let to: SocketAddr = server.parse().expect("server");
    let q = build_query(id, name, 1, edns);
    sock.send_to(&q, to).expect("send query");
    let until = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return None;
        };
        if from != to || n < 12 || buf[0..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
            continue; // a late answer to an earlier query
        }
        let qlen = q.len() - if edns { 23 } else { 0 };
        return Some(Answer {
            rcode: buf[3] & 0x0f,
            answers: u16::from_be_bytes([buf[6], buf[7]]),
            same_question: n >= qlen && buf[12..qlen] == q[12..qlen],
            len: n,
        });
    }
}

/// Outcomes of `n` queries for `name`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub answered: u32,
    pub nxdomain: u32,
    pub servfail: u32,
    pub other_rcode: u32,
    pub timeouts: u32,
}

pub fn tally(sock: &UdpSocket, name: &str, n: u32, first_id: u16, timeout: Duration) -> Tally {
    let mut t = Tally::default();
    for i in 0..n {
        let id = first_id.wrapping_add(i as u16);
        match query(sock, name, id, i % 2 == 1, timeout) {
            None => t.timeouts += 1,
            Some(a) if a.rcode == 0 && a.answers > 0 => t.answered += 1,
            Some(a) if a.rcode == 3 => {
                assert!(
                    a.same_question,
                    "an NXDOMAIN answer keeps the question: {a:?}"
                );
                t.nxdomain += 1
            }
            Some(a) if a.rcode == 2 => t.servfail += 1,
            Some(_) => t.other_rcode += 1,
        }
    }
    t
}

pub fn driver(lease: &KernelLease) -> Arc<DnsDriver> {
    let cfg = NetConfig {
        lease: lease.clone(),
        ..NetConfig::default()
    };
    let d = Arc::new(DnsDriver::new(&cfg));
    let weak: std::sync::Weak<DnsDriver> = Arc::downgrade(&d);
    lease.subscribe(weak);
    d
}

pub fn ctx(secs: u64) -> FaultCtx {
    FaultCtx {
        fault_id: format!("t-dns-{:06x}", rand::random::<u32>() & 0xff_ffff),
        deadline: SystemTime::now() + Duration::from_secs(secs),
    }
}

pub fn dns_spec(target: Target, names: &[&str], action: DnsAction, p: f64) -> FaultSpec {
    let spec = FaultSpec {
        target,
        fault: Fault::Dns(DnsFault {
            interface: None,
            names: names
                .iter()
                .map(|n| DnsName::parse(n).expect("name"))
                .collect(),
            action,
            probability: p,
        }),
    };
    spec.validate("spec").expect("a valid spec");
    spec
}

/// Plans and applies; panics with the driver's error. Returns the recipe and how long plan
/// plus apply took.
pub fn apply(d: &dyn Driver, ctx: &FaultCtx, spec: &FaultSpec) -> (Recipe, Duration) {
    let t = Instant::now();
    let planned = d.plan(ctx, spec).unwrap_or_else(|e| panic!("plan: {e}"));
    let planned_in = t.elapsed();
    let r = d
        .apply(ctx, spec, &planned)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    println!(
        "dns fault: plan {:.1} ms, apply {:.1} ms",
        planned_in.as_secs_f64() * 1000.0,
        (t.elapsed() - planned_in).as_secs_f64() * 1000.0
    );
    (r, t.elapsed())
}

/// Runs `f` inside netns `ns` (a socket made there stays there).
pub fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::run_in(Some(ns), f).expect("enter netns")
}

/// After a revert: how long until `name` resolves (polled every 2 ms, at most `within`).
///
/// Revert closes the link's file descriptor at once, but a child process that another test
/// thread of this process forks at that moment holds a copy of the descriptor until it execs
/// (the kernel closes it then, O_CLOEXEC); only then does the kernel detach the program. On a
/// loaded machine that can take milliseconds, so tests wait for it rather than race it.
pub fn resolves_again(sock: &UdpSocket, name: &str, within: Duration) -> Duration {
    let t = Instant::now();
    let mut id: u16 = 0xf000;
    while t.elapsed() < within {
        id = id.wrapping_add(1);
        if let Some(a) = query(sock, name, id, false, Duration::from_millis(100)) {
            if a.rcode == 0 && a.answers > 0 {
                return t.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{name} did not resolve within {within:?} of the revert");
}
