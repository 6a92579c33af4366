//! Cron grammar, next fire times (UTC and a zone with daylight saving time), errors that name
//! the field and its range, and the catch-up after an outage.

use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;

use super::cron::{zone, Cron};
use super::fires::due;
use super::{parse_schedule, run_name};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    chrono::Utc
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid")
        .timestamp_millis()
}

fn next(expr: &str, after: i64, tz: Tz) -> i64 {
    Cron::parse(expr)
        .expect(expr)
        .next_after(after, 0, tz)
        .expect("fires")
}

fn err(expr: &str) -> String {
    Cron::parse(expr).expect_err(expr).message
}

#[test]
fn five_fields_match_minutes() {
    let t = utc(2026, 3, 10, 12, 7, 30);
    assert_eq!(
        next("*/15 * * * *", t, chrono_tz::UTC),
        utc(2026, 3, 10, 12, 15, 0)
    );
    assert_eq!(
        next("0 3 * * *", t, chrono_tz::UTC),
        utc(2026, 3, 11, 3, 0, 0)
    );
    // Strictly after: a fire time equal to `after` is not the next one.
    let at = utc(2026, 3, 10, 12, 15, 0);
    assert_eq!(
        next("*/15 * * * *", at, chrono_tz::UTC),
        utc(2026, 3, 10, 12, 30, 0)
    );
    // Lists, ranges, names; Monday to Friday at 09:30 (2026-03-14 is a Saturday).
    let sat = utc(2026, 3, 14, 8, 0, 0);
    assert_eq!(
        next("30 9 * * mon-fri", sat, chrono_tz::UTC),
        utc(2026, 3, 16, 9, 30, 0)
    );
    assert_eq!(
        next("0 0 1 jan,jul *", sat, chrono_tz::UTC),
        utc(2026, 7, 1, 0, 0, 0)
    );
    // Day of week 7 is Sunday.
    assert_eq!(
        next("0 12 * * 7", sat, chrono_tz::UTC),
        utc(2026, 3, 15, 12, 0, 0)
    );
    // Both day fields restricted: either matches (the 20th, or the next Monday).
    assert_eq!(
        next("0 0 20 * 1", sat, chrono_tz::UTC),
        utc(2026, 3, 16, 0, 0, 0)
    );
}

#[test]
fn six_fields_have_seconds_first() {
    let t = utc(2026, 3, 10, 12, 7, 31);
    assert_eq!(
        next("*/10 * * * * *", t, chrono_tz::UTC),
        utc(2026, 3, 10, 12, 7, 40)
    );
    assert_eq!(
        next("5 0 * * * *", t, chrono_tz::UTC),
        utc(2026, 3, 10, 13, 0, 5)
    );
}

#[test]
fn descriptors_and_every() {
    let t = utc(2026, 3, 10, 12, 7, 31);
    let z = chrono_tz::UTC;
    assert_eq!(next("@hourly", t, z), utc(2026, 3, 10, 13, 0, 0));
    assert_eq!(next("@daily", t, z), utc(2026, 3, 11, 0, 0, 0));
    assert_eq!(next("@midnight", t, z), utc(2026, 3, 11, 0, 0, 0));
    assert_eq!(next("@weekly", t, z), utc(2026, 3, 15, 0, 0, 0));
    assert_eq!(next("@monthly", t, z), utc(2026, 4, 1, 0, 0, 0));
    assert_eq!(next("@yearly", t, z), utc(2027, 1, 1, 0, 0, 0));
    // @every counts from the anchor, so restarts keep the same phase.
    let every = Cron::parse("@every 30s").expect("every");
    assert_eq!(every, Cron::Every(Duration::from_secs(30)));
    assert_eq!(every.next_after(1_000, 1_000, z), Some(31_000));
    assert_eq!(every.next_after(31_000, 1_000, z), Some(61_000));
    assert_eq!(every.next_after(45_500, 1_000, z), Some(61_000));
    assert_eq!(every.next_after(0, 1_000, z), Some(31_000));
    assert_eq!(
        Cron::parse("@every 1m30s").expect("1m30s"),
        Cron::Every(Duration::from_secs(90))
    );
}

#[test]
fn daylight_saving_time_in_new_york() {
    let ny = zone("America/New_York").expect("zone");
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 does not exist that day: it fires once
    // at the end of the jump (03:00 EDT = 07:00Z).
    let before = utc(2026, 3, 8, 6, 0, 0); // 01:00 EST
    assert_eq!(next("30 2 * * *", before, ny), utc(2026, 3, 8, 7, 0, 0));
    // The day before and after: 02:30 local at -5 and -4 hours.
    assert_eq!(
        next("30 2 * * *", utc(2026, 3, 7, 0, 0, 0), ny),
        utc(2026, 3, 7, 7, 30, 0)
    );
    assert_eq!(
        next("30 2 * * *", utc(2026, 3, 8, 8, 0, 0), ny),
        utc(2026, 3, 9, 6, 30, 0)
    );
    // Every 30 minutes across the jump: 01:30 EST, then 03:00 EDT (02:00 and 02:30 do not
    // exist and collapse into it), then 03:30 EDT; no fire twice.
    let half = |after| next("*/30 * * * *", after, ny);
    let a = half(utc(2026, 3, 8, 6, 15, 0));
    assert_eq!(a, utc(2026, 3, 8, 6, 30, 0));
    let b = half(a);
    assert_eq!(b, utc(2026, 3, 8, 7, 0, 0));
    let c = half(b);
    assert_eq!(c, utc(2026, 3, 8, 7, 30, 0));
    // 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice and fires once, at
    // the first (05:30Z); the next fire is the day after.
    let first = next("30 1 * * *", utc(2026, 11, 1, 4, 0, 0), ny);
    assert_eq!(first, utc(2026, 11, 1, 5, 30, 0));
    assert_eq!(next("30 1 * * *", first, ny), utc(2026, 11, 2, 6, 30, 0));
    // @daily is midnight local time: 04:00Z in summer, 05:00Z in winter.
    assert_eq!(
        next("@daily", utc(2026, 7, 1, 12, 0, 0), ny),
        utc(2026, 7, 2, 4, 0, 0)
    );
    assert_eq!(
        next("@daily", utc(2026, 12, 1, 12, 0, 0), ny),
        utc(2026, 12, 2, 5, 0, 0)
    );
}

