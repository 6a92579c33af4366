//! Helpers for the control-channel test (root, real kernel, real binaries): a kube-proxy-like
//! pair of network namespaces (a "node" whose OUTPUT chain DNATs a Service VIP to a "pod" and
//! MASQUERADEs with random source ports), a private /etc/hosts for the node, daemons run with
//! `ip netns exec` and killed by PID, an echo server in the pod, TCP probes and metrics read
//! from inside a namespace. Everything is removed by Drop guards, even when the test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::net::netns;

use crate::net_ebpf_support::{ip, Ns};

/// The node (where the agent runs), the coordinator's pod, and the Service VIP.
pub const NODE_IP: &str = "10.202.1.1";
pub const POD_IP: &str = "10.202.1.2";
pub const VIP: &str = "10.202.9.9";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Two namespaces joined by a veth; the node routes everything through the pod's side and
/// NATs like kube-proxy: VIP:443 -> pod:7443 (the coordinator), VIP:8443 -> pod:9000 (echo).
pub fn kube_proxy_like(node: &Ns, pod: &Ns) -> String {
    let tag = &pod.name[pod.name.len() - 6..];
    let (if_node, if_pod) = (format!("fln{tag}"), format!("flp{tag}"));
    ip(&[
        "link", "add", &if_node, "type", "veth", "peer", "name", &if_pod,
    ]);
    ip(&["link", "set", &if_node, "netns", &node.name]);
    ip(&["link", "set", &if_pod, "netns", &pod.name]);
    node.exec(&["addr", "add", &format!("{NODE_IP}/24"), "dev", &if_node]);
    pod.exec(&["addr", "add", &format!("{POD_IP}/24"), "dev", &if_pod]);
    node.exec(&["link", "set", &if_node, "up"]);
    pod.exec(&["link", "set", &if_pod, "up"]);
    node.exec(&["route", "add", "default", "via", POD_IP, "dev", &if_node]);
    for rule in [
        format!("-A OUTPUT -d {VIP}/32 -p tcp --dport 443 -j DNAT --to-destination {POD_IP}:7443"),
        format!("-A OUTPUT -d {VIP}/32 -p tcp --dport 8443 -j DNAT --to-destination {POD_IP}:9000"),
        format!("-A POSTROUTING -d {POD_IP}/32 -p tcp -j MASQUERADE --random-fully"),
    ] {
        let mut args = vec!["netns", "exec", &node.name, "iptables", "-t", "nat"];
        args.extend(rule.split(' '));
        run("ip", &args);
    }
    if_node
}

/// Fails (never skips) when a prerequisite is missing, saying what to install.
pub fn require_iptables() -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let p = Path::new(dir).join("iptables");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "this test needs iptables (the DNAT a kube-proxy Service applies): apt-get install -y \
         iptables (scripts/install-deps.sh test installs it)"
    );
}

/// A workspace binary next to the agent's (`target/debug`), or a panic with the build command.
pub fn workspace_binary(name: &str) -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_faultline-agent"));
    let p = agent.with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// Runs a command; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {} failed: {text}",
        args.join(" ")
    );
    text
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec <ns>` mounts over /etc/hosts; removed on drop.
pub struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    pub fn new(ns: &str, lines: &str) -> Hosts {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        let hosts = Hosts { dir };
        std::fs::write(
            hosts.dir.join("hosts"),
            format!("127.0.0.1 localhost\n{lines}\n"),
        )
        .expect("write the namespace's hosts file");
        hosts
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon started with `ip netns exec <ns>` (which execs it: the child's PID is the
/// daemon's); its output goes to a log file. Dropping it kills it by PID and reaps it.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, ns: &str, program: &Path, args: &[String], logs: &Path) -> Daemon {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Daemon {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("{} exited ({status}); log:\n{}", self.name, self.log());
        }
    }

    /// SIGTERM by PID, then wait up to `within`; returns whether it exited.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `f` on a thread inside the named netns.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from(format!("/run/netns/{ns}"));
    netns::run_in(Some(&path), f).unwrap_or_else(|e| panic!("enter {ns}: {e}"))
}

/// A TCP echo server listening inside a netns; stops on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start(ns: &str, addr: SocketAddr) -> Echo {
        let listener = in_ns(ns, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind the echo server on {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = [0u8; 512];
                    while !flag.load(Ordering::SeqCst) {
                        match conn.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Echo { stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A TCP connection opened from inside `ns` (`None` when it cannot connect within `timeout`).
pub fn tcp_from(ns: &str, to: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    in_ns(ns, move || TcpStream::connect_timeout(&to, timeout).ok())
}

/// Whether `conn` echoes a message back within `timeout`.
pub fn echoes(conn: &mut TcpStream, timeout: Duration) -> bool {
    let msg = b"faultline";
    if conn.write_all(msg).is_err() {
        return false;
    }
    let _ = conn.set_read_timeout(Some(timeout));
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let until = Instant::now() + timeout;
    while got.len() < msg.len() && Instant::now() < until {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.ends_with(msg)
}

/// `GET /metrics` on `addr` from inside `ns` (None when nothing answers).
pub fn metrics(ns: &str, addr: SocketAddr) -> Option<String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    })
}

/// The sum of every series of `name` whose labels contain all of `labels` (`k="v"` strings);
/// 0 when there is none (counters appear on first use).
pub fn metric(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A cgroup2 cgroup under `/sys/fs/cgroup/unified`, removed on drop (after its processes).
pub struct Cgroup {
    pub name: String,
    pub dir: PathBuf,
}

impl Cgroup {
    pub fn new() -> Cgroup {
        let root = Path::new("/sys/fs/cgroup/unified");
        assert!(
            root.join("cgroup.procs").exists(),
            "this test needs cgroup2 mounted at {}",
            root.display()
        );
        let name = format!("fl-s-{:06x}", rand::random::<u32>() & 0xff_ffff);
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

/// How many of `bytes` bytes sent on `s` come back from the echo server within `within`.
pub async fn echoed_within<S>(s: &mut S, bytes: usize, within: Duration) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(s);
    let got = AtomicUsize::new(0);
    let payload = vec![0x5a; bytes];
    let write = async {
        let _ = w.write_all(&payload).await;
    };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        while got.load(Ordering::Relaxed) < bytes {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    };
    let _ = tokio::time::timeout(within, async { tokio::join!(write, read) }).await;
    got.load(Ordering::Relaxed)
}
