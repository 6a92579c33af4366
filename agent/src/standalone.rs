//! Standalone mode, for bare-metal hosts and debugging without a coordinator:
//! `faultline-agent run -f FILE` applies the faults of FILE through the same engine and journal
//! as the daemon, prints progress, and reverts them at the end or on Ctrl-C/SIGTERM;
//! `faultline-agent recover` reverts whatever a crashed agent left in the journal and sweeps.
//!
//! Output (stdout, one flushed line per event, so scripts and tests can follow it):
//! `applied <fault-id> <kind> ...`, `failed <fault-id> <kind>: <error>`,
//! `progress ...` every few seconds, `reverted <fault-id> <reason>`, then `summary: ...`.

pub mod docs;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_core::fault::FaultSpec;
use faultline_proto::convert::spec_to_pb;
use faultline_proto::pb;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::engine::limits::human;
use crate::engine::{Driver, Engine, EngineConfig, EngineError, Limits, Recovery};
use crate::faults::{reason_label, FaultManager, RevertReason};
use crate::state_dir::{StateDir, StateDirError};
use crate::telemetry::unix_ms;

/// Default `--duration` of `run`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// How often `run` prints a progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The experiment id standalone faults carry.
pub const EXPERIMENT: &str = "standalone";

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The fault file, as given (`-f`).
    pub file: PathBuf,
    pub duration: Duration,
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub progress_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("-f {path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A fault document is invalid (names the document and the field); nothing was changed.
    #[error("{0}")]
    Faults(String),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl StandaloneError {
    /// 2 for bad input (nothing was changed), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StandaloneError::Read { .. } | StandaloneError::Faults(_) => 2,
            _ => 1,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    /// Faults that failed to apply or stopped working.
    pub failed: usize,
    pub reverted: usize,
    /// Faults whose revert failed: they stay journaled for `faultline-agent recover`.
    pub not_reverted: usize,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.not_reverted == 0
    }
}

/// A duration rounded to whole seconds (`2s`, `1m 30s`, `0s`).
fn whole_seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(((d.as_millis() + 500) / 1000) as u64))
        .to_string()
}

/// Writes one line and flushes it.
fn say(out: &mut impl Write, line: impl AsRef<str>) -> io::Result<()> {
    writeln!(out, "{}", line.as_ref())?;
    out.flush()
}

/// Reads and validates the fault file; errors name the document and the field.
pub fn read_faults(file: &Path) -> Result<Vec<FaultSpec>, StandaloneError> {
    let text = std::fs::read_to_string(file).map_err(|source| StandaloneError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    docs::parse_faults(&file.display().to_string(), &text).map_err(StandaloneError::Faults)
}

fn print_recovery(out: &mut impl Write, rec: &Recovery) -> io::Result<()> {
    if rec.found_nothing() {
        return say(
            out,
            "recovery: nothing found (the journal is empty and the sweep found no orphans)",
        );
    }
    for line in &rec.lines {
        say(out, line)?;
    }
    Ok(())
}

/// `faultline-agent recover`: locks the state dir, reverts every journal entry, sweeps, and
/// prints what it found. Ok(true) when everything was cleaned up.
pub async fn recover(
    state_dir: &Path,
    limits: Limits,
    drivers: Vec<Arc<dyn Driver>>,
    out: &mut impl Write,
) -> Result<bool, StandaloneError> {
    let state = StateDir::open(state_dir)?;
    let engine = Engine::open(
        EngineConfig::new(state.path().join("journal"), limits),
        drivers,
    )?;
    let rec = engine.recover().await;
    print_recovery(out, &rec)?;
    let left = engine.faults().len();
    if left > 0 {
        say(
            out,
            format!("recovery: {left} fault(s) could not be reverted and stay journaled; run recover again once the cause is fixed"),
        )?;
    }
    engine.close().await;
    drop(state);
    Ok(left == 0)
}

struct Runner<'a, W: Write> {
    engine: Engine,
    events: mpsc::Receiver<pb::FaultStatus>,
    kinds: BTreeMap<String, String>,
    outcome: Outcome,
    out: &'a mut W,
    /// Faults already reported reverted (the engine's own deadline and the runner's end can
    /// both report the same revert).
    gone: std::collections::BTreeSet<String>,
}

