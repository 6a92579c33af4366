//! The report's steady-state hypothesis, impact and findings sections (Markdown).

use std::time::Duration;

use faultline_core::experiment::impact::fmt_num;

use super::record::ExperimentRecord;

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<u64>) -> String {
    v.map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// `## Steady-state hypothesis`: the verdict and each check before injection and after the
/// revert.
pub fn hypothesis_section(o: &mut String, rec: &ExperimentRecord) {
    let Some(h) = &rec.hypothesis else {
        return;
    };
    let within = humantime::format_duration(Duration::from_millis(h.recovery_within_ms));
    o.push_str("## Steady-state hypothesis\n\n");
    o.push_str(&format!(
        "Verdict: **{}**{}\n\nEvery check must hold before injection and again within recoveryWithin {within} of the last revert.\n\n",
        h.verdict.as_str(),
        if h.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", h.reason)
        }
    ));
    o.push_str("| Check | Type | Before injection | Recovery time | Within | Last after the revert |\n|---|---|---|---|---|---|\n");
    for c in &h.checks {
        let before = if c.before_detail.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}: {}",
                if c.held_before {
                    "held"
                } else {
                    "DID NOT HOLD"
                },
                c.before_detail
            )
        };
        let met = match c.recovery_ms {
            Some(ms) if ms <= h.recovery_within_ms => "yes",
            Some(_) => "NO",
            None if h.recovery_from_unix_ms == 0 => "-",
            None => "NO",
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {met} | {} |\n",
            c.name,
            c.check_type,
            cell(&before),
            ms(c.recovery_ms),
            cell(&c.last_detail)
        ));
    }
    o.push('\n');
}

/// `## Impact`: before / during / after the faults, time to deviation and to recovery.
pub fn impact_section(o: &mut String, rec: &ExperimentRecord) {
    if rec.impact.is_empty() {
        return;
    }
    o.push_str("## Impact\n\n");
    o.push_str("| Name | Source | Type | Before | During (peak) | After | Deviated after | Healthy again after |\n|---|---|---|---|---|---|---|---|\n");
    for i in &rec.impact {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i.name,
            i.source,
            i.kind,
            opt(i.before),
            opt(i.during),
            opt(i.after),
            if i.deviated {
                ms(i.deviation_ms)
            } else {
                "no deviation".into()
            },
            ms(i.recovery_ms)
        ));
    }
    o.push_str("\nDeviation is timed from the first fault applied, recovery from the last revert acknowledged.\n\n");
}

/// `## Findings`: the rule-based sentences, last in the report.
pub fn findings_section(o: &mut String, rec: &ExperimentRecord) {
    if rec.findings.is_empty() {
        return;
    }
    o.push_str("\n## Findings\n\n");
    for f in &rec.findings {
        o.push_str(&format!("- {f}\n"));
    }
}
