//! The configuration file: defaults, ranges and errors that name the field.

use super::*;

#[test]
fn example_file_parses() {
    let p = parse_policy(
        r#"
[policy]
max_fleet_percent_under_fault = 25      # 1..=100
max_concurrent_experiments = 3
allowed_fault_kinds = ["network", "cpu", "network"]
max_duration = "30m"
protected_agent_labels = { "tier" = "db" }
protected_namespaces = ["kube-system", "payments", "kube-system"]
max_pod_percent_per_namespace = 25
"#,
    )
    .expect("valid");
    assert_eq!(p.protected_namespaces, ["kube-system", "payments"]);
    assert_eq!(p.max_pod_percent_per_namespace, 25.0);
    assert_eq!(p.max_fleet_percent_under_fault, 25.0);
    assert_eq!(p.max_concurrent_experiments, 3);
    assert_eq!(p.allowed_fault_kinds, vec!["network", "cpu"]);
    assert_eq!(p.max_duration, Duration::from_secs(1800));
    assert_eq!(p.protected_agent_labels.to_string(), "tier=db");
}

#[test]
fn empty_file_is_the_default_policy() {
    assert_eq!(parse_policy("").expect("empty"), Policy::default());
    assert_eq!(
        parse_policy("[policy]\n").expect("empty"),
        Policy::default()
    );
    let d = Policy::default();
    assert_eq!(d.max_fleet_percent_under_fault, 50.0);
    assert_eq!(d.allowed_fault_kinds.len(), FAULT_KINDS.len());
    assert_eq!(
        d.protected_agent_labels.to_string(),
        "faultline.dev/protected=true"
    );
    assert_eq!(d.protected_namespaces, ["kube-system", "faultline"]);
    assert_eq!(d.max_pod_percent_per_namespace, 50.0);
}