impl<W: Write> Runner<'_, W> {
    fn kind(&self, id: &str) -> String {
        self.kinds.get(id).cloned().unwrap_or_else(|| "?".into())
    }

    /// Prints an end-of-fault status (from a revert, or unsolicited) and counts it.
    fn ended(&mut self, s: &pb::FaultStatus) -> io::Result<()> {
        let kind = self.kind(&s.fault_id);
        let reason = RevertReason::try_from(s.reason).unwrap_or(RevertReason::Unspecified);
        match pb::FaultState::try_from(s.state) {
            Ok(pb::FaultState::Reverted) => {
                if !self.gone.insert(s.fault_id.clone()) {
                    return Ok(());
                }
                self.outcome.reverted += 1;
                say(
                    self.out,
                    format!("reverted {} {}", s.fault_id, reason_label(reason)),
                )
            }
            // A failed revert carries the revert's reason; the fault stays journaled and is
            // retried (the final count comes from the journal).
            Ok(pb::FaultState::Failed) if reason != RevertReason::Unspecified => say(
                self.out,
                format!("revert-failed {} {kind}: {}", s.fault_id, s.error),
            ),
            _ => {
                self.outcome.failed += 1;
                let mut counters: Vec<String> =
                    s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                counters.sort();
                say(
                    self.out,
                    format!(
                        "failed {} {kind}: {} {}",
                        s.fault_id,
                        s.error,
                        counters.join(" ")
                    )
                    .trim_end(),
                )
            }
        }
    }

    fn drain_events(&mut self) -> io::Result<()> {
        while let Ok(s) = self.events.try_recv() {
            self.ended(&s)?;
        }
        Ok(())
    }

    fn progress(&mut self, elapsed: Duration, remaining: Duration) -> io::Result<()> {
        let faults: Vec<String> = self
            .engine
            .faults()
            .iter()
            .map(|f| {
                let counters: Vec<String> =
                    f.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {} {}", f.fault_id, f.kind, counters.join(" "))
                    .trim_end()
                    .to_string()
            })
            .collect();
        say(
            self.out,
            format!(
                "progress {} elapsed, {} remaining: {}",
                whole_seconds(elapsed),
                whole_seconds(remaining),
                if faults.is_empty() {
                    "no fault active".into()
                } else {
                    faults.join("; ")
                }
            ),
        )
    }

    async fn revert_all(&mut self, reason: RevertReason) -> io::Result<()> {
        let statuses = self.engine.revert_all(reason).await;
        self.drain_events()?;
        for s in &statuses {
            self.ended(s)?;
        }
        Ok(())
    }
}

/// `faultline-agent run`: see the module documentation. `stop` completes with the revert
/// reason when the operator interrupts (Ctrl-C: ABORT, SIGTERM: SHUTDOWN).
pub async fn run<W: Write>(
    opts: &RunOptions,
    drivers: Vec<Arc<dyn Driver>>,
    out: &mut W,
    stop: impl Future<Output = RevertReason>,
) -> Result<Outcome, StandaloneError> {
    let specs = read_faults(&opts.file)?;
    let state = StateDir::open(&opts.state_dir)?;
    let engine = Engine::open(
        EngineConfig::new(state.path().join("journal"), opts.limits.clone()),
        drivers,
    )?;
    let events = engine.take_events().ok_or_else(|| {
        StandaloneError::Output(io::Error::other("the engine's events were already taken"))
    })?;
    let rec = engine.recover().await;
    print_recovery(out, &rec)?;
    let mut r = Runner {
        engine,
        events,
        gone: Default::default(),
        kinds: BTreeMap::new(),
        outcome: Outcome::default(),
        out,
    };
    let started = Instant::now();
    let start_ms = unix_ms(SystemTime::now());
    let deadline_ms = start_ms + opts.duration.as_millis() as i64;
    // Every fault ends together, counted on the monotonic clock from here.
    let t0 = Instant::now();
    say(
        r.out,
        format!(
            "applying {} fault(s) for {}",
            specs.len(),
            human(opts.duration)
        ),
    )?;
    let mut stop = std::pin::pin!(stop);
    let mut interrupted = None;
    for (i, spec) in specs.iter().enumerate() {
        let id = format!("run-{start_ms}-{}", i + 1);
        let kind = spec.kind().as_str().to_string();
        r.kinds.insert(id.clone(), kind.clone());
        let s = r
            .engine
            .apply(pb::ApplyFault {
                fault_id: id.clone(),
                experiment_id: EXPERIMENT.into(),
                spec: Some(spec_to_pb(spec)),
                deadline_unix_ms: deadline_ms,
                remaining_ms: opts.duration.saturating_sub(t0.elapsed()).as_millis() as u64,
                // No session, no lease: the engine does not read it.
                telemetry_sequence: 0,
            })
            .await;
        if s.state == pb::FaultState::Applied as i32 {
            r.outcome.applied += 1;
            say(r.out, format!("applied {id} {kind} ({})", spec.describe()))?;
        } else {
            r.outcome.failed += 1;
            say(r.out, format!("failed {id} {kind}: {}", s.error))?;
            break;
        }
        if let Some(reason) = stop.as_mut().now_or_never() {
            interrupted = Some(reason);
            break;
        }
    }
    let end_reason = if r.outcome.failed > 0 {
        say(r.out, "a fault could not be applied: reverting the others")?;
        RevertReason::Abort
    } else if let Some(reason) = interrupted {
        reason
    } else {
        let end = started + opts.duration;
        let mut tick = tokio::time::interval_at(started + opts.progress_every, opts.progress_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                reason = stop.as_mut() => break reason,
                _ = tokio::time::sleep_until(end) => break RevertReason::Deadline,
                Some(s) = r.events.recv() => r.ended(&s)?,
                _ = tick.tick() => {
                    let now = Instant::now();
                    r.progress(now - started, end.saturating_duration_since(now))?;
                }
            }
        }
    };
    if end_reason != RevertReason::Deadline {
        say(
            r.out,
            format!(
                "stopping early (reason {}): reverting",
                reason_label(end_reason)
            ),
        )?;
    }
    r.revert_all(end_reason).await?;
    r.outcome.not_reverted = r.engine.faults().len();
    let o = r.outcome.clone();
    let mut summary = format!(
        "summary: {} applied, {} reverted, {} failed in {}",
        o.applied,
        o.reverted,
        o.failed,
        human(started.elapsed())
    );
    if o.not_reverted > 0 {
        summary.push_str(&format!(
            "; {} could not be reverted and stay journaled: run `faultline-agent recover --state-dir {}`",
            o.not_reverted,
            opts.state_dir.display()
        ));
    }
    say(r.out, summary)?;
    let Runner { engine, .. } = r;
    engine.close().await;
    drop(state);
    Ok(o)
}
