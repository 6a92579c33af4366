//! Retention: how long the audit log and ended experiments are kept, and the pruning that
//! enforces it — at start and every `prune_interval`, as requests to the store thread (never
//! on the async threads), in chunks so that other writers wait for one chunk at most.
//!
//! Running and pending experiments are never pruned, nor one whose run is still waiting for
//! its revert acknowledgements; the store thread checks the stored phase again before it
//! removes a record.

use std::time::Duration;

use super::{StoreError, StoreHandle};
use crate::experiments::Table;
use crate::metrics;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// Ten years of 365.25 days (what humantime calls `10years`).
const TEN_YEARS: Duration = Duration::from_secs(315_576_000);

/// How much history the store keeps. The defaults are in [`Retention::default`]; the ranges
/// in the `*_RANGE` constants (the config file is checked against them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Audit entries older than this are removed.
    pub audit_max_age: Duration,
    /// Beyond this many audit entries, the oldest are removed.
    pub audit_max_entries: u64,
    /// Ended experiments (completed, aborted, failed, interrupted) that ended longer ago than
    /// this are removed.
    pub experiments_max_age: Duration,
    /// Beyond this many ended experiments, those that ended first are removed.
    pub experiments_max_count: u64,
    /// How often pruning runs (it also runs at start).
    pub prune_interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_max_age: 90 * DAY,
            audit_max_entries: 1_000_000,
            experiments_max_age: 30 * DAY,
            experiments_max_count: 10_000,
            prune_interval: Duration::from_secs(3600),
        }
    }
}

pub const AUDIT_MAX_AGE_RANGE: (Duration, Duration) = (DAY, TEN_YEARS);
pub const AUDIT_MAX_ENTRIES_RANGE: (u64, u64) = (1_000, 100_000_000);
pub const EXPERIMENTS_MAX_AGE_RANGE: (Duration, Duration) = (Duration::from_secs(3600), TEN_YEARS);
pub const EXPERIMENTS_MAX_COUNT_RANGE: (u64, u64) = (1, 1_000_000);
pub const PRUNE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(24 * 3600));

/// Audit entries removed per request to the store thread.
pub const PRUNE_CHUNK: usize = 10_000;

/// What one pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub audit_entries: u64,
    pub experiments: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Removes what `retention` no longer keeps, as of `now_unix_ms`; counts it in
/// `faultline_coordinator_store_pruned_total`.
pub async fn prune(
    store: &StoreHandle,
    experiments: &Table,
    retention: &Retention,
    now_unix_ms: i64,
) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    let before = now_unix_ms.saturating_sub(ms(retention.audit_max_age));
    let keep = retention.audit_max_entries;
    loop {
        let n = store
            .write("audit pruning", move |s| {
                s.prune_audit(before, keep, PRUNE_CHUNK)
            })
            .await?;
        pruned.audit_entries += n;
        if n < PRUNE_CHUNK as u64 {
            break;
        }
    }
    let ended_before = now_unix_ms.saturating_sub(ms(retention.experiments_max_age));
    let names = experiments.prunable(ended_before, retention.experiments_max_count);
    for chunk in names.chunks(256) {
        let chunk = chunk.to_vec();
        let removed = store
            .write("experiment pruning", move |s| {
                let mut removed = Vec::new();
                for name in chunk {
                    // Only an ended experiment goes, whatever the caller believed.
                    let ended = s.experiment(&name)?.is_some_and(|r| r.phase.is_terminal());
                    if ended && s.remove_experiment(&name)? {
                        removed.push(name);
                    }
                }
                Ok(removed)
            })
            .await?;
        experiments.forget(&removed);
        pruned.experiments += removed.len() as u64;
    }
    metrics::store_pruned(pruned.audit_entries, pruned.experiments);
    Ok(pruned)
}