#[test]
fn errors_name_the_field_and_range() {
    let cases: &[(&str, &str)] = &[
        (
            "[policy]\nmax_fleet_percent_under_fault = 150\n",
            "policy.max_fleet_percent_under_fault: 150 is outside 1..=100",
        ),
        (
            "[policy]\nmax_fleet_percent_under_fault = 0.5\n",
            "policy.max_fleet_percent_under_fault: 0.5 is outside 1..=100",
        ),
        (
            "[policy]\nmax_concurrent_experiments = 0\n",
            "policy.max_concurrent_experiments: 0 is outside 1..=1000",
        ),
        (
            "[policy]\nmax_concurrent_experiments = -4\n",
            "policy.max_concurrent_experiments: -4 is outside 1..=1000",
        ),
        (
            "[policy]\nmax_pod_percent_per_namespace = 0\n",
            "policy.max_pod_percent_per_namespace: 0 is outside 1..=100",
        ),
        (
            "[policy]\nprotected_namespaces = [\"ok\", \"Not_OK\"]\n",
            "policy.protected_namespaces[1]: \"Not_OK\" is not a namespace name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ),
        (
            "[policy]\nmax_duration = \"8d\"\n",
            "policy.max_duration: 8days is outside the allowed range 1s..=7days",
        ),
        (
            "[policy]\nmax_duration = \"0s\"\n",
            "policy.max_duration: 0s is outside the allowed range 1s..=7days",
        ),
    ];
    for (text, want) in cases {
        let err = parse_policy(text).expect_err(text);
        assert_eq!(err.to_string(), *want, "{text}");
    }
}

#[test]
fn unknown_and_mistyped_fields_are_named_with_their_path() {
    let err = parse_policy("[policy]\nmax_fleet_percent = 10\n").expect_err("unknown");
    let msg = err.to_string();
    assert!(
        msg.starts_with("policy.max_fleet_percent: unknown field `max_fleet_percent`"),
        "{msg}"
    );
    assert!(msg.contains("max_fleet_percent_under_fault"), "{msg}");

    let err = parse_policy("[polcy]\n").expect_err("unknown table");
    assert!(
        err.to_string().starts_with("polcy: unknown field `polcy`"),
        "{err}"
    );

    let err = parse_policy("[policy]\nmax_duration = 5\n").expect_err("type");
    assert!(
        err.to_string()
            .starts_with("policy.max_duration: invalid type"),
        "{err}"
    );

    let err =
        parse_policy("[policy]\nallowed_fault_kinds = [\"cpu\", \"meteor\"]\n").expect_err("kind");
    assert_eq!(
        err.to_string(),
        "policy.allowed_fault_kinds[1]: \"meteor\" is not a fault kind; use any of \
         network, drop, partition, cpu, memory, io, process, disk-fill, io-limit, dns, pod-kill, \
         container-kill"
    );

    let err =
        parse_policy("[policy]\nprotected_agent_labels = { \"-x\" = \"y\" }\n").expect_err("label");
    assert!(
        err.to_string()
            .starts_with("policy.protected_agent_labels: label key \"-x\" is invalid"),
        "{err}"
    );
}

#[test]
fn retention_defaults_and_overrides() {
    let d = parse_config("").expect("empty").retention;
    assert_eq!(d, Retention::default());
    assert_eq!(d.audit_max_age, Duration::from_secs(90 * 24 * 3600));
    assert_eq!(d.audit_max_entries, 1_000_000);
    assert_eq!(d.experiments_max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(d.experiments_max_count, 10_000);
    assert_eq!(d.prune_interval, Duration::from_secs(3600));
    let r = parse_config(
        r#"
[retention]
audit_max_age = "400d"
audit_max_entries = 5000
experiments_max_age = "2h"
experiments_max_count = 3
prune_interval = "10m"
"#,
    )
    .expect("valid")
    .retention;
    assert_eq!(r.audit_max_age, Duration::from_secs(400 * 24 * 3600));
    assert_eq!(r.audit_max_entries, 5000);
    assert_eq!(r.experiments_max_age, Duration::from_secs(7200));
    assert_eq!(r.experiments_max_count, 3);
    assert_eq!(r.prune_interval, Duration::from_secs(600));
}

#[test]
fn retention_errors_name_the_field_and_range() {
    let cases: &[(&str, &str)] = &[
        (
            "[retention]\naudit_max_age = \"1h\"\n",
            "retention.audit_max_age: 1h is outside the allowed range 1day..=10years",
        ),
        (
            "[retention]\naudit_max_entries = 10\n",
            "retention.audit_max_entries: 10 is outside 1000..=100000000",
        ),
        (
            "[retention]\nexperiments_max_age = \"30m\"\n",
            "retention.experiments_max_age: 30m is outside the allowed range 1h..=10years",
        ),
        (
            "[retention]\nexperiments_max_count = 0\n",
            "retention.experiments_max_count: 0 is outside 1..=1000000",
        ),
        (
            "[retention]\nexperiments_max_count = -1\n",
            "retention.experiments_max_count: -1 is outside 1..=1000000",
        ),
        (
            "[retention]\nprune_interval = \"2d\"\n",
            "retention.prune_interval: 2days is outside the allowed range 1m..=1day",
        ),
    ];
    for (text, want) in cases {
        let err = parse_config(text).expect_err(text);
        assert_eq!(err.to_string(), *want, "{text}");
    }
    let err = parse_config("[retention]\naudit_days = 3\n").expect_err("unknown");
    assert!(
        err.to_string()
            .starts_with("retention.audit_days: unknown field `audit_days`"),
        "{err}"
    );
    let err = parse_config("[retention]\nprune_interval = \"soon\"\n").expect_err("syntax");
    assert!(
        err.to_string()
            .starts_with("retention.prune_interval: \"soon\" is not a duration"),
        "{err}"
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.toml");
    std::fs::write(&path, "[policy]\nmax_concurrent_experiments = 5000\n").expect("write");
    let err = load_policy(&path).expect_err("range");
    assert_eq!(
        err.to_string(),
        format!(
            "config file {}: policy.max_concurrent_experiments: 5000 is outside 1..=1000",
            path.display()
        )
    );
    let err = load_policy(&dir.path().join("missing.toml")).expect_err("missing");
    assert!(err.to_string().starts_with("reading config file"), "{err}");
}

// dns (issue 13)
#[test]
fn fault_kinds_are_cores() {
    let core: Vec<&str> = faultline_core::fault::FaultKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        FAULT_KINDS.to_vec(),
        core,
        "FAULT_KINDS must list every FaultKind, in order"
    );
}
