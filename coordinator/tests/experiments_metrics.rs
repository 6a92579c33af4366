//! The experiment metrics with the Prometheus recorder installed as main.rs does (histogram
//! buckets for `_seconds`): experiments by phase, guard evaluations and breaches, abort latency
//! and dispatch time; `promtool check metrics` accepts the exposition.

mod common;

use std::time::Duration;

use common::agent::TestAgent;
use common::experiments::*;
use common::http::{http_get, promtool_check, sample};
use common::*;
use faultline_coordinator::experiments::SECONDS_BUCKETS;
use faultline_proto::pb;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[tokio::test]
async fn experiment_metrics_follow_a_guard_abort() {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .expect("buckets")
        .install_recorder()
        .expect("the only recorder in this test binary");
    let env = Env::new();
    let c = faultline_coordinator::Coordinator::start(
        faultline_coordinator::Config {
            metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
            ..env.config_with(open_policy())
        },
        Some(handle),
    )
    .await
    .expect("start");
    let m = c.metrics_addr().expect("metrics");
    let before = http_get(m, "/metrics").await.1;
    assert_eq!(
        sample(
            &before,
            "faultline_coordinator_experiments{phase=\"running\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &before,
            "faultline_coordinator_guard_breaches_total{guard_type=\"telemetry\"}"
        ),
        0.0
    );

    let a = TestAgent::connect(&env, &c, "node-a", &[]).await;
    let mut ops = experiments(&env, &c, "operator").await;
    let text = doc(
        "hot",
        "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n  guardInterval: 100ms\n  guards:\n    - {name: cpu, telemetry: {metric: cpu_busy_ratio, above: 0.5}}\n",
    );
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "hot").await;
    let during = http_get(m, "/metrics").await.1;
    assert_eq!(
        sample(
            &during,
            "faultline_coordinator_experiments{phase=\"running\"}"
        ),
        1.0
    );
    a.set_cpu(0.9);
    watch_to_end(&mut ops, "hot", Duration::from_secs(10)).await;

    let text = http_get(m, "/metrics").await.1;
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_experiments{phase=\"running\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_experiments{phase=\"aborted\"}"
        ),
        1.0
    );
    assert!(
        sample(&text, "faultline_coordinator_guard_evaluations_total{guard_type=\"telemetry\",outcome=\"ok\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "faultline_coordinator_guard_evaluations_total{guard_type=\"telemetry\",outcome=\"breached\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_guard_breaches_total{guard_type=\"telemetry\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_abort_seconds_count{trigger=\"guard\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_abort_seconds_bucket{trigger=\"guard\",le=\"+Inf\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "faultline_coordinator_fault_dispatch_seconds_count"),
        1.0
    );
    assert!(
        text.contains("# TYPE faultline_coordinator_abort_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_abort_unacknowledged_total{trigger=\"guard\"}"
        ),
        0.0,
        "every revert was acknowledged"
    );

    // A wedged agent never acknowledges its revert: the abort is counted as unacknowledged and
    // kept out of the latency histogram.
    a.ignore_reverts();
    let text = doc(
        "wedged",
        "  duration: 60s\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 5}]\n",
    );
    create(&mut ops, &text, true).await.expect("started");
    wait_applied(&mut ops, "wedged").await;
    ops.abort(pb::AbortExperimentRequest {
        name: "wedged".into(),
        reason: "test".into(),
    })
    .await
    .expect("abort");
    watch_to_end(&mut ops, "wedged", Duration::from_secs(20)).await;
    let text = http_get(m, "/metrics").await.1;
    assert_eq!(
        sample(
            &text,
            "faultline_coordinator_abort_unacknowledged_total{trigger=\"api\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("faultline_coordinator_abort_seconds_count{trigger=\"api\"}"),
        "an unacknowledged abort has no latency: {text}"
    );
    promtool_check(&text);
    c.shutdown().await;
}
