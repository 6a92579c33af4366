//! Traffic between the two ends of a [`Pair`]: a TCP flow whose throughput is sampled, UDP
//! round trips through an echo, and numbered UDP datagrams counted at the far end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{sh, spawn_in, Pair, A_IP, B_IP};

/// A TCP stream A -> B (or B -> A) whose received bytes are counted.
pub struct Flow {
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Flow {
    /// A -> B, to B's `port`.
    pub fn start(pair: &Pair, port: u16) -> Flow {
        Flow::between(&pair.path_a(), &pair.path_b(), B_IP, port)
    }

    /// B -> A, to A's `port` (traffic A's interface receives).
    pub fn start_into_a(pair: &Pair, port: u16) -> Flow {
        Flow::between(&pair.path_b(), &pair.path_a(), A_IP, port)
    }

    fn between(from: &str, to: &str, to_ip: &str, port: u16) -> Flow {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let addr: SocketAddr = format!("{to_ip}:{port}").parse().expect("addr");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (r, s) = (received.clone(), stop.clone());
        let rx = spawn_in(to, move || {
            let l = TcpListener::bind(addr).expect("bind");
            ready_tx.send(()).expect("ready");
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_millis(200))).ok();
            let mut buf = vec![0u8; 1 << 16];
            while !s.load(Ordering::Relaxed) {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        r.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver ready");
        let s = stop.clone();
        let tx = spawn_in(from, move || {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            c.set_write_timeout(Some(Duration::from_millis(200))).ok();
            let buf = vec![0x5au8; 1 << 16];
            while !s.load(Ordering::Relaxed) {
                let _ = c.write(&buf);
            }
        });
        Flow {
            received,
            stop,
            threads: vec![rx, tx],
        }
    }

    /// Received throughput (bits per second) over the next `d`.
    pub fn rate_over(&self, d: Duration) -> f64 {
        let start = self.received.load(Ordering::Relaxed);
        let t = Instant::now();
        std::thread::sleep(d);
        let bytes = self.received.load(Ordering::Relaxed) - start;
        bytes as f64 * 8.0 / t.elapsed().as_secs_f64()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP echo server in B on `port`, stopped when dropped.
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    pub fn start(pair: &Pair, port: u16) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in(&format!("/run/netns/{}", pair.b), move || {
            let sock = std::net::UdpSocket::bind((B_IP, port)).expect("bind echo");
            sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("echo ready");
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Round trip times of `n` UDP probes from A to the echo on B (one at a time, `gap` apart).
pub fn udp_rtts(pair: &Pair, port: u16, n: usize, gap: Duration) -> Vec<Duration> {
    spawn_in(&pair.path_a(), move || {
        let sock = std::net::UdpSocket::bind((A_IP, 0)).expect("bind probe");
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        for seq in 0..n as u64 {
            let sent = Instant::now();
            sock.send_to(&seq.to_be_bytes(), (B_IP, port))
                .expect("send");
            loop {
                match sock.recv(&mut buf) {
                    Ok(8) if buf[..8] == seq.to_be_bytes() => {
                        out.push(sent.elapsed());
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            std::thread::sleep(gap);
        }
        out
    })
    .join()
    .expect("probe thread")
}

pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

pub fn mean_ms(v: &[Duration]) -> f64 {
    v.iter().map(|d| d.as_secs_f64() * 1000.0).sum::<f64>() / v.len() as f64
}

/// Sends `n` numbered UDP datagrams A -> B (paced) and returns how many distinct ones B got.
pub fn udp_delivered(pair: &Pair, port: u16, n: u32) -> u32 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = spawn_in(&format!("/run/netns/{}", pair.b), move || {
        let sock = std::net::UdpSocket::bind((B_IP, port)).expect("bind sink");
        sock.set_read_timeout(Some(Duration::from_millis(1500)))
            .ok();
        ready_tx.send(()).expect("ready");
        let mut seen = vec![false; n as usize];
        let mut buf = [0u8; 64];
        while let Ok(len) = sock.recv(&mut buf) {
            if len >= 4 {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(s) = seen.get_mut(seq) {
                    *s = true;
                }
            }
        }
        seen.iter().filter(|s| **s).count() as u32
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sink ready");
    spawn_in(&pair.path_a(), move || {
        let sock = std::net::UdpSocket::bind((A_IP, 0)).expect("bind sender");
        for seq in 0..n {
            let mut pkt = [0u8; 32];
            pkt[..4].copy_from_slice(&seq.to_be_bytes());
            let _ = sock.send_to(&pkt, (B_IP, port));
            if seq % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .expect("sender");
    rx.join().expect("sink")
}

/// `RcvbufErrors` of UDP in the netns at `path` (datagrams a full socket buffer dropped).
pub fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let snmp = sh(&format!("ip netns exec {ns} cat /proc/net/snmp"));
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .expect("RcvbufErrors")
}
