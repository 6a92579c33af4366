//! Which metrics PromQL expressions read, and whether the Rust sources export them.

use std::collections::BTreeSet;
use std::path::Path;

use super::root;

/// Metric names the Rust sources export: every `"faultline_..."` string literal.
fn exported_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for (i, _) in text.match_indices("\"faultline_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if text[i + 1 + name.len()..].starts_with('"') {
                        out.insert(name);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for crate_dir in ["agent/src", "coordinator/src", "proto/src"] {
        walk(&root().join(crate_dir), &mut out);
    }
    assert!(
        out.len() > 20,
        "found only {} metric names in the sources: {out:?}",
        out.len()
    );
    out
}

/// Metrics the dashboard reads from outside Faultline: the kubelet's cAdvisor (agent CPU and
/// memory) and Prometheus' own `up`.
const EXTERNAL_METRICS: [&str; 3] = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "up",
];

const PROMQL_KEYWORDS: [&str; 10] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
];

/// Aggregation operators, which may be followed by `by (...)` before their `(`.
const PROMQL_AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression reads: identifiers outside strings, label matchers,
/// range selectors and grouping lists that are not functions, keywords or numbers.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let skip_to = |from: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut j = from;
        while j < c.len() {
            if c[j] == open {
                depth += 1;
            } else if c[j] == close {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            } else if c[j] == '"' || c[j] == '\'' {
                let q = c[j];
                j += 1;
                while j < c.len() && c[j] != q {
                    j += 1;
                }
            }
            j += 1;
        }
        c.len()
    };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += 1;
            }
            i += 1;
        } else if ch == '{' {
            i = skip_to(i, '{', '}');
        } else if ch == '[' {
            i = skip_to(i, '[', ']');
        } else if ch.is_ascii_digit() || ch == '$' {
            i += 1;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut k = i;
            while k < c.len() && c[k].is_whitespace() {
                k += 1;
            }
            let call = k < c.len() && c[k] == '(';
            if PROMQL_KEYWORDS.contains(&word.as_str()) {
                if call {
                    i = skip_to(k, '(', ')');
                }
            } else if !call
                && !PROMQL_AGGREGATIONS.contains(&word.as_str())
                && !matches!(word.as_str(), "offset" | "inf" | "nan")
            {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// A queried name as the code registers it: histogram series without their suffix.
fn base_name(m: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| m.strip_suffix(s))
        .unwrap_or(m)
}

pub fn check_metrics(what: &str, exprs: &[String]) {
    let exported = exported_metrics();
    let mut unknown = Vec::new();
    for e in exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{what}: no metric found in {e:?}");
        for m in names {
            let known = exported.contains(&m)
                || exported.contains(base_name(&m))
                || EXTERNAL_METRICS.contains(&m.as_str());
            if !known {
                unknown.push(format!("{m} (in {e})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{what} reads metrics the code does not export:\n  {}\nexported: {exported:?}",
        unknown.join("\n  ")
    );
}

#[test]
fn the_metric_name_extraction_reads_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, trigger) (rate(faultline_coordinator_abort_seconds_bucket{job=\"x\"}[$__rate_interval]))) \
         / on() group_left(kind) max(faultline_agent_faults_active offset 5m) > 1e3 unless up",
    );
    let want: BTreeSet<String> = [
        "faultline_coordinator_abort_seconds_bucket",
        "faultline_agent_faults_active",
        "up",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
}
