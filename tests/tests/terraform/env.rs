//! The world terraform/modules/host is applied to: a network namespace with a veth to the host,
//! an sshd (Debian's openssh-server) in it with a key pair made for the test, a coordinator on
//! the host side that issues agent certificates, and `terraform` run with its data dir, CLI
//! config and state in a temp dir. Everything is removed by Drop, even when the test fails:
//! every process in the namespace (sshd, and the agent it started) is killed by PID, the veth
//! and the namespace are deleted.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use faultline_identity::pki::{self, InitOptions};
use faultline_tests::procs::{require_tool, run, Proc};
use faultline_tests::stack::wait_ready;
use faultline_tests::{binary, free_port, Certs};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn ip(args: &[&str]) {
    let (ok, out) = run(Path::new("ip"), args);
    assert!(ok, "ip {}: {out}", args.join(" "));
}

// ---- The network namespace -----------------------------------------------------------------

/// `tfh-<pid>` with a /30 to the host: the host side is `.1`, the namespace side `.2`.
pub struct Netns {
    pub name: String,
    veth: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    pub fn create() -> Netns {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        require_tool("ip", "iproute2");
        let pid = std::process::id();
        // Tests of this binary run in parallel: one namespace each.
        let i = NEXT.fetch_add(1, Ordering::SeqCst) % 60;
        let name = format!("tfh-{pid}-{i}");
        let veth = format!("tfh{}x{i}h", pid % 100_000);
        let peer = format!("tfh{}x{i}n", pid % 100_000);
        // 10.213.<pid>.<4i>/30: apart from other tests' 10.20x ranges.
        let n = (pid % 250) as u8;
        let ns = Netns {
            name: name.clone(),
            veth: veth.clone(),
            host_ip: Ipv4Addr::new(10, 213, n, 4 * i + 1),
            ns_ip: Ipv4Addr::new(10, 213, n, 4 * i + 2),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// PIDs of every process in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        let (_, out) = run(Path::new("ip"), &["netns", "pids", &self.name]);
        out.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Netns {
    /// Waits up to 10 s until `keep` is the only process in the namespace (SSH sessions take a
    /// moment to close); returns the others as "pid comm".
    pub fn others_than(&self, keep: u32) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let others: Vec<String> = self
                .pids()
                .into_iter()
                .filter(|p| *p != keep)
                .map(|p| {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    format!("{p} {}", comm.trim())
                })
                .collect();
            if others.is_empty() || Instant::now() >= deadline {
                return others;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only this test's processes live here: sshd and what it started (the agent).
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = run(Path::new("ip"), &["link", "del", &self.veth]);
        let _ = run(Path::new("ip"), &["netns", "del", &self.name]);
    }
}

// ---- sshd ----------------------------------------------------------------------------------

pub struct Sshd {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub client_key: String,
    pub host_key_pub: String,
}

fn keygen(path: &Path) {
    let (ok, out) = run(
        &require_tool("ssh-keygen", "openssh-client"),
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "faultline-terraform-test",
            "-f",
            &path.display().to_string(),
        ],
    );
    assert!(ok, "ssh-keygen: {out}");
}

impl Sshd {
    /// Starts sshd in `ns` on a free port: key authentication only, keys in `dir`. It runs in
    /// its own mount namespace (from `ip netns exec`) with a tmpfs over /run holding only its
    /// privilege-separation dir and an empty /run/netns, so the agent it starts sees no other
    /// named namespace (its start-up sweep of Faultline qdiscs stays inside this one: other
    /// tests' agents keep theirs) and no /run/systemd, and nothing is made on the host's /run.
    pub fn start(ns: &Netns, dir: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is not installed: apt-get install -y openssh-server (make test installs it)"
        );
        keygen(&dir.join("id_ed25519"));
        keygen(&dir.join("ssh_host_ed25519_key"));
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("id_ed25519.pub"), &authorized).expect("authorized_keys");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {ip}\nHostKey {dir}/ssh_host_ed25519_key\n\
                 PidFile {dir}/sshd.pid\nAuthorizedKeysFile {authorized}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n\
                 StrictModes no\nLogLevel VERBOSE\n",
                ip = ns.ns_ip,
                dir = dir.display(),
                authorized = authorized.display()
            ),
        )
        .expect("sshd_config");
        let script = format!(
            "mount -t tmpfs -o size=1m,mode=0755 faultline-tf-test /run && mkdir -m 0755 /run/sshd /run/netns && exec {} -D -e -f {}",
            sshd.display(),
            config.display()
        );
        let args: Vec<String> = ["netns", "exec", &ns.name, "sh", "-c", &script]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let proc = Proc::spawn("sshd", &require_tool("ip", "iproute2"), &args, dir);
        let addr = SocketAddr::from((ns.ns_ip, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {addr}; log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
        Sshd {
            proc,
            addr,
            client_key: read("id_ed25519"),
            host_key_pub: read("ssh_host_ed25519_key.pub").trim().to_string(),
        }
    }
}

