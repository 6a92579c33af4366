//! `faultline-sim bench`: a coordinator child process, N simulated agents, and the figures:
//! fan-out time, abort latency (API and guard breach) over many runs, idle footprint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faultline_identity::pki::{self, InitOptions};
use faultline_identity::tls::{self, CertPaths};
use faultline_proto::pb::{self, experiments_client::ExperimentsClient};
use tonic::transport::Channel;

use crate::agents::{self, Fleet, FleetConfig};
use crate::coordinator::{self, CoordinatorProc};
use crate::stats::{Footprint, SizeFigures};
use crate::SimError;

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub coordinator_bin: PathBuf,
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub idle: Duration,
    /// How long one experiment holds its fault on every agent while the coordinator's
    /// footprint is measured (zero: not measured).
    pub hold: Duration,
    pub keep: bool,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
}

/// Waits for one experiment step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(opts: &BenchOptions) -> Result<Vec<SizeFigures>, SimError> {
    let tmp = tempfile::Builder::new()
        .prefix("faultline-bench.")
        .tempdir()?;
    let certs = tmp.path().join("certs");
    let largest = opts.sizes.iter().copied().max().unwrap_or(0);
    let names: Vec<String> = (0..largest).map(|i| format!("sim-{i:05}")).collect();
    let started = Instant::now();
    pki::init_dir(
        &certs,
        &InitOptions {
            sans: vec![],
            agents: vec![],
            days: 2,
            force: false,
        },
    )?;
    agents::issue_certs(&certs, &names)?;
    eprintln!(
        "issued {} agent certificates in {:.1} s ({})",
        names.len(),
        started.elapsed().as_secs_f64(),
        certs.display()
    );
    let mut all = Vec::new();
    for &n in &opts.sizes {
        let dir = tmp.path().join(format!("n{n}"));
        let mut coord = CoordinatorProc::start(&opts.coordinator_bin, &dir, &certs)?;
        let result = one_size(opts, &mut coord, &certs, &names[..n]).await;
        coord.stop();
        match result {
            Ok(f) => all.push(f),
            Err(e) => {
                return Err(SimError(format!(
                    "{n} agents: {e}\n--- last lines of {} ---\n{}",
                    coord.log.display(),
                    coord.log_tail(30)
                )))
            }
        }
    }
    if opts.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(all)
}

