//! terraform/modules/kubernetes against the chart it installs. Its providers (helm,
//! kubernetes, tls) cannot be downloaded here, so the module is parsed with python-hcl2
//! (`terraform/validate.sh parse`), and its variables.tf alone, which needs no provider, is
//! planned by the real terraform with values at and beyond each of the chart's limits.

use std::process::Command;

use serde_json::{json, Value};

use super::env::{repo, Terraform};

/// The module's *.tf files as JSON (python-hcl2).
pub fn parsed() -> Value {
    parse("terraform/modules/kubernetes")
}

/// The *.tf files of `rel` (a directory of the repository) as JSON (python-hcl2).
pub fn parse(rel: &str) -> Value {
    let out = Command::new("bash")
        .arg(repo().join("terraform/validate.sh"))
        .arg("parse")
        .arg(repo().join(rel))
        .output()
        .expect("run terraform/validate.sh parse");
    assert!(
        out.status.success(),
        "terraform/validate.sh parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hcl2 JSON")
}

pub fn schema() -> Value {
    let p = repo().join("daemonset/chart/faultline/values.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("values.schema.json")).expect("JSON")
}

/// The node of `schema` at `path` (object keys; "*" for array items), following properties,
/// additionalProperties and items.
pub fn schema_at<'a>(schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut node = schema;
    for key in path {
        node = if *key == "*" {
            node.get("items")?
        } else if let Some(p) = node.get("properties").and_then(|p| p.get(*key)) {
            p
        } else {
            match node.get("additionalProperties") {
                Some(extra @ Value::Object(_)) => extra,
                _ => return None,
            }
        };
    }
    Some(node)
}

/// Leaf paths of an object literal (arrays and interpolations are leaves).
pub fn leaves(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        other => out.push((prefix.clone(), other.clone())),
    }
}

/// `locals { chart_values = ... }` of main.tf.
pub fn chart_values(module: &Value) -> Value {
    module["main.tf"]["locals"]
        .as_array()
        .expect("locals blocks")
        .iter()
        .find_map(|l| l.get("chart_values").cloned())
        .map(|v| match v {
            // python-hcl2 may wrap an attribute's value in a one-element list.
            Value::Array(mut a) if a.len() == 1 => a.remove(0),
            v => v,
        })
        .expect("locals.chart_values in main.tf")
}

