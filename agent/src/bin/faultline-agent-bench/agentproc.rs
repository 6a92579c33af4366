//! The agent as a process (`faultline-agent run`, the standalone mode, release binary): how
//! long a network fault outlives a SIGKILL of the agent (a 100% UDP drop, datagrams sent every
//! millisecond: SIGKILL -> the first datagram through), and the process's RSS and CPU while it
//! holds 1 and 16 faults. Every process is killed and reaped, and every state dir removed,
//! also on failure.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use faultline_agent::net::netns;

use crate::latency::Samples;
use crate::world::{TempDir, World, ADDR_B, IFACE_A};

/// A `faultline-agent run` child: SIGKILLed and reaped on drop.
struct Agent {
    child: Child,
    lines: BufReader<ChildStdout>,
    _state: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts the agent on `faults` and waits until it printed `applied` `n` times.
    fn start(bin: &Path, faults: &str, n: usize, tag: &str) -> Result<Agent> {
        let state = TempDir::named(&format!("agent-{tag}"))?;
        let file = state.0.join("faults.yaml");
        std::fs::write(&file, faults)?;
        let mut child = Command::new(bin)
            .args(["run", "--duration", "5m", "-f"])
            .arg(&file)
            .arg("--state-dir")
            .arg(state.0.join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let out = child.stdout.take().context("the agent's stdout")?;
        let mut a = Agent {
            child,
            lines: BufReader::new(out),
            _state: state,
        };
        let mut applied = 0;
        let mut line = String::new();
        while applied < n {
            line.clear();
            if a.lines.read_line(&mut line)? == 0 {
                bail!("the agent exited before applying {n} fault(s)");
            }
            if line.starts_with("failed ") {
                bail!("the agent: {}", line.trim());
            }
            applied += usize::from(line.starts_with("applied "));
        }
        Ok(a)
    }
}

/// A process's (RSS in MiB, CPU in cores averaged over `over`), from `/proc/<pid>`.
pub fn footprint(pid: u32, over: Duration) -> Result<(f64, f64)> {
    let ticks = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime); `after` starts at field 3.
        Ok(f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
    };
    let hz = 100.0; // USER_HZ on Linux
    let t0 = ticks()?;
    std::thread::sleep(over);
    let t1 = ticks()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok((rss_kib / 1024.0, (t1 - t0) as f64 / hz / over.as_secs_f64()))
}

/// The bench's veth in A as the fields of a YAML flow mapping (a fault inside an experiment).
pub fn flow_target(w: &World) -> String {
    format!(
        "interface: {IFACE_A}, target: {{netns: {}}}",
        w.path_a().display()
    )
}

fn target(w: &World) -> String {
    format!(
        "interface: {IFACE_A}\ntarget: {{netns: {}}}\n",
        w.path_a().display()
    )
}

/// SIGKILL of the agent -> the first datagram through its 100% drop, `runs` times (ms).
pub fn sigkill_to_inert(w: &World, bin: &Path, runs: usize) -> Result<Samples> {
    const PORT: u16 = 7788;
    let rx = netns::run_in(Some(&w.path_b()), || {
        UdpSocket::bind(format!("{ADDR_B}:{PORT}"))
    })??;
    let tx = netns::run_in(Some(&w.path_a()), || UdpSocket::bind("0.0.0.0:0"))??;
    rx.set_read_timeout(Some(Duration::from_millis(1)))?;
    let fault = format!(
        "kind: drop\nprobability: 1\nmatch: {{ports: [{PORT}], protocol: udp}}\n{}",
        target(w)
    );
    let to = format!("{ADDR_B}:{PORT}");
    let mut s = Samples::default();
    let mut buf = [0u8; 16];
    for i in 0..runs {
        let mut agent = Agent::start(bin, &fault, 1, &format!("kill-{i}"))?;
        // The fault holds: 200 datagrams, none arrives.
        while rx.recv_from(&mut buf).is_ok() {}
        for _ in 0..200 {
            tx.send_to(b"x", &to)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        if rx.recv_from(&mut buf).is_ok() {
            bail!("a datagram got through the 100% drop before the kill");
        }
        agent.child.kill().context("SIGKILL the agent")?;
        let killed = Instant::now();
        let _ = agent.child.wait();
        loop {
            tx.send_to(b"x", &to)?;
            if rx.recv_from(&mut buf).is_ok() {
                s.push(killed.elapsed());
                break;
            }
            if killed.elapsed() > Duration::from_secs(10) {
                bail!("datagrams still dropped 10 s after SIGKILL of the agent");
            }
        }
        drop(agent);
    }
    Ok(s)
}

/// The agent's footprint holding `n` drop faults (probability 0, one UDP port each).
pub fn holding(w: &World, bin: &Path, n: usize, over: Duration) -> Result<(f64, f64)> {
    let faults: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "kind: drop\nprobability: 0\nmatch: {{ports: [{}], protocol: udp}}\n{}",
                61000 + i,
                target(w)
            )
        })
        .collect();
    let agent = Agent::start(bin, &faults.join("---\n"), n, &format!("hold-{n}"))?;
    // Let start-up work (the spares' refill) settle before sampling.
    std::thread::sleep(Duration::from_secs(2));
    footprint(agent.child.id(), over)
}