async fn one_size(
    opts: &BenchOptions,
    coord: &mut CoordinatorProc,
    certs: &std::path::Path,
    names: &[String],
) -> Result<SizeFigures, SimError> {
    let n = names.len();
    coord.wait_ready(Duration::from_secs(30)).await?;
    let url = coord.url()?;
    eprintln!(
        "== {n} agents: coordinator pid {} on {}",
        coord.pid, coord.grpc
    );
    let fleet = Fleet::start(FleetConfig {
        url: url.clone(),
        certs_dir: certs.to_path_buf(),
        names: names.to_vec(),
        telemetry_interval: Duration::from_secs(1),
        connect_concurrency: 64,
    });
    let connect_all = fleet.wait_connected(Duration::from_secs(120)).await?;
    eprintln!("   {n} sessions up in {:.2} s", connect_all.as_secs_f64());
    let channel = tls::connect(
        &url,
        &CertPaths::in_dir(certs, "operator"),
        Duration::from_secs(10),
    )
    .await?;
    let mut client = ExperimentsClient::new(channel).max_decoding_message_size(64 << 20);
    let mut figures = SizeFigures {
        agents: n,
        connect_all,
        ..Default::default()
    };
    eprintln!(
        "   idle {:.0} s (after 5 s to settle)",
        opts.idle.as_secs_f64()
    );
    let idle = footprint(coord.pid, &fleet, Duration::from_secs(5), opts.idle).await?;
    eprintln!(
        "   idle {:.0} s: coordinator {:.3} cores, RSS max {} MiB",
        idle.seconds,
        idle.cores,
        idle.rss_max >> 20
    );
    figures.idle = Some(idle);
    if !opts.hold.is_zero() {
        let name = format!("bench-n{n}-hold");
        let result = hold_run(&mut client, &fleet, coord.pid, &name, n, opts.hold).await;
        match result {
            Ok(fp) => figures.hold = Some(fp),
            Err(e) => settle_failed(&mut client, &name, n, Err(e), &mut figures).await,
        }
    }
    for run in 0..opts.runs {
        let name = format!("bench-n{n}-api-{run:02}");
        let result = api_run(&mut client, &fleet, &name, n, &mut figures).await;
        settle_failed(&mut client, &name, n, result, &mut figures).await;
    }
    for run in 0..opts.runs {
        let name = format!("bench-n{n}-guard-{run:02}");
        let result = guard_run(&mut client, &fleet, &name, n, &mut figures).await;
        fleet.set_tripped(false);
        settle_failed(&mut client, &name, n, result, &mut figures).await;
        // Let the calm telemetry reach the coordinator before the next experiment starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.stop().await;
    Ok(figures)
}

/// One API-abort run: Create(start) -> every agent APPLIED, Abort -> every agent REVERTED.
async fn api_run(
    client: &mut ExperimentsClient<Channel>,
    fleet: &Fleet,
    name: &str,
    n: usize,
    figures: &mut SizeFigures,
) -> Result<(), SimError> {
    let (fanout, recorded) = start_and_wait_applied(client, fleet, name, false, n).await?;
    figures.fanout.push(fanout);
    figures.fanout_recorded.push(recorded);
    let id = experiment_id(client, name).await?;
    let sent = Instant::now();
    client
        .abort(pb::AbortExperimentRequest {
            name: name.to_string(),
            reason: "benchmark".into(),
        })
        .await?;
    let acks = fleet
        .shared
        .wait_for(&[&id, name], STEP_TIMEOUT, |a| a.reverted >= n)
        .await?;
    figures.abort_api.push(since(sent, acks.last_reverted));
    let e = wait_ended(client, name, n).await?;
    figures.unacknowledged += e.abort.as_ref().map_or(0, |a| u64::from(a.unacknowledged));
    eprintln!(
        "   {name}: fan-out {:.1} ms, abort {:.1} ms",
        fanout.as_secs_f64() * 1e3,
        figures
            .abort_api
            .last()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    Ok(())
}

/// The coordinator's footprint while one experiment holds a fault on every agent, its guard
/// evaluated every second and never breached; then aborted.
async fn hold_run(
    client: &mut ExperimentsClient<Channel>,
    fleet: &Fleet,
    pid: u32,
    name: &str,
    n: usize,
    window: Duration,
) -> Result<Footprint, SimError> {
    start_and_wait_applied(client, fleet, name, true, n).await?;
    let fp = footprint(pid, fleet, Duration::from_secs(2), window).await?;
    eprintln!(
        "   {name}: holding {:.0} s: coordinator {:.3} cores, RSS max {} MiB, store writes \
         {:.2} MiB/s",
        fp.seconds,
        fp.cores,
        fp.rss_max >> 20,
        fp.written_per_s / (1024.0 * 1024.0)
    );
    client
        .abort(pb::AbortExperimentRequest {
            name: name.to_string(),
            reason: "benchmark".into(),
        })
        .await?;
    wait_ended(client, name, n).await?;
    Ok(fp)
}

/// One guard run: Create(start) -> every agent APPLIED, the simulator trips the telemetry
/// guard -> every agent REVERTED.
async fn guard_run(
    client: &mut ExperimentsClient<Channel>,
    fleet: &Fleet,
    name: &str,
    n: usize,
    figures: &mut SizeFigures,
) -> Result<(), SimError> {
    start_and_wait_applied(client, fleet, name, true, n).await?;
    let id = experiment_id(client, name).await?;
    let tripped = Instant::now();
    fleet.set_tripped(true);
    let acks = fleet
        .shared
        .wait_for(&[&id, name], STEP_TIMEOUT, |a| a.reverted >= n)
        .await;
    fleet.set_tripped(false);
    let acks = acks?;
    let e = wait_ended(client, name, n).await?;
    figures.unacknowledged += e.abort.as_ref().map_or(0, |a| u64::from(a.unacknowledged));
    let recorded = e.abort.as_ref().filter(|a| a.last_revert_ack_unix_ms > 0);
    if let Some(a) = recorded {
        figures
            .breach_recorded
            .push(Duration::from_millis(a.latency_ms));
    }
    let breach = recorded
        .map(|a| a.triggered_unix_ms)
        .filter(|t| *t > 0)
        .or_else(|| {
            e.guard_timeline
                .iter()
                .filter(|s| s.breached)
                .map(|s| s.at_unix_ms)
                .min()
        })
        .ok_or_else(|| {
            SimError(format!(
                "{name}: aborted without a breached guard sample: {}",
                e.verdict_reason
            ))
        })?;
    let latency = acks.last_reverted_unix_ms.saturating_sub(breach).max(0);
    figures
        .breach_to_revert
        .push(Duration::from_millis(latency.unsigned_abs()));
    figures
        .trip_to_revert
        .push(since(tripped, acks.last_reverted));
    eprintln!(
        "   {name}: breach -> all reverts {latency} ms, trip -> all reverts {:.1} ms",
        figures
            .trip_to_revert
            .last()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    Ok(())
}

/// A run that failed is counted, not fatal: its experiment is aborted (best effort), the
/// targets the coordinator never saw reverted are added to the unacknowledged total, and the
/// next run waits for the fleet to be free as usual.
async fn settle_failed(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    n: usize,
    result: Result<(), SimError>,
    figures: &mut SizeFigures,
) {
    let Err(e) = result else { return };
    figures.failed_runs += 1;
    eprintln!("   {name}: FAILED: {e}");
    let _ = client
        .abort(pb::AbortExperimentRequest {
            name: name.to_string(),
            reason: "benchmark run failed".into(),
        })
        .await;
    if let Ok(r) = client
        .get(pb::GetExperimentRequest { name: name.into() })
        .await
    {
        let reverted = r
            .get_ref()
            .targets
            .iter()
            .filter(|t| t.state == pb::FaultState::Reverted as i32)
            .count();
        figures.unacknowledged += n.saturating_sub(reverted) as u64;
    }
}

fn since(start: Instant, end: Option<Instant>) -> Duration {
    end.map_or(Duration::ZERO, |e| e.saturating_duration_since(start))
}

/// The bench experiment: one cpu fault on every simulated agent, optionally with a telemetry
/// guard that the simulator trips.
pub fn document(name: &str, guard: bool) -> String {
    let mut doc = format!(
        "apiVersion: faultline.dev/v1\n\
         kind: Experiment\n\
         metadata: {{name: {name}}}\n\
         spec:\n  \
           duration: 10m\n  \
           targets:\n    \
             agents: {{labels: {{sim: \"true\"}}}}\n    \
             mode: all\n  \
           faults:\n    \
             - {{kind: cpu, load: 10, workers: 1}}\n"
    );
    if guard {
        doc.push_str(
            "  guardInterval: 1s\n  \
             guards:\n    \
               - {name: sim-cpu, telemetry: {metric: cpu_busy_ratio, above: 0.9, for: 0s}}\n",
        );
    }
    doc
}

/// Waits until a dry run of `name` selects all `n` agents: the coordinator has released the
/// previous experiment's targets (bounded by STEP_TIMEOUT).
async fn wait_fleet_free(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    guard: bool,
    n: usize,
) -> Result<(), SimError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let answer = client
            .create(pb::CreateExperimentRequest {
                document: document(name, guard),
                dry_run: true,
                start: false,
            })
            .await;
        let selected = match &answer {
            Ok(r) => r.get_ref().plan.as_ref().map_or(0, |p| p.selected.len()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => 0,
            Err(s) => return Err(SimError::from(s.clone())),
        };
        if selected >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SimError(format!(
                "{name}: the dry run still selects {selected} of {n} agents after \
                 {STEP_TIMEOUT:?}: {:?}",
                answer.err().map(|s| s.message().to_string())
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates and starts `name`; returns (Create sent -> last APPLIED answer, Create sent ->
/// Get shows every target applied).
async fn start_and_wait_applied(
    client: &mut ExperimentsClient<Channel>,
    fleet: &Fleet,
    name: &str,
    guard: bool,
    n: usize,
) -> Result<(Duration, Duration), SimError> {
    wait_fleet_free(client, name, guard, n).await?;
    let sent = Instant::now();
    let r = client
        .create(pb::CreateExperimentRequest {
            document: document(name, guard),
            dry_run: false,
            start: true,
        })
        .await?
        .into_inner();
    let id = r.experiment.map(|e| e.id).unwrap_or_default();
    let acks = fleet
        .shared
        .wait_for(&[&id, name], STEP_TIMEOUT, |a| a.applied >= n)
        .await?;
    let fanout = since(sent, acks.last_applied);
    poll(client, name, |e| {
        e.targets
            .iter()
            .filter(|t| t.state == pb::FaultState::Applied as i32)
            .count()
            >= n
    })
    .await?;
    Ok((fanout, sent.elapsed()))
}

async fn experiment_id(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
) -> Result<String, SimError> {
    Ok(client
        .get(pb::GetExperimentRequest { name: name.into() })
        .await?
        .into_inner()
        .id)
}

/// Waits until the experiment has ended with every target reverted.
async fn wait_ended(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    n: usize,
) -> Result<pb::Experiment, SimError> {
    let e = poll(client, name, |e| {
        let ended = e.phase >= pb::ExperimentPhase::Completed as i32;
        let reverted = e
            .targets
            .iter()
            .filter(|t| t.state == pb::FaultState::Reverted as i32)
            .count();
        // The coordinator completes its abort record once the last acknowledgement is in.
        let recorded = e
            .abort
            .as_ref()
            .is_none_or(|a| a.last_revert_ack_unix_ms > 0 || a.unacknowledged > 0);
        ended && reverted >= n && recorded
    })
    .await?;
    if e.phase != pb::ExperimentPhase::Aborted as i32 {
        return Err(SimError(format!(
            "{name}: expected phase aborted, got {:?}: {}",
            pb::ExperimentPhase::try_from(e.phase),
            e.verdict_reason
        )));
    }
    Ok(e)
}

/// Polls Experiments.Get every 20 ms until `done` holds (bounded by STEP_TIMEOUT).
async fn poll(
    client: &mut ExperimentsClient<Channel>,
    name: &str,
    done: impl Fn(&pb::Experiment) -> bool,
) -> Result<pb::Experiment, SimError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let e = client
            .get(pb::GetExperimentRequest { name: name.into() })
            .await?
            .into_inner();
        if done(&e) {
            return Ok(e);
        }
        if Instant::now() > deadline {
            return Err(SimError(format!(
                "{name}: the coordinator's record did not reach the expected state within \
                 {STEP_TIMEOUT:?} (phase {:?}, {} targets, verdict {:?})",
                pb::ExperimentPhase::try_from(e.phase),
                e.targets.len(),
                e.verdict_reason
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Coordinator CPU, RSS and storage writes over `window`, after `settle`, with every agent
/// sending telemetry each second.
async fn footprint(
    pid: u32,
    fleet: &Fleet,
    settle: Duration,
    window: Duration,
) -> Result<Footprint, SimError> {
    use std::sync::atomic::Ordering;
    tokio::time::sleep(settle).await;
    let ticks = coordinator::clock_ticks();
    let me = std::process::id();
    let first = coordinator::sample(pid)?;
    let me_first = coordinator::sample(me)?;
    let telemetry_first = fleet.shared.telemetry_sent.load(Ordering::Relaxed);
    let mut rss = vec![first.rss_bytes];
    let started = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(coordinator::sample(pid)?.rss_bytes);
    }
    let last = coordinator::sample(pid)?;
    let me_last = coordinator::sample(me)?;
    let telemetry = fleet.shared.telemetry_sent.load(Ordering::Relaxed) - telemetry_first;
    let seconds = last.at.duration_since(first.at).as_secs_f64().max(0.001);
    Ok(Footprint {
        seconds,
        cores: coordinator::cores(&first, &last, ticks),
        rss_avg: rss.iter().sum::<u64>() / rss.len().max(1) as u64,
        rss_max: rss.iter().copied().max().unwrap_or(0),
        written_per_s: last.written_bytes.saturating_sub(first.written_bytes) as f64 / seconds,
        telemetry_per_s: telemetry as f64 / seconds,
        sim_cores: coordinator::cores(&me_first, &me_last, ticks),
    })
}
