//! The record: bounded timeline and log, trimming for streams, telemetry statistics.

use super::*;

fn sample(guard: &str, at: i64, breached: bool) -> Sample {
    Sample {
        guard: guard.into(),
        at_unix_ms: at,
        value: Some(at as f64),
        outcome: if breached { "breached" } else { "ok" }.into(),
        breached,
        error: String::new(),
        detail: String::new(),
        healthy: None,
    }
}

fn record() -> ExperimentRecord {
    ExperimentRecord {
        id: "x".into(),
        name: "x".into(),
        phase: Phase::Running,
        document: String::new(),
        created_by: String::new(),
        created_unix_ms: 0,
        started_unix_ms: 0,
        ended_unix_ms: 0,
        duration_ms: 0,
        guard_interval_ms: 1000,
        on_target_failure: "abort".into(),
        verdict_reason: String::new(),
        plan: PlanRecord::default(),
        guards: ["g1", "g2"]
            .iter()
            .map(|n| GuardInfo {
                name: n.to_string(),
                guard_type: "http".into(),
                description: String::new(),
                on_error: "abort".into(),
            })
            .collect(),
        targets: vec![],
        guard_timeline: VecDeque::new(),
        abort: None,
        telemetry: BTreeMap::new(),
        log: VecDeque::new(),
        gaps: Vec::new(),
        hypothesis: None,
        impact: Vec::new(),
        findings: Vec::new(),
        pod_kills: Vec::new(),
    }
}

#[test]
fn timeline_and_log_are_bounded() {
    let mut r = record();
    for i in 0..(MAX_GUARD_SAMPLES as i64 + 10) {
        r.sample(sample("g1", i, false));
    }
    assert_eq!(r.guard_timeline.len(), MAX_GUARD_SAMPLES);
    assert_eq!(r.guard_timeline.front().map(|s| s.at_unix_ms), Some(10));
    for i in 0..(MAX_LOG + 1) {
        r.log(i as i64, format!("line {i}"));
    }
    assert_eq!(r.log.len(), MAX_LOG);
    assert_eq!(r.log.front().map(|l| l.message.as_str()), Some("line 1"));
}

#[test]
fn trimmed_keeps_each_guards_latest_sample_and_breaches() {
    let mut r = record();
    r.sample(sample("g1", 1, false));
    r.sample(sample("g2", 2, true));
    r.sample(sample("g2", 3, false));
    r.sample(sample("g1", 4, false));
    for i in 0..10 {
        r.log(i, "x");
    }
    let t = r.trimmed(3);
    let kept: Vec<(String, i64)> = t
        .guard_timeline
        .iter()
        .map(|s| (s.guard.clone(), s.at_unix_ms))
        .collect();
    assert_eq!(kept, [("g2".into(), 2), ("g2".into(), 3), ("g1".into(), 4)]);
    assert_eq!(t.log.len(), 3);
    assert_eq!(t.log.front().map(|l| l.at_unix_ms), Some(7));
    let latest: Vec<i64> = r.latest_samples().iter().map(|s| s.at_unix_ms).collect();
    assert_eq!(latest, [4, 3]);
}

#[test]
fn stats_and_telemetry_samples_count_once() {
    let mut s = Stat::default();
    for v in [0.5, 0.1, f64::NAN, 0.9] {
        s.add(v);
    }
    assert_eq!((s.samples, s.min, s.max), (3, 0.1, 0.9));
    assert!((s.avg() - 0.5).abs() < 1e-12);
    let mut t = TelemetrySummary::default();
    assert!(!t.samples_seen(100));
    t.cpu_busy_ratio.add(0.2);
    assert!(t.samples_seen(100));
    assert!(!t.samples_seen(200));
}
