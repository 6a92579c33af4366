//! Data-path cost over the veth pair (A sends, B receives): TCP throughput with iperf3 and
//! the round-trip time of single UDP datagrams (an echo in B), with nothing attached, with an
//! armed `drop` program at probability 0 that matches every packet, with a `network` fault
//! whose steering program matches nothing (its HTB root included), and with the iptables
//! rules the anchors would use instead.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use faultline_agent::net::netns;

use crate::latency::Samples;
use crate::world::{World, ADDR_B};

/// One configuration's figures.
#[derive(Debug, Clone)]
pub struct Cost {
    pub what: String,
    pub tcp_gbit: f64,
    pub rtt_us: Samples,
}

const ECHO_PORT: u16 = 7777;
const IPERF_PORT: &str = "5201";
const DATAGRAMS: usize = 2000;

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// TCP throughput A -> B over `secs` seconds, in Gbit/s (iperf3, receiver side).
fn iperf(w: &World, secs: u32) -> Result<f64> {
    let _server = Reaped(
        Command::new("ip")
            .args([
                "netns", "exec", &w.b, "iperf3", "-s", "-1", "-p", IPERF_PORT,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (scripts/install-deps.sh bench installs it)")?,
    );
    let mut last = String::new();
    // The server needs a moment to listen.
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let out = Command::new("ip")
            .args([
                "netns", "exec", &w.a, "iperf3", "-c", ADDR_B, "-p", IPERF_PORT, "-J",
            ])
            .args(["-t", &secs.to_string()])
            .output()
            .context("running iperf3 -c")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        last = v["error"].as_str().unwrap_or_default().to_string();
    }
    bail!("iperf3 gave no result: {last}")
}

/// Round-trip times of `DATAGRAMS` single UDP datagrams A -> B -> A, in microseconds.
fn rtt(w: &World) -> Result<Samples> {
    let b = format!("{ADDR_B}:{ECHO_PORT}");
    let server = netns::run_in(Some(&w.path_b()), move || UdpSocket::bind(b))??;
    let client = netns::run_in(Some(&w.path_a()), || UdpSocket::bind("0.0.0.0:0"))??;
    server.set_read_timeout(Some(Duration::from_millis(200)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut idle = 0;
        while idle < 5 {
            match server.recv_from(&mut buf) {
                Ok((n, from)) => {
                    idle = 0;
                    let _ = server.send_to(&buf[..n], from);
                }
                Err(_) => idle += 1,
            }
        }
    });
    let mut s = Samples::default();
    let mut buf = [0u8; 64];
    let to = format!("{ADDR_B}:{ECHO_PORT}");
    for i in 0..DATAGRAMS {
        let t = Instant::now();
        client.send_to(&(i as u64).to_le_bytes(), &to)?;
        client
            .recv_from(&mut buf)
            .with_context(|| format!("datagram {i} got no echo within 1 s"))?;
        s.0.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = echo.join();
    Ok(s)
}

/// Measures the data path as it is now, labelled `what`.
pub fn measure(w: &World, what: &str, secs: u32) -> Result<Cost> {
    Ok(Cost {
        what: what.to_string(),
        tcp_gbit: iperf(w, secs)?,
        rtt_us: rtt(w)?,
    })
}
