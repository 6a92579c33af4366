//! The agent daemon in a real session (optional: `--coordinator-bin` and `--faultctl-bin`):
//! development certificates from `faultctl certs init`, a coordinator on 127.0.0.1, the agent
//! connected to it and sending telemetry every second; the agent's RSS and CPU over a window
//! idle, then again while it holds the drop faults of an experiment `faultctl apply` started.
//! Both daemons are killed and reaped and the directory removed, also on failure.

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

/// A gauge of the agent's /metrics (None until /metrics answers or without the gauge).
fn gauge(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits up to `limit` for an agent gauge to read `want`.
fn wait_gauge(port: u16, name: &str, want: f64, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    while gauge(port, name) != Some(want) {
        if Instant::now() > until {
            bail!(
                "the agent's {name} is {:?}, not {want}, after {} s",
                gauge(port, name),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The session figures: idle, and holding `n` faults (RSS MiB, CPU cores).
#[derive(Debug)]
pub struct SessionFootprint {
    pub idle: (f64, f64),
    pub holding: (usize, f64, f64),
}

/// An experiment of `n` drop faults (probability 0, one UDP port each) on the bench's veth.
fn experiment(n: usize, fault_target: &str) -> String {
    let faults: String = (0..n)
        .map(|i| {
            format!(
                "    - {{kind: drop, probability: 0, match: {{ports: [{}], protocol: udp}}, {fault_target}}}\n",
                61000 + i
            )
        })
        .collect();
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: bench-hold}}\nspec:\n  \
         duration: 10m\n  targets: {{agents: {{names: [bench-node]}}, mode: all}}\n  faults:\n{faults}"
    )
}

/// The agent daemon's footprint in a session over `over` (after `settle`): idle, then holding
/// `n` drop faults on `fault_target` (`interface: ..., target: {netns: ...}`).
pub fn footprints(
    agent: &Path,
    coordinator: &Path,
    faultctl: &Path,
    n: usize,
    fault_target: &str,
    settle: Duration,
    over: Duration,
) -> Result<SessionFootprint> {
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
    // One agent is the whole fleet: the default policy (50% under fault) would allow none.
    let config = dir.0.join("coordinator.toml");
    std::fs::write(&config, "[policy]\nmax_fleet_percent_under_fault = 100\n")?;
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
            "--config".into(),
            s(&config),
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
            certs.clone(),
            "--state-dir".into(),
            s(&dir.0.join("agent-state")),
            "--metrics-listen".into(),
            format!("127.0.0.1:{ametrics}"),
            "--telemetry-interval".into(),
            "1s".into(),
        ],
    )?;
    wait_gauge(
        ametrics,
        "faultline_agent_session_connected",
        1.0,
        Duration::from_secs(30),
    )
    .context("the agent did not connect to the coordinator")?;
    std::thread::sleep(settle);
    let idle = footprint(agent.0.id(), over)?;

    let file = dir.0.join("hold.yaml");
    std::fs::write(&file, experiment(n, fault_target))?;
    let url = format!("https://127.0.0.1:{port}");
    let ctl = |args: &[&str]| {
        let mut all = vec!["--coordinator", &url, "--certs-dir", &certs];
        all.extend_from_slice(args);
        sh(&s(faultctl), &all)
    };
    ctl(&["--identity", "operator", "apply", "-f", &s(&file)])?;
    let held = wait_gauge(
        ametrics,
        "faultline_agent_faults_active{kind=\"drop\"}",
        n as f64,
        Duration::from_secs(30),
    )
    .and_then(|()| {
        std::thread::sleep(settle);
        footprint(agent.0.id(), over)
    });
    let _ = ctl(&[
        "--identity",
        "operator",
        "abort",
        "bench-hold",
        "--reason",
        "bench done",
    ]);
    let (rss, cores) = held?;
    Ok(SessionFootprint {
        idle,
        holding: (n, rss, cores),
    })
}
