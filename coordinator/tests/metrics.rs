//! `/metrics`, `/healthz` and `/readyz` of an in-process coordinator with the Prometheus
//! recorder installed: the counters move with sessions and refusals, and `promtool check
//! metrics` accepts the exposition.

mod common;

use std::time::Duration;

use common::http::{http_get, promtool_check, sample};
use common::*;
use faultline_coordinator::Config;
use faultline_proto::pb;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::test]
async fn metrics_follow_sessions_and_refusals() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder in this test binary");
    let env = Env::new();
    let c = faultline_coordinator::Coordinator::start(
        Config {
            metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
            renew_interval: Duration::from_millis(200),
            ..env.config()
        },
        Some(handle),
    )
    .await
    .expect("start");
    let m = c.metrics_addr().expect("metrics listener");
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    assert_eq!(http_get(m, "/readyz").await, (200, "ready\n".to_string()));

    let body_before = http_get(m, "/metrics").await.1;
    for name in [
        "faultline_coordinator_agents_connected",
        "faultline_coordinator_sessions_opened_total",
        "faultline_coordinator_sessions_closed_total",
        "faultline_coordinator_lease_renewals_total",
        "faultline_coordinator_auth_refusals_total",
        "faultline_coordinator_tls_handshake_failures_total",
        "faultline_coordinator_tls_handshakes_in_flight",
        "faultline_coordinator_halted",
        "faultline_coordinator_audit_entries_total",
    ] {
        assert!(
            body_before.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{body_before}"
        );
    }
    assert_eq!(
        sample(&body_before, "faultline_coordinator_agents_connected"),
        0.0
    );

    let (_a, _) = agent(&env, &c, "node-a").await;
    let (b, _) = agent(&env, &c, "node-b").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(b);
    let _ = fleet(&env, &c, "viewer")
        .await
        .halt_all(pb::HaltAllRequest::default())
        .await
        .expect_err("refused");
    fleet(&env, &c, "admin")
        .await
        .halt_all(pb::HaltAllRequest::default())
        .await
        .expect("halt");

    let text = eventually(
        Duration::from_secs(3),
        "node-b's session closed",
        || async {
            let text = http_get(m, "/metrics").await.1;
            let closed = "faultline_coordinator_sessions_closed_total{reason=\"disconnect\"}";
            (sample(&text, closed) == 1.0).then_some(text)
        },
    )
    .await;
    assert_eq!(sample(&text, "faultline_coordinator_agents_connected"), 1.0);
    assert_eq!(
        sample(&text, "faultline_coordinator_sessions_opened_total"),
        2.0
    );
    assert!(
        sample(&text, "faultline_coordinator_lease_renewals_total") >= 4.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_auth_refusals_total{reason=\"role\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "faultline_coordinator_halted"), 1.0);
    // Two session opens, one close, one refused and one allowed halt.
    assert_eq!(
        sample(&text, "faultline_coordinator_audit_entries_total"),
        5.0
    );
    promtool_check(&text);

    c.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(m).await.is_err(),
        "the metrics listener is closed after shutdown"
    );
}