// ---- The coordinator -----------------------------------------------------------------------

/// A coordinator on the host side of the veth, issuing agent certificates (the development CA
/// as issuer) on its enrollment listener.
pub struct Coordinator {
    pub certs: Certs,
    pub grpc: SocketAddr,
    pub enroll: SocketAddr,
    /// Killed (by PID) when dropped.
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    pub fn start(ip: Ipv4Addr) -> Coordinator {
        let dir = tempfile::tempdir().expect("coordinator dir");
        let certs_dir = tempfile::tempdir().expect("certs dir");
        pki::init_dir(
            certs_dir.path(),
            &InitOptions {
                sans: vec![ip.to_string()],
                agents: vec![],
                days: 1,
                force: false,
            },
        )
        .expect("certs init");
        let certs = Certs { dir: certs_dir };
        let grpc = SocketAddr::from((ip, free_port()));
        let enroll = SocketAddr::from((ip, free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("coordinator.toml");
        std::fs::write(&config, "[policy]\nmax_fleet_percent_under_fault = 100\n").expect("cfg");
        let c = certs.path();
        let args: Vec<String> = vec![
            "--listen".into(),
            grpc.to_string(),
            "--enroll-listen".into(),
            enroll.to_string(),
            "--metrics-listen".into(),
            metrics.to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--certs-dir".into(),
            c.display().to_string(),
            "--issuer-cert".into(),
            c.join("ca.pem").display().to_string(),
            "--issuer-key".into(),
            c.join("ca-key.pem").display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        let proc = Proc::spawn(
            "coordinator",
            &binary("faultline-coordinator"),
            &args,
            dir.path(),
        );
        wait_ready(&proc, metrics, Duration::from_secs(10));
        Coordinator {
            certs,
            grpc,
            enroll,
            _proc: proc,
            _dir: dir,
        }
    }

    pub fn faultctl(&self, args: &[&str]) -> (bool, String) {
        let url = format!("https://{}", self.grpc);
        let certs = self.certs.path().display().to_string();
        let mut all = vec!["--coordinator", &url, "--certs-dir", &certs];
        all.extend_from_slice(args);
        run(&binary("faultctl"), &all)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (ok, out) = self.faultctl(&all);
        assert!(ok, "faultctl {args:?}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("faultctl {args:?}: {e}: {out}"))
    }
}

// ---- terraform -----------------------------------------------------------------------------

/// A Terraform working directory: the root module, TF_DATA_DIR, an empty CLI config and the
/// local state all live in it.
pub struct Terraform {
    pub exe: PathBuf,
    pub dir: PathBuf,
}

impl Terraform {
    pub fn new(dir: &Path) -> Terraform {
        let exe = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("terraform"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "terraform is not installed: put Terraform >= 1.9 on PATH \
                     (https://developer.hashicorp.com/terraform/install; no provider is downloaded)"
                )
            });
        std::fs::create_dir_all(dir).expect("terraform dir");
        std::fs::write(dir.join("terraformrc"), "").expect("terraformrc");
        Terraform {
            exe,
            dir: dir.to_path_buf(),
        }
    }

    /// The path from this working directory to `target` (module sources must be relative to be
    /// used in place).
    pub fn relative(&self, target: &Path) -> String {
        let depth = self.dir.components().count() - 1;
        let up = "../".repeat(depth);
        format!(
            "{up}{}",
            target.display().to_string().trim_start_matches('/')
        )
    }

    /// Runs `terraform ARGS`; returns (success, stdout+stderr, wall time).
    pub fn run(&self, args: &[&str]) -> (bool, String, Duration) {
        let start = Instant::now();
        let out = Command::new(&self.exe)
            .args(args)
            .current_dir(&self.dir)
            .env("TF_DATA_DIR", self.dir.join(".terraform"))
            .env("TF_CLI_CONFIG_FILE", self.dir.join("terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .expect("run terraform");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, start.elapsed())
    }

    /// Runs `terraform ARGS`, panicking with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> (String, Duration) {
        let (ok, text, took) = self.run(args);
        assert!(ok, "terraform {}:\n{text}", args.join(" "));
        (text, took)
    }
}
