//! Which fire times of a schedule are due at a moment: the one to run, the ones missed (the
//! coordinator was down, or busy) and skipped, and the next one to wait for.

use super::ScheduleSpec;

/// Most missed fire times listed one by one; beyond that they are only counted.
pub const MAX_LISTED_MISSES: usize = 100;

/// The fire times due at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// The latest fire time not after `now`, to run now (within `startingDeadline`).
    pub run: Option<i64>,
    /// Fire times skipped: (fire time, why).
    pub skipped: Vec<(i64, String)>,
    /// Skipped fire times beyond [`MAX_LISTED_MISSES`], only counted.
    pub more_skipped: u64,
    /// The next fire time after `now` (`None`: it never fires again).
    pub next: Option<i64>,
}

/// Fire times from `next_fire_ms` up to `now` (all unix ms): only the latest may run — once,
/// and only if `now` is within `startingDeadline` of it; the earlier ones were missed.
/// `anchor_ms` is where `@every` counts from.
pub fn due(spec: &ScheduleSpec, next_fire_ms: i64, anchor_ms: i64, now: i64) -> Due {
    let mut out = Due::default();
    if now < next_fire_ms {
        out.next = Some(next_fire_ms);
        return out;
    }
    let mut fires = vec![next_fire_ms];
    let mut t = next_fire_ms;
    loop {
        match spec.cron.next_after(t, anchor_ms, spec.time_zone) {
            Some(n) if n <= now => {
                if fires.len() > MAX_LISTED_MISSES {
                    // A long outage under a fast schedule: count the rest, don't list them.
                    out.more_skipped += 1;
                    fires.remove(1);
                }
                fires.push(n);
                t = n;
            }
            next => {
                out.next = next;
                break;
            }
        }
    }
    let latest = fires.pop().unwrap_or(next_fire_ms);
    for f in fires {
        out.skipped.push((
            f,
            "missed: a later fire time was due too (the coordinator was down or busy); only \
             the latest runs"
                .to_string(),
        ));
    }
    let late = now - latest;
    match spec.starting_deadline {
        Some(d) if late > i64::try_from(d.as_millis()).unwrap_or(i64::MAX) => {
            out.skipped.push((
                latest,
                format!(
                    "missed by {} ms, more than startingDeadline {}",
                    late,
                    humantime::format_duration(d)
                ),
            ));
        }
        _ => out.run = Some(latest),
    }
    out
}
