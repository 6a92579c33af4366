//! `faultline-coordinator`: parses flags, installs logging and the Prometheus recorder, runs
//! the coordinator until SIGTERM/SIGINT, then stops it within a bounded grace period.
#![forbid(unsafe_code)]

mod args;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use faultline_coordinator::experiments::SECONDS_BUCKETS;
use faultline_coordinator::kube::{cabundle, KubeSource};
use faultline_coordinator::{Coordinator, PodAccess};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use args::{Args, LogFormat};

/// How long a graceful stop may take before the process exits anyway.
const GRACE: Duration = Duration::from_secs(10);

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the SIGTERM handler at once (so an early SIGTERM is not fatal) and returns a
/// future that resolves on SIGTERM or SIGINT.
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = match args::to_config(&args) {
        Ok(config) => config,
        Err(message) => return fail(2, &message),
    };
    let enrollment = match args::to_enrollment(&args) {
        Ok(e) => e,
        Err(message) => return fail(2, &message),
    };
    // Histograms (abort latency, dispatch) need buckets to be exposed as histograms.
    let builder = match PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("histogram buckets not installed ({e}); _seconds metrics are summaries");
            PrometheusBuilder::new()
        }
    };
    let handle = match builder.install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!("metrics recorder not installed: {e}; /metrics will be empty");
            None
        }
    };
    let stop = stop_signal();
    let pods = match KubeSource::detect(args.kubeconfig.as_deref())
        .connect()
        .await
    {
        Ok(access) => access,
        Err(e) => return fail(2, &e.to_string()),
    };
    match &pods {
        PodAccess::Cluster(_) => tracing::info!("pod targets resolved through the Kubernetes API"),
        PodAccess::Unavailable(why) => tracing::info!("pod targets are refused: {why}"),
    }
    if args.publish_ca_bundle.is_some() && matches!(pods, PodAccess::Unavailable(_)) {
        return fail(
            2,
            "--publish-ca-bundle needs Kubernetes access: run in a pod, or give --kubeconfig",
        );
    }
    let (lease, data_dir) = (config.lease, config.data_dir.clone());
    let ca_file = config.tls.ca.clone();
    let access = pods.clone();
    let coordinator = match Coordinator::start_full(config, handle, access, enrollment).await {
        Ok(c) => c,
        Err(e) => {
            let code = if e.is_usage() { 2 } else { 1 };
            return fail(code, &faultline_identity::tls::error_chain(&e));
        }
    };
    // Agent pods mount this ConfigMap: the only TLS material they get from the cluster.
    let publisher = match (&pods, args.publish_ca_bundle.clone()) {
        (PodAccess::Cluster(cluster), Some(target)) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let task = cabundle::run(cluster.clone(), target, ca_file, stop.clone());
            Some((stop, tokio::spawn(task)))
        }
        _ => None,
    };
    let metrics = coordinator
        .metrics_addr()
        .map(|a| format!(", metrics on http://{a}/metrics"))
        .unwrap_or_default();
    let enroll = coordinator
        .enroll_addr()
        .map(|a| format!(", enrollment on {a}"))
        .unwrap_or_default();
    tracing::info!(
        data_dir = %data_dir.display(),
        lease = %humantime::format_duration(lease),
        "coordinator listening on {}{metrics}{enroll}",
        coordinator.grpc_addr()
    );
    let signal = stop.await;
    tracing::info!("{signal} received: stopping (grace period {GRACE:?})");
    if let Some((stop, task)) = publisher {
        stop.cancel();
        let _ = task.await;
    }
    if tokio::time::timeout(GRACE, coordinator.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("graceful stop took longer than {GRACE:?}; exiting anyway");
    }
    ExitCode::SUCCESS
}
