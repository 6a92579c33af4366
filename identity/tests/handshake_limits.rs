//! The handshake cap and timeout, over real TCP and TLS on loopback: connections that never
//! speak TLS hold at most `max_concurrent` slots, each for at most `timeout`; further
//! connections wait unaccepted (their timeout not yet running) and a real client behind them
//! gets in as soon as slots free up.

mod support;

use std::time::{Duration, Instant};

use faultline_identity::tls::{self, HandshakeFailure, HandshakeLimits};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const CAP: usize = 4;
const EXTRA: usize = 2;
const TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_hold_the_cap_until_their_timeout_then_a_real_client_gets_in() {
    let pki = Pki::new();
    let server = Server::start(
        pki.paths("coordinator"),
        HandshakeLimits {
            max_concurrent: CAP,
            timeout: TIMEOUT,
        },
    )
    .await;
    let admin = pki.paths("admin");

    // With free slots a client gets in at once.
    let t = Instant::now();
    tls::connect(&server.url(), &admin, Duration::from_secs(5))
        .await
        .expect("connect with free slots");
    assert!(
        t.elapsed() < TIMEOUT / 2,
        "took {:?} with free slots",
        t.elapsed()
    );

    // CAP + EXTRA connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..CAP + EXTRA {
        silent.push(TcpStream::connect(server.addr).await.expect("TCP connect"));
    }
    let held = Instant::now();
    let deadline = held + Duration::from_secs(2);
    while server.seen.in_flight.lock().expect("lock").last() != Some(&CAP) {
        assert!(
            Instant::now() < deadline,
            "the server never held {CAP} handshakes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // When does the server close each silent connection?
    let locals: Vec<_> = silent
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let closers: Vec<_> = silent
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                let r = s.read(&mut buf).await;
                assert!(
                    !matches!(r, Ok(n) if n > 0),
                    "the server sent bytes to a silent peer"
                );
                held.elapsed()
            })
        })
        .collect();

    // All slots are taken: a real client waits until the first silent ones time out, and is
    // then served (not dropped).
    let t = Instant::now();
    tls::connect(&server.url(), &admin, Duration::from_secs(5))
        .await
        .expect("a real client gets in once slots free up");
    let waited = t.elapsed();
    assert!(
        waited >= TIMEOUT - Duration::from_millis(200) && waited < TIMEOUT * 2,
        "waited {waited:?}; expected about the handshake timeout {TIMEOUT:?}"
    );

    let mut closed = Vec::new();
    for c in closers {
        closed.push(c.await.expect("reader"));
    }
    // The first CAP were accepted at once and cut at the timeout; the EXTRA waited in the
    // backlog, were accepted when slots freed, and got their own full timeout from then.
    for (i, at) in closed.iter().enumerate() {
        let (lo, hi) = if i < CAP {
            (TIMEOUT - Duration::from_millis(100), TIMEOUT * 2)
        } else {
            (TIMEOUT * 2 - Duration::from_millis(300), TIMEOUT * 3)
        };
        assert!(
            *at >= lo && *at < hi,
            "silent connection {i} closed after {at:?}, expected {lo:?}..{hi:?} (all: {closed:?})"
        );
    }

    let in_flight = server.seen.in_flight.lock().expect("lock").clone();
    assert_eq!(
        in_flight.iter().max(),
        Some(&CAP),
        "never above the cap: {in_flight:?}"
    );
    let refusals = server.seen.refusals.lock().expect("lock").clone();
    for local in &locals {
        let r = refusals
            .iter()
            .find(|r| r.remote == *local)
            .unwrap_or_else(|| panic!("no refusal reported for {local}: {refusals:?}"));
        assert_eq!(r.failure, HandshakeFailure::TimedOut(TIMEOUT));
        assert_eq!(
            r.to_string(),
            format!("client {local}: TLS handshake did not finish within 1s")
        );
    }
}
