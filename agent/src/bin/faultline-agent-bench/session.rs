//! The agent daemon idle in a real session (optional: `--coordinator-bin` and `--faultctl-bin`):
//! development certificates from `faultctl certs init`, a coordinator on 127.0.0.1, the agent
//! connected to it and sending telemetry every second; then the agent's RSS and CPU over a
//! window. Both daemons are killed and reaped and the directory removed, also on failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agentproc::footprint;
use crate::world::{sh, TempDir};

/// A daemon killed and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(bin: &Path, args: &[String]) -> Result<Daemon> {
    Ok(Daemon(
        Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    ))
}

/// The agent's `faultline_agent_session_connected` gauge (None until /metrics answers).
fn connected(port: u16) -> Option<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(
        body.lines()
            .any(|l| l.trim() == "faultline_agent_session_connected 1"),
    )
}

/// (RSS MiB, CPU cores) of the agent daemon idle in a session for `over`, after `settle`.
pub fn idle(
    agent: &Path,
    coordinator: &Path,
    faultctl: &Path,
    settle: Duration,
    over: Duration,
) -> Result<(f64, f64)> {
    let dir = TempDir::named("session")?;
    let s = |p: &Path| p.display().to_string();
    let certs = s(&dir.0.join("certs"));
    sh(
        &s(faultctl),
        &[
            "certs",
            "init",
            "--dir",
            &certs,
            "--agents",
            "bench-node",
            "--days",
            "1",
        ],
    )?;
    let (port, cmetrics, ametrics) = (free_port()?, free_port()?, free_port()?);
    let _coordinator = spawn(
        coordinator,
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{cmetrics}"),
            "--data-dir".into(),
            s(&dir.0.join("coordinator-data")),
            "--certs-dir".into(),
            certs.clone(),
        ],
    )?;
    let agent = spawn(
        agent,
        &[
            "--coordinator".into(),
            format!("https://127.0.0.1:{port}"),
            "--node-name".into(),
            "bench-node".into(),
            "--certs-dir".into(),
            certs,
            "--state-dir".into(),
            s(&dir.0.join("agent-state")),
            "--metrics-listen".into(),
            format!("127.0.0.1:{ametrics}"),
            "--telemetry-interval".into(),
            "1s".into(),
        ],
    )?;
    let until = Instant::now() + Duration::from_secs(30);
    while connected(ametrics) != Some(true) {
        if Instant::now() > until {
            bail!("the agent did not connect to the coordinator within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(settle);
    footprint(agent.0.id(), over)
}