#[test]
fn bad_input_names_the_field_and_range() {
    assert_eq!(err("61 * * * *"), "minute field: 61 is outside 0..=59");
    assert_eq!(err("0 24 * * *"), "hour field: 24 is outside 0..=23");
    assert_eq!(err("0 0 0 * *"), "day-of-month field: 0 is outside 1..=31");
    assert_eq!(err("0 0 * 13 *"), "month field: 13 is outside 1..=12");
    assert_eq!(err("0 0 * * 8"), "day-of-week field: 8 is outside 0..=7");
    assert_eq!(err("60 * * * * *"), "second field: 60 is outside 0..=59");
    assert!(err("x * * * *").starts_with("minute field: \"x\" is not a number in 0..=59"));
    assert!(err("0 0 * foo *").contains("or a name (jan-dec)"));
    assert!(err("*/0 * * * *").contains("step 0 is outside 1..=59"));
    assert!(err("5-1 * * * *").contains("range 5-1 runs backwards"));
    assert!(err("* * *").starts_with("has 3 fields; use 5 fields"));
    assert!(err("@often").starts_with("@often is not a descriptor"));
    assert_eq!(
        err("@every 500ms"),
        "@every: 500ms is outside the allowed range 1s..=7days"
    );
    assert!(err("@every soon").starts_with("@every: \"soon\" is not a duration"));
    assert!(err("@every").starts_with("@every needs an interval"));
    assert!(zone("Mars/Olympus")
        .expect_err("zone")
        .message
        .contains("is not an IANA time zone name"));
}

const EXPERIMENT: &str = "    duration: 5s
    targets: {mode: all}
    faults: [{kind: cpu, load: 50}]";

fn schedule(extra: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Schedule\nmetadata: {{name: nightly}}\nspec:\n{extra}\n  experiment:\n{EXPERIMENT}\n"
    )
}

#[test]
fn schedule_documents_validate_with_field_paths() {
    let max = Duration::from_secs(3600);
    let s = parse_schedule(&schedule("  schedule: '@every 5s'"), max).expect("valid");
    assert_eq!(s.history_limit, 10);
    assert_eq!(s.concurrency, super::ConcurrencyPolicy::Forbid);
    assert_eq!(s.time_zone, chrono_tz::UTC);
    let e = |extra: &str| {
        parse_schedule(&schedule(extra), max)
            .expect_err(extra)
            .to_string()
    };
    assert_eq!(
        e("  schedule: '61 * * * *'"),
        "spec.schedule: minute field: 61 is outside 0..=59"
    );
    assert!(e("  schedule: '0 0 30 2 *'").contains("never fires"));
    assert!(e("  schedule: '@daily'\n  timeZone: Nowhere/City").starts_with("spec.timeZone:"));
    assert!(e("  schedule: '@daily'\n  concurrencyPolicy: Sometimes")
        .contains("use Forbid, Allow or Replace"));
    assert_eq!(
        e("  schedule: '@daily'\n  historyLimit: 0"),
        "spec.historyLimit: 0 is outside 1..=1000 (a whole number)"
    );
    assert!(e("  schedule: '@daily'\n  startingDeadline: 0s").starts_with("spec.startingDeadline:"));
    let bad_fault = schedule("  schedule: '@daily'").replace("load: 50", "load: 150");
    let err = parse_schedule(&bad_fault, max)
        .expect_err("load")
        .to_string();
    assert!(err.starts_with("spec.experiment.faults[0].load:"), "{err}");
    assert_eq!(
        run_name("nightly", utc(2026, 12, 7, 1, 15, 0)),
        "nightly-20261207t011500z"
    );
}

#[test]
fn an_outage_runs_the_latest_missed_fire_once_within_the_starting_deadline() {
    let max = Duration::from_secs(3600);
    let doc = schedule("  schedule: '@every 10s'\n  startingDeadline: 5s");
    let s = parse_schedule(&doc, max).expect("valid");
    let anchor = 0;
    // Down from 10 s to 42 s: fires at 10, 20, 30, 40 s were due. 40 s is 2 s late: it runs;
    // the others are recorded as skipped.
    let d = due(&s, 10_000, anchor, 42_000);
    assert_eq!(d.run, Some(40_000));
    assert_eq!(
        d.skipped.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        vec![10_000, 20_000, 30_000]
    );
    assert_eq!(d.next, Some(50_000));
    // 8 s late is beyond startingDeadline 5s: skipped, with the reason.
    let d = due(&s, 10_000, anchor, 58_000);
    assert_eq!(d.run, None);
    let (f, why) = d.skipped.last().expect("skipped");
    assert_eq!(*f, 50_000);
    assert!(why.contains("more than startingDeadline 5s"), "{why}");
    // Not due yet.
    let d = due(&s, 10_000, anchor, 9_000);
    assert_eq!((d.run, d.next), (None, Some(10_000)));
}
