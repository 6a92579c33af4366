//! One grammar for every schedule: 5-field cron (`min hour dom month dow`), 6-field cron with
//! seconds first (`sec min hour dom month dow`), `@every <duration>` and the descriptors
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`); and the
//! next fire time after an instant, in a named time zone.
//!
//! # Daylight saving time
//! Wall-clock fields are matched in the schedule's zone. A wall time that does not exist (the
//! clocks jump forward over it) fires once, at the first instant after the jump; a wall time
//! that happens twice (the clocks go back) fires once, at its first occurrence. `@every` is a
//! fixed interval of real time and ignores the zone.

use std::time::Duration;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// Shortest and longest `@every` interval.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
pub const MAX_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead [`Cron::next_after`] looks for a matching day (covers leap days).
const SEARCH_DAYS: i64 = 8 * 366;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cron {
    /// `@every <duration>`: every interval from the schedule's anchor (its creation).
    Every(Duration),
    /// Wall-clock fields.
    Fields(Fields),
}

/// The allowed values of each field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month / day-of-week fields were `*` (or `?`): standard cron matches a day
    /// when both match if either is `*`, and when either matches if both are restricted.
    days_star: bool,
    weekdays_star: bool,
}

/// A schedule expression that does not parse; names the field and its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    pub message: String,
}

fn err(message: impl Into<String>) -> CronError {
    CronError {
        message: message.into(),
    }
}

struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldDef = FieldDef {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldDef = FieldDef {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldDef = FieldDef {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldDef = FieldDef {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldDef = FieldDef {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 0 and 7 are Sunday.
const WEEKDAY: FieldDef = FieldDef {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

const GRAMMAR: &str = "use 5 fields (minute hour day-of-month month day-of-week), 6 fields \
                       (second first), @every <duration> or @hourly, @daily, @weekly, \
                       @monthly, @yearly";

impl Cron {
    /// Parses a schedule expression.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix('@') {
            let (word, arg) = match rest.split_once(char::is_whitespace) {
                Some((w, a)) => (w, a.trim()),
                None => (rest, ""),
            };
            let fields = match word.to_ascii_lowercase().as_str() {
                "every" => return every(arg),
                "hourly" => "0 0 * * * *",
                "daily" | "midnight" => "0 0 0 * * *",
                "weekly" => "0 0 0 * * 0",
                "monthly" => "0 0 0 1 * *",
                "yearly" | "annually" => "0 0 0 1 1 *",
                other => return Err(err(format!("@{other} is not a descriptor; {GRAMMAR}"))),
            };
            if !arg.is_empty() {
                return Err(err(format!("@{word} takes no argument (got {arg:?})")));
            }
            return Cron::parse(fields);
        }
        let parts: Vec<&str> = t.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => return Err(err(format!("has {n} fields; {GRAMMAR}"))),
        };
        let mut weekdays = field(rest[4], &WEEKDAY)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron::Fields(Fields {
            seconds: field(sec, &SECOND)?,
            minutes: field(rest[0], &MINUTE)?,
            hours: field(rest[1], &HOUR)?,
            days: field(rest[2], &DAY)?,
            months: field(rest[3], &MONTH)?,
            weekdays,
            days_star: is_star(rest[2]),
            weekdays_star: is_star(rest[4]),
        }))
    }

    /// The first fire time strictly after `after_ms` (unix ms), in zone `tz`; `anchor_ms`
    /// is where `@every` intervals count from. `None` when the fields never match (e.g.
    /// `0 0 30 2 *`, the 30th of February).
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64, tz: Tz) -> Option<i64> {
        match self {
            Cron::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok()?.max(1);
                let k = if after_ms < anchor_ms {
                    1
                } else {
                    (after_ms - anchor_ms) / step + 1
                };
                Some(anchor_ms + k * step)
            }
            Cron::Fields(f) => f.next_after(after_ms, tz),
        }
    }
}

fn is_star(s: &str) -> bool {
    s == "*" || s == "?"
}

fn every(arg: &str) -> Result<Cron, CronError> {
    if arg.is_empty() {
        return Err(err(
            "@every needs an interval, e.g. @every 30s (1s..=7days)",
        ));
    }
    let d = humantime::parse_duration(arg).map_err(|e| {
        err(format!(
            "@every: {arg:?} is not a duration ({e}); use e.g. 30s, 5m, 1h30m"
        ))
    })?;
    crate::duration::check_range("@every", d, MIN_EVERY, MAX_EVERY)
        .map_err(|e| err(e.to_string()))?;
    if d.subsec_nanos() != 0 {
        return Err(err(format!(
            "@every: {arg:?} is not a whole number of seconds"
        )));
    }
    Ok(Cron::Every(d))
}

/// One field: a comma list of `*`, `N`, `A-B`, each optionally `/STEP`.
fn field(text: &str, def: &FieldDef) -> Result<u64, CronError> {
    let range = || format!("{}..={}", def.min, def.max);
    let mut bits = 0u64;
    for item in text.split(',') {
        let (span, step) = match item.split_once('/') {
            Some((s, st)) => {
                let st: u32 = st.parse().map_err(|_| {
                    err(format!(
                        "{} field {text:?}: step {st:?} is not a whole number",
                        def.name
                    ))
                })?;
                if st == 0 || st > def.max {
                    return Err(err(format!(
                        "{} field {text:?}: step {st} is outside 1..={}",
                        def.name, def.max
                    )));
                }
                (s, st)
            }
            None => (item, 1),
        };
        let (lo, hi) = if is_star(span) {
            (def.min, def.max)
        } else if let Some((a, b)) = span.split_once('-') {
            (value(a, def)?, value(b, def)?)
        } else {
            let v = value(span, def)?;
            // `N/STEP` runs from N to the end of the range.
            (v, if step > 1 { def.max } else { v })
        };
        if lo > hi {
            return Err(err(format!(
                "{} field {text:?}: range {lo}-{hi} runs backwards (allowed {})",
                def.name,
                range()
            )));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, def: &FieldDef) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = def.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if def.name == "month" { 1 } else { 0 });
    }
    let names = if def.names.is_empty() {
        String::new()
    } else {
        format!(
            " or a name ({}-{})",
            def.names[0],
            def.names[def.names.len() - 1]
        )
    };
    let v: u32 = text.parse().map_err(|_| {
        err(format!(
            "{} field: {text:?} is not a number in {}..={}{names}",
            def.name, def.min, def.max
        ))
    })?;
    if v < def.min || v > def.max {
        return Err(err(format!(
            "{} field: {v} is outside {}..={}",
            def.name, def.min, def.max
        )));
    }
    Ok(v)
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, d: NaiveDate) -> bool {
        if !has(self.months, d.month()) {
            return false;
        }
        let dom = has(self.days, d.day());
        let dow = has(self.weekdays, d.weekday().num_days_from_sunday());
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    fn next_after(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        let after = tz.timestamp_millis_opt(after_ms).single()?;
        // Whole seconds strictly after `after`, compared as wall times in the zone.
        let start = after.naive_local().with_nanosecond(0)? + chrono::Duration::seconds(1);
        let mut day = start.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(day) {
                if let Some(t) = self.first_in_day(day, start, after_ms, tz) {
                    return Some(t);
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The first matching wall time on `day` not before `start` whose instant is after
    /// `after_ms`.
    fn first_in_day(
        &self,
        day: NaiveDate,
        start: NaiveDateTime,
        after_ms: i64,
        tz: Tz,
    ) -> Option<i64> {
        for h in (0..24).filter(|h| has(self.hours, *h)) {
            if day == start.date() && h < start.hour() {
                continue;
            }
            for m in (0..60).filter(|m| has(self.minutes, *m)) {
                for s in (0..60).filter(|s| has(self.seconds, *s)) {
                    let wall = day.and_hms_opt(h, m, s)?;
                    if wall < start {
                        continue;
                    }
                    let at = instant(wall, tz)?;
                    if at > after_ms {
                        return Some(at);
                    }
                }
            }
        }
        None
    }
}

/// The instant of a wall time in `tz`: the first of two (clocks went back); for a wall time
/// that does not exist (clocks jumped forward), the first instant after the jump.
fn instant(wall: NaiveDateTime, tz: Tz) -> Option<i64> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis()),
        LocalResult::None => {
            // In a gap: walk forward by the minute to the first wall time that exists (gaps
            // are at most a few hours); its first instant is the end of the jump.
            let mut w = wall;
            for _ in 0..(24 * 60) {
                w += chrono::Duration::minutes(1);
                let w0 = w.with_second(0)?;
                if let Some(t) = tz.from_local_datetime(&w0).earliest() {
                    return Some(t.timestamp_millis());
                }
            }
            None
        }
    }
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn zone(name: &str) -> Result<Tz, CronError> {
    name.trim().parse::<Tz>().map_err(|_| {
        err(format!(
            "{name:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)"
        ))
    })
}

/// `20261207t011500z`: a UTC instant as a name part (a DNS label: lowercase, no colons).
pub fn name_stamp(at_ms: i64) -> String {
    match chrono::Utc.timestamp_millis_opt(at_ms).single() {
        Some(t) => t.format("%Y%m%dt%H%M%Sz").to_string(),
        None => format!("{at_ms}"),
    }
}

/// Length of [`name_stamp`] plus its joining dash.
pub const STAMP_LEN: usize = 17;