/// The variable names variables.tf declares.
pub fn variables(module: &Value) -> Vec<String> {
    module["variables.tf"]["variable"]
        .as_array()
        .expect("variable blocks")
        .iter()
        .filter_map(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
        .collect()
}

// ---- Planning variables.tf -----------------------------------------------------------------

/// A root module of variables.tf alone (no provider), initialised once.
pub struct VariablesOnly {
    tf: Terraform,
    _dir: tempfile::TempDir,
}

impl VariablesOnly {
    pub fn new() -> VariablesOnly {
        let dir = tempfile::tempdir().expect("tempdir");
        let tf = Terraform::new(dir.path());
        std::fs::copy(
            repo().join("terraform/modules/kubernetes/variables.tf"),
            dir.path().join("variables.tf"),
        )
        .expect("copy variables.tf");
        tf.ok(&["init", "-input=false", "-no-color"]);
        VariablesOnly { tf, _dir: dir }
    }

    /// Plans with `vars` (JSON, merged over the one required variable); Err(output) when a
    /// validation refuses.
    pub fn plan(&self, vars: &Value) -> Result<(), String> {
        let mut all = json!({ "image": { "repository": "registry.example.com/faultline" } });
        merge(&mut all, vars);
        let file = self.tf.dir.join("probe.tfvars.json");
        std::fs::write(&file, all.to_string()).expect("tfvars");
        let (ok, out, _) = self.tf.run(&[
            "plan",
            "-input=false",
            "-no-color",
            "-var-file=probe.tfvars.json",
        ]);
        if ok {
            Ok(())
        } else {
            assert!(
                out.contains("Invalid value for variable"),
                "terraform plan failed for another reason:\n{out}"
            );
            Err(out)
        }
    }
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// `{"a": {"b": value}}` from "a.b"; a final "[0]" makes a one-element list.
pub fn nested(path: &str, value: Value) -> Value {
    let mut v = value;
    for key in path.rsplit('.') {
        v = match key.strip_suffix("[0]") {
            Some(k) => json!({ k: [v] }),
            None => json!({ key: v }),
        };
    }
    v
}

// ---- The table: each variable against its chart value's schema ------------------------------

/// A variable (dotted path into the tfvars) and the schema path of the chart value it becomes;
/// `msg` starts the variable's error message.
pub struct Row {
    pub var: &'static str,
    pub schema: &'static [&'static str],
    pub msg: &'static str,
}

const fn row(var: &'static str, schema: &'static [&'static str], msg: &'static str) -> Row {
    Row { var, schema, msg }
}

/// Numbers with a schema minimum and maximum.
pub const RANGES: &[Row] = &[
    row(
        "coordinator_ports.grpc",
        &["coordinator", "grpcPort"],
        "coordinator_ports:",
    ),
    row(
        "coordinator_ports.metrics",
        &["coordinator", "metricsPort"],
        "coordinator_ports:",
    ),
    row(
        "coordinator_ports.enroll",
        &["coordinator", "enrollPort"],
        "coordinator_ports:",
    ),
    row(
        "policy.max_fleet_percent_under_fault",
        &["coordinator", "policy", "maxFleetPercentUnderFault"],
        "policy.max_fleet_percent_under_fault:",
    ),
    row(
        "policy.max_concurrent_experiments",
        &["coordinator", "policy", "maxConcurrentExperiments"],
        "policy.max_concurrent_experiments:",
    ),
    row(
        "policy.max_pod_percent_per_namespace",
        &["coordinator", "policy", "maxPodPercentPerNamespace"],
        "policy.max_pod_percent_per_namespace:",
    ),
    row(
        "agent.metrics_port",
        &["agent", "metricsPort"],
        "agent.metrics_port:",
    ),
    row(
        "agent.token_expiration_seconds",
        &["agent", "tokenExpirationSeconds"],
        "agent.token_expiration_seconds:",
    ),
    row(
        "agent.termination_grace_period_seconds",
        &["agent", "terminationGracePeriodSeconds"],
        "agent.termination_grace_period_seconds:",
    ),
    row(
        "agent.priority",
        &["agent", "priorityClass", "value"],
        "agent.priority:",
    ),
    row(
        "agent_limits.max_concurrent_faults",
        &["agent", "limits", "maxConcurrentFaults"],
        "agent_limits.max_concurrent_faults:",
    ),
];

/// Strings with a schema enum.
pub const ENUMS: &[Row] = &[
    row(
        "image.pull_policy",
        &["image", "pullPolicy"],
        "image.pull_policy:",
    ),
    row(
        "coordinator_service_type",
        &["coordinator", "service", "type"],
        "coordinator_service_type:",
    ),
];

/// Strings with a schema pattern (or anyOf), and samples on both sides of it; `stricter` are
/// samples the schema lets through and the module refuses on purpose.
pub struct Patterned {
    pub row: Row,
    pub samples: &'static [&'static str],
    pub stricter: &'static [&'static str],
}

