//! The lab of the composition test, each piece removed by a Drop guard even when the test
//! fails: two network namespaces joined by a veth pair, dnsmasq (Debian's) in one with a
//! resolv.conf for the other, a 64 MiB tmpfs, a loop device with a v1 blkio cgroup, and the
//! user's measurements: `getent hosts`, `df`, `dd oflag=direct` from inside the cgroup, and a
//! TCP transfer between the namespaces timed at the receiver (python3).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Address of namespace A (the clients, the receiver) and B (dnsmasq, the sender).
pub const ADDR_A: &str = "10.77.0.1";
pub const ADDR_B: &str = "10.77.0.2";
/// The names dnsmasq serves.
pub const GOOD: &str = "good.compose.test";
pub const BAD: &str = "bad.compose.test";
pub const BAD_ADDR: &str = "10.9.9.2";
/// The TCP port the bandwidth fault shapes.
pub const PORT: u16 = 5001;

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(args: &[&str]) -> String {
    let (ok, out) = sh(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

/// Fails (never skips) when a tool is missing, naming the package.
pub fn require_tools() {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("dnsmasq", "dnsmasq"),
        ("getent", "libc-bin"),
        ("losetup", "mount"),
        ("dd", "coreutils"),
        ("python3", "python3"),
    ] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "the composition test needs {tool}: apt-get install {pkg}"
        );
    }
}

/// A named network namespace, deleted on drop (with its end of the veth pair).
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        must(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        must(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// A child process killed by PID and reaped on drop.
pub struct Kid(pub Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// /etc/netns/<ns>/resolv.conf pointing at B; removed on drop.
pub struct ResolvConf(PathBuf);

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// A and B joined by a veth pair (`ca<pid>` in A, `cb<pid>` in B), dnsmasq in B.
pub struct Lab {
    pub a: Netns,
    pub b: Netns,
    pub if_b: String,
    _resolv: ResolvConf,
    _dnsmasq: Kid,
}

impl Lab {
    pub fn new() -> Lab {
        let id = std::process::id();
        let a = Netns::new(format!("flc-a-{id}"));
        let b = Netns::new(format!("flc-b-{id}"));
        let (if_a, if_b) = (format!("ca{id}"), format!("cb{id}"));
        must(&[
            "ip", "link", "add", &if_a, "netns", &a.0, "type", "veth", "peer", "name", &if_b,
            "netns", &b.0,
        ]);
        a.exec(&["ip", "addr", "add", &format!("{ADDR_A}/24"), "dev", &if_a]);
        b.exec(&["ip", "addr", "add", &format!("{ADDR_B}/24"), "dev", &if_b]);
        a.exec(&["ip", "link", "set", &if_a, "up"]);
        b.exec(&["ip", "link", "set", &if_b, "up"]);
        a.exec(&["ip", "route", "add", "default", "via", ADDR_B]);
        b.exec(&["ip", "route", "add", "default", "via", ADDR_A]);
        let dir = PathBuf::from(format!("/etc/netns/{}", a.0));
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<a>");
        let resolv = ResolvConf(dir.clone());
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {ADDR_B}\noptions timeout:1 attempts:1\n"),
        )
        .expect("resolv.conf");
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &b.0, "dnsmasq", "--no-daemon"])
            .args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
            ])
            .args([
                "--bind-interfaces",
                "--port=53",
                "--cache-size=0",
                "--pid-file=",
            ])
            .arg(format!("--listen-address={ADDR_B}"))
            .arg(format!("--host-record={GOOD},10.9.9.1"))
            .arg(format!("--host-record={BAD},{BAD_ADDR}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let lab = Lab {
            a,
            b,
            if_b,
            _resolv: resolv,
            _dnsmasq: Kid(dnsmasq),
        };
        let until = Instant::now() + Duration::from_secs(10);
        while lab.getent(GOOD).is_none() {
            assert!(Instant::now() < until, "dnsmasq never answered {GOOD}");
            std::thread::sleep(Duration::from_millis(100));
        }
        lab
    }

    /// `ip netns exec A getent hosts NAME`: the address glibc resolved, or None.
    pub fn getent(&self, name: &str) -> Option<String> {
        let (ok, out) = sh(&["ip", "netns", "exec", &self.a.0, "getent", "hosts", name]);
        ok.then(|| out.split_whitespace().next().map(str::to_string))
            .flatten()
    }

    /// Seconds A's receiver took from accepting to the end of `bytes` that B sent to it.
    pub fn transfer_secs(&self, bytes: usize) -> f64 {
        const RECV: &str = "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((sys.argv[1],int(sys.argv[2])))\ns.listen(1)\ns.settimeout(20)\nprint('ready',flush=True)\nc,_=s.accept()\nc.settimeout(20)\nt=time.monotonic()\nn=0\nwhile True:\n  b=c.recv(65536)\n  if not b: break\n  n+=len(b)\nprint(n,time.monotonic()-t,flush=True)\n";
        const SEND: &str = "import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=20)\ns.sendall(b'x'*int(sys.argv[3]))\ns.close()\n";
        let port = PORT.to_string();
        let mut recv = Kid(Command::new("ip")
            .args([
                "netns", "exec", &self.a.0, "python3", "-c", RECV, ADDR_A, &port,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver"));
        let mut lines = BufReader::new(recv.0.stdout.take().expect("stdout")).lines();
        let ready = lines.next().and_then(Result::ok);
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "the receiver did not start"
        );
        let n = bytes.to_string();
        must(&[
            "ip", "netns", "exec", &self.b.0, "python3", "-c", SEND, ADDR_A, &port, &n,
        ]);
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("the receiver's result");
        let v: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(v.first().copied(), Some(n.as_str()), "received: {line}");
        v[1].parse().expect("seconds")
    }
}

/// A 64 MiB tmpfs mounted over `dir`, lazily unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn over(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir tmpfs dir");
        let d = dir.display().to_string();
        must(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "faultline-compose",
            &d,
        ]);
        Tmpfs(dir.to_path_buf())
    }

    /// Bytes used, as `df` shows them.
    pub fn used(&self) -> u64 {
        let out = must(&["df", "-B1", "--output=used", &self.0.display().to_string()]);
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {out}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", &self.0.display().to_string()]);
    }
}

