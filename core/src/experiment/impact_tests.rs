//! Impact figures and findings from recorded observations.

use super::*;
use crate::experiment::steady::CheckRecord;

fn p(at: i64, v: f64, healthy: bool) -> Point {
    Point {
        at_unix_ms: at,
        value: Some(v),
        healthy: Some(healthy),
    }
}

fn window() -> Window {
    Window {
        first_applied_unix_ms: 10_000,
        last_reverted_unix_ms: 20_000,
        faults: "drop on node-a".into(),
    }
}

#[test]
fn numbers_read_well() {
    assert_eq!(fmt_num(0.001), "0.001");
    assert_eq!(fmt_num(0.12), "0.12");
    assert_eq!(fmt_num(503.0), "503");
    assert_eq!(fmt_num(0.123456), "0.1235");
    assert_eq!(fmt_num(0.00001), "0");
}

#[test]
fn deviation_peak_and_recovery() {
    let pts = [
        p(9_000, 0.001, true),
        p(10_500, 0.002, true),
        p(13_000, 0.12, false),
        p(15_000, 0.08, false),
        p(21_000, 0.09, false),
        p(24_200, 0.002, true),
        p(25_000, 0.001, true),
    ];
    let i = measure("error-ratio", "guard", "prometheus", &pts, &window());
    assert_eq!(i.before, Some(0.001));
    assert_eq!(i.during, Some(0.12));
    assert_eq!(i.after, Some(0.001));
    assert!(i.deviated);
    assert_eq!(i.deviation_ms, Some(3_000));
    assert_eq!(i.recovery_ms, Some(4_200));
    assert_eq!(
        (i.samples_before, i.samples_during, i.samples_after),
        (1, 3, 3)
    );
    let f = findings(&[i], None, &window());
    assert_eq!(
        f,
        vec!["error-ratio (prometheus guard) rose from 0.001 to 0.12 within 3.0 s of the first fault applied (drop on node-a); healthy again 4.2 s after the revert".to_string()]
    );
}

#[test]
fn steady_values_moves_and_hypothesis() {
    let flat = [
        p(9_000, 200.0, true),
        p(12_000, 200.0, true),
        p(21_000, 200.0, true),
    ];
    let a = measure("health", "check", "http", &flat, &window());
    assert!(!a.deviated && a.deviation_ms.is_none());
    assert_eq!(a.recovery_ms, Some(1_000));
    let moved_pts = [p(9_000, 0.2, true), p(12_000, 0.5, true)];
    let b = measure("cpu", "guard", "telemetry", &moved_pts, &window());
    assert_eq!(b.recovery_ms, None);
    let hyp = Hypothesis {
        verdict: HypothesisVerdict::Passed,
        reason: "every check held".into(),
        recovery_within_ms: 30_000,
        recovery_from_unix_ms: 20_000,
        checks: vec![CheckRecord {
            name: "health".into(),
            check_type: "http".into(),
            description: String::new(),
            held_before: true,
            before_value: Some(200.0),
            before_detail: String::new(),
            recovery_ms: Some(1_000),
            last_detail: String::new(),
        }],
    };
    let f = findings(&[a, b], Some(&hyp), &window());
    assert_eq!(f.len(), 3, "{f:#?}");
    assert_eq!(f[0], "health (http check) stayed healthy and steady (200 before, 200 at the peak); healthy again 1.0 s after the revert; recoveryWithin 30s met");
    assert_eq!(f[1], "cpu (telemetry guard) moved from 0.2 to 0.5 under the faults but stayed within its threshold; not observed after the revert");
    assert_eq!(f[2], "steady-state hypothesis passed: every check held");
    // Same input, same words.
    assert_eq!(
        f,
        findings(
            &[
                measure("health", "check", "http", &flat, &window()),
                measure("cpu", "guard", "telemetry", &moved_pts, &window())
            ],
            Some(&hyp),
            &window()
        )
    );
}

#[test]
fn nothing_applied_says_so() {
    let w = Window::default();
    let i = measure("health", "check", "http", &[p(1, 200.0, true)], &w);
    assert_eq!(i.samples_before, 1);
    let f = findings(&[i], None, &w);
    assert_eq!(
        f,
        vec!["no fault was applied, so nothing was measured under fault".to_string()]
    );
}
