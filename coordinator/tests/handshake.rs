//! The coordinator's handshake cap and timeout (`--max-handshakes`, `--handshake-timeout`) over
//! real TCP and TLS on loopback: silent connections hold the slots, a real client waits (it is
//! not dropped) until they time out, and the metrics show both.

mod common;

use std::time::{Duration, Instant};

use common::http::{http_get, sample};
use common::*;
use faultline_coordinator::{Config, Coordinator};
use faultline_identity::tls::HandshakeLimits;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const IN_FLIGHT: &str = "faultline_coordinator_tls_handshakes_in_flight";
const TIMEOUTS: &str = "faultline_coordinator_tls_handshake_failures_total{reason=\"timeout\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_hold_the_cap_until_the_timeout_and_a_real_client_waits() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder in this test binary");
    let env = Env::new();
    let timeout = Duration::from_secs(1);
    let c = Coordinator::start(
        Config {
            metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
            handshakes: HandshakeLimits {
                max_concurrent: 2,
                timeout,
            },
            ..env.config()
        },
        Some(handle),
    )
    .await
    .expect("start");
    let m = c.metrics_addr().expect("metrics listener");
    let metric =
        |series: &'static str| async move { sample(&http_get(m, "/metrics").await.1, series) };
    assert_eq!(metric(IN_FLIGHT).await, 0.0);
    assert_eq!(metric(TIMEOUTS).await, 0.0);

    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(
            TcpStream::connect(c.grpc_addr())
                .await
                .expect("TCP connect"),
        );
    }
    eventually(Duration::from_secs(3), "both slots held", || async {
        (metric(IN_FLIGHT).await == 2.0).then_some(())
    })
    .await;

    let t = Instant::now();
    let mut viewer = fleet(&env, &c, "viewer").await;
    let waited = t.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(300) && waited < timeout * 3,
        "the client waited {waited:?}; expected about the handshake timeout {timeout:?}"
    );
    assert!(list_agents(&mut viewer).await.is_empty());

    // The silent peers were cut, counted as timeouts, and nothing is in flight any more.
    for mut s in silent {
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("the coordinator closed the silent connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "no bytes for a peer that never spoke TLS");
    }
    assert_eq!(metric(TIMEOUTS).await, 2.0);
    assert_eq!(metric(IN_FLIGHT).await, 0.0);
    c.shutdown().await;
}