/// A 64 MiB loop device over a file, detached on drop.
pub struct Loop(pub PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Loop {
    pub fn new() -> Loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .expect("backing file");
        let out = must(&["losetup", "-f", "--show", &img.display().to_string()]);
        Loop(PathBuf::from(out.trim()), dir)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = sh(&["losetup", "-d", &self.0.display().to_string()]);
    }
}

/// A v1 blkio cgroup of the test's own, removed on drop.
pub struct Blkio(pub PathBuf);

impl Blkio {
    pub fn new() -> Blkio {
        let top = Path::new("/sys/fs/cgroup/blkio");
        assert!(
            top.join("blkio.throttle.write_bps_device").exists(),
            "the composition test needs the cgroup v1 blkio controller at {}",
            top.display()
        );
        let dir = top.join(format!("faultline-compose-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir blkio cgroup");
        Blkio(dir)
    }

    /// The cgroup path as a fault target names it (`/faultline-compose-<pid>`).
    pub fn target(&self) -> String {
        format!("/{}", self.0.file_name().expect("name").to_string_lossy())
    }

    /// Seconds a `dd oflag=direct` of `mib` MiB onto `disk` takes from inside the cgroup.
    pub fn dd_secs(&self, disk: &Loop, mib: u32) -> f64 {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={} bs=64k count={} oflag=direct",
            self.0.display(),
            disk.0.display(),
            mib * 16
        );
        let start = Instant::now();
        let mut child = Kid(Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dd"));
        let mut err = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let st = child.0.wait().expect("wait dd");
        assert!(st.success(), "dd failed: {err}");
        start.elapsed().as_secs_f64()
    }
}

impl Drop for Blkio {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