pub const PATTERNS: &[Patterned] = &[
    Patterned {
        row: row("image.tag", &["image", "tag"], "image.tag:"),
        samples: &[
            "",
            "v1.2.3",
            "latest",
            "_x",
            ".x",
            "-x",
            "a b",
            "0.1.0-rc.1",
        ],
        stricter: &[],
    },
    Patterned {
        row: row("image.digest", &["image", "digest"], "image.digest:"),
        samples: &[
            "",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "md5:0123",
        ],
        stricter: &[],
    },
    Patterned {
        row: row(
            "agent_cert_ttl",
            &["coordinator", "agentCertTTL"],
            "agent_cert_ttl:",
        ),
        samples: &["24h", "1d12h", "30m", "90s", "24", "1w", "h", "1.5h"],
        stricter: &[],
    },
    Patterned {
        row: row(
            "policy.max_duration",
            &["coordinator", "policy", "maxDuration"],
            "policy.max_duration:",
        ),
        samples: &["1h", "500ms", "1h30m", "7d", "1w", "", "10", "1us"],
        stricter: &[],
    },
    Patterned {
        row: row(
            "agent_limits.max_duration",
            &["agent", "limits", "maxDuration"],
            "agent_limits.max_duration:",
        ),
        samples: &["1h", "500ms", "2h30m", "1w", "", "10"],
        stricter: &[],
    },
    Patterned {
        row: row(
            "agent.state_dir",
            &["agent", "stateDir"],
            "agent.state_dir:",
        ),
        samples: &["/var/lib/faultline", "/", "var/lib", "/x", ""],
        stricter: &[],
    },
    Patterned {
        row: row(
            "coordinator_persistence.size",
            &["coordinator", "persistence", "size"],
            "coordinator_persistence.size:",
        ),
        samples: &["1Gi", "100m", "1.5Gi", "1", "1GB", "Gi", ""],
        stricter: &[],
    },
    Patterned {
        row: row(
            "monitoring.interval",
            &["monitoring", "interval"],
            "monitoring.interval:",
        ),
        samples: &["15s", "1m30s", "500ms", "15", "1d"],
        stricter: &[],
    },
    Patterned {
        row: row(
            "cert_manager.duration",
            &["tls", "certManager", "duration"],
            "cert_manager:",
        ),
        samples: &["2160h", "1h30m", "1.5h", "90d", "h", "100us"],
        stricter: &[],
    },
    Patterned {
        row: row(
            "policy.protected_namespaces[0]",
            &["coordinator", "policy", "protectedNamespaces", "*"],
            "policy.protected_namespaces:",
        ),
        samples: &[
            "kube-system",
            "a",
            "-a",
            "a-",
            "Kube",
            "a23456789012345678901234567890123456789012345678901234567890123",
            "a234567890123456789012345678901234567890123456789012345678901234",
        ],
        stricter: &[],
    },
    Patterned {
        row: row(
            "agent_limits.io_paths[0]",
            &["agent", "limits", "ioPaths", "*"],
            "agent_limits.io_paths:",
        ),
        samples: &["/var/tmp", "/", "tmp", "/a/../etc"],
        // The schema's description forbids '..' but its pattern cannot; the module can.
        stricter: &["/a/../etc"],
    },
    Patterned {
        row: row(
            "agent.max_unavailable",
            &["agent", "maxUnavailable"],
            "agent.max_unavailable:",
        ),
        samples: &["1", "3", "10%", "0", "100%", "1000%", "x", "1.5"],
        stricter: &[],
    },
];

/// What the module hands the chart for a sample: agent.max_unavailable becomes a number
/// unless it is a percentage (main.tf); everything else is the string itself.
pub fn chart_form(var: &str, sample: &str) -> Value {
    if var == "agent.max_unavailable" && !sample.ends_with('%') {
        if let Ok(n) = sample.parse::<i64>() {
            return json!(n);
        }
        if let Ok(f) = sample.parse::<f64>() {
            return json!(f);
        }
    }
    json!(sample)
}

/// Whether the schema node accepts `v` (the keywords values.schema.json uses on leaves).
pub fn schema_accepts(node: &Value, v: &Value) -> bool {
    if let Some(any) = node.get("anyOf").and_then(Value::as_array) {
        return any.iter().any(|b| schema_accepts(b, v));
    }
    if let Some(e) = node.get("enum").and_then(Value::as_array) {
        return e.contains(v);
    }
    match node.get("type").and_then(Value::as_str) {
        Some("string") if !v.is_string() => return false,
        Some("integer") if !(v.is_i64() || v.is_u64()) => return false,
        Some("number") if !v.is_number() => return false,
        _ => {}
    }
    if let (Some(min), Some(x)) = (node.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return false;
        }
    }
    if let (Some(max), Some(x)) = (node.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if x > max {
            return false;
        }
    }
    if let (Some(p), Some(s)) = (node.get("pattern").and_then(Value::as_str), v.as_str()) {
        if !regex::Regex::new(p).expect("schema pattern").is_match(s) {
            return false;
        }
    }
    if let (Some(min), Some(s)) = (node.get("minLength").and_then(Value::as_u64), v.as_str()) {
        if (s.chars().count() as u64) < min {
            return false;
        }
    }
    true
}
