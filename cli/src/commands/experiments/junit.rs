//! `faultctl report --format junit`: the experiment as a JUnit XML test suite for CI test tabs.
//! One test case for the run (fails unless it completed), one per steady-state check (fails
//! unless it held before injection and again within recoveryWithin) and one per guard (fails
//! when it breached); the findings go to `system-out`.

use faultline_proto::pb;

use crate::summary;

fn esc(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

struct Case {
    name: String,
    seconds: f64,
    failure: Option<(String, String)>,
}

fn secs(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// The JUnit XML of `e`.
pub fn render(e: &pb::Experiment) -> String {
    let phase = summary::phase_name(e.phase);
    let ran = if e.started_unix_ms > 0 && e.ended_unix_ms > 0 {
        secs(e.ended_unix_ms - e.started_unix_ms)
    } else {
        0.0
    };
    let mut cases = vec![Case {
        name: "run".into(),
        seconds: ran,
        failure: (phase != "completed")
            .then(|| (format!("experiment {phase}"), e.verdict_reason.clone())),
    }];
    if let Some(h) = &e.hypothesis {
        for c in &h.checks {
            let within = c.recovery_ms.is_some_and(|ms| ms <= h.recovery_within_ms);
            let failure = if !c.held_before {
                Some((
                    "did not hold before injection".to_string(),
                    c.before_detail.clone(),
                ))
            } else if !within && h.verdict != "pending" {
                Some((
                    format!(
                        "did not hold again within recoveryWithin {} ms",
                        h.recovery_within_ms
                    ),
                    c.last_detail.clone(),
                ))
            } else {
                None
            };
            cases.push(Case {
                name: format!("steady-state/{}", c.name),
                seconds: c.recovery_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
                failure,
            });
        }
    }
    for g in &e.guards {
        let breach = e
            .guard_timeline
            .iter()
            .find(|s| s.guard == g.name && s.breached);
        cases.push(Case {
            name: format!("guard/{}", g.name),
            seconds: 0.0,
            failure: breach.map(|s| ("breached".to_string(), s.detail.clone())),
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"faultline\" tests=\"{}\" failures=\"{failures}\">\n",
        cases.len()
    ));
    out.push_str(&format!(
        "  <testsuite name=\"experiment/{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{ran:.3}\">\n",
        esc(&e.name),
        cases.len()
    ));
    for c in &cases {
        let open = format!(
            "    <testcase classname=\"faultline.{}\" name=\"{}\" time=\"{:.3}\"",
            esc(&e.name),
            esc(&c.name),
            c.seconds
        );
        match &c.failure {
            None => out.push_str(&format!("{open}/>\n")),
            Some((message, detail)) => out.push_str(&format!(
                "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(message),
                esc(detail)
            )),
        }
    }
    out.push_str("    <system-out>");
    let mut text = format!("{} {phase}: {}\n", e.name, e.verdict_reason);
    for f in &e.findings {
        text.push_str(&format!("- {f}\n"));
    }
    out.push_str(&esc(&text));
    out.push_str("</system-out>\n  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_checks_and_guards_become_test_cases() {
        let e = pb::Experiment {
            name: "checkout <loss>".into(),
            phase: pb::ExperimentPhase::Completed as i32,
            started_unix_ms: 1_000,
            ended_unix_ms: 11_000,
            verdict_reason: "completed".into(),
            hypothesis: Some(pb::Hypothesis {
                verdict: "failed".into(),
                recovery_within_ms: 5_000,
                checks: vec![
                    pb::SteadyStateCheck {
                        name: "health".into(),
                        held_before: true,
                        recovery_ms: Some(1_200),
                        ..Default::default()
                    },
                    pb::SteadyStateCheck {
                        name: "errors".into(),
                        held_before: true,
                        last_detail: "0.3 above 0.05".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            guards: vec![pb::GuardInfo {
                name: "latency".into(),
                ..Default::default()
            }],
            findings: vec!["errors (prometheus check) rose from 0.01 to 0.3".into()],
            ..Default::default()
        };
        let xml = render(&e);
        assert!(
            xml.contains(
                "<testsuite name=\"experiment/checkout &lt;loss&gt;\" tests=\"4\" failures=\"1\""
            ),
            "{xml}"
        );
        assert!(xml.contains("name=\"run\" time=\"10.000\"/>"), "{xml}");
        assert!(
            xml.contains("name=\"steady-state/health\" time=\"1.200\"/>"),
            "{xml}"
        );
        assert!(xml.contains("name=\"steady-state/errors\" time=\"0.000\">\n      <failure message=\"did not hold again within recoveryWithin 5000 ms\">0.3 above 0.05</failure>"), "{xml}");
        assert!(
            xml.contains("name=\"guard/latency\" time=\"0.000\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("- errors (prometheus check) rose from 0.01 to 0.3"),
            "{xml}"
        );
    }
}
