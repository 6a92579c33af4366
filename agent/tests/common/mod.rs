//! Helpers for tests that run the real `faultline-agent` binary: spawn it with a clean
//! environment, collect its stderr, and kill it by PID if a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_identity::pki;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_faultline-agent");

pub fn certs(dir: &Path) {
    pki::init_dir(
        dir,
        &pki::InitOptions {
            sans: vec![],
            agents: vec!["node-a".into(), "node-b".into()],
            days: 1,
            force: false,
        },
    )
    .expect("write test certificates");
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "info");
    for var in [
        "NODE_NAME",
        "FAULTLINE_COORDINATOR",
        "FAULTLINE_NODE_NAME",
        "FAULTLINE_LABELS",
        "FAULTLINE_STATE_DIR",
        "FAULTLINE_METRICS_LISTEN",
        "FAULTLINE_CERTS_DIR",
        "FAULTLINE_TLS_CERT",
        "FAULTLINE_TLS_KEY",
        "FAULTLINE_CA",
        "FAULTLINE_TELEMETRY_INTERVAL",
        "FAULTLINE_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary to completion (it must exit within 10 s) and returns (status, stderr).
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Running::spawn(command(args));
    let status = child
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("faultline-agent {args:?} did not exit within 10 s"));
    (status, child.stderr())
}

/// A running agent whose stderr is collected; killed (SIGKILL) on drop if still running.
pub struct Running {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn faultline-agent");
        let pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running { child, stderr }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until stderr has a line containing `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "agent exited ({status}) before logging {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < until,
                "no log line with {needle:?} within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

pub struct Setup {
    _tmp: tempfile::TempDir,
    pub certs: PathBuf,
    pub state: PathBuf,
    pub coordinator: String,
}

pub fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs_dir = tmp.path().join("certs");
    certs(&certs_dir);
    Setup {
        certs: certs_dir,
        state: tmp.path().join("state"),
        coordinator: format!("https://127.0.0.1:{}", dead_port()),
        _tmp: tmp,
    }
}

impl Setup {
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "--coordinator",
            &self.coordinator,
            "--node-name",
            "node-a",
            "--certs-dir",
            self.certs.to_str().expect("utf-8 path"),
            "--state-dir",
            self.state.to_str().expect("utf-8 path"),
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        // A flag given in `extra` replaces the default one.
        for pair in extra.chunks(2) {
            if let Some(i) = v.iter().position(|a| *a == pair[0]) {
                v.drain(i..i + 2);
            }
        }
        v.extend_from_slice(extra);
        v
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}
