use super::*;

fn err(text: &str) -> String {
    AgentFile::from_toml(text).expect_err(text).to_string()
}

#[test]
fn empty_file_gives_the_defaults() {
    let f = AgentFile::from_toml("").expect("empty");
    assert_eq!(f.limits, Limits::default());
    assert_eq!(f.limits.max_concurrent_faults, 16);
    assert_eq!(f.limits.max_duration, std::time::Duration::from_secs(3600));
    assert_eq!(f.limits.allowed_kinds.len(), FaultKind::ALL.len());
    assert_eq!(
        f.limits.io_paths,
        vec![PathBuf::from("/var/tmp"), PathBuf::from("/tmp")]
    );
    assert_eq!(f.protected.names, DEFAULT_PROTECTED_NAMES);
    assert!(f.protected.pids.is_empty() && f.protected.cgroups.is_empty());
    assert_eq!(f.protected.namespaces, ["kube-system"]);
    assert_eq!(f.protected.pod_logs_dir, PathBuf::from("/var/log/pods"));
    let host = f.host_config();
    assert_eq!(host.protected.namespaces, ["kube-system"]);
    assert_eq!(host.pod_logs_dir, PathBuf::from("/var/log/pods"));
}

#[test]
fn a_full_file_is_read() {
    let f = AgentFile::from_toml(
        r#"
[limits]
allowed_kinds = ["cpu", "memory", "process"]
max_concurrent_faults = 4
max_duration = "30m"
protected_pids = [1234, 99]
protected_names = ["^sshd$", "^postgres"]
protected_cgroups = ["/system.slice/kubelet.service/"]
protected_namespaces = ["kube-system", "faultline", "monitoring"]
pod_logs_dir = "/srv/kubelet/pod-logs/"
io_paths = ["/data/chaos/"]
container_logs_dir = "/srv/kubelet/container-links"
"#,
    )
    .expect("valid");
    assert_eq!(
        f.limits.allowed_kinds,
        [FaultKind::Cpu, FaultKind::Memory, FaultKind::Process]
            .into_iter()
            .collect()
    );
    assert_eq!(f.limits.max_concurrent_faults, 4);
    assert_eq!(f.limits.max_duration, std::time::Duration::from_secs(1800));
    assert_eq!(f.limits.io_paths, vec![PathBuf::from("/data/chaos")]);
    assert_eq!(f.protected.pids, vec![1234, 99]);
    assert_eq!(f.protected.names, vec!["^sshd$", "^postgres"]);
    assert_eq!(f.protected.cgroups, vec!["/system.slice/kubelet.service"]);
    assert_eq!(
        f.protected.namespaces,
        ["kube-system", "faultline", "monitoring"]
    );
    assert_eq!(
        f.host_config().pod_logs_dir,
        PathBuf::from("/srv/kubelet/pod-logs")
    );
    assert_eq!(
        f.host_config().container_logs_dir,
        PathBuf::from("/srv/kubelet/container-links")
    );
    assert_eq!(
        AgentFile::default().host_config().container_logs_dir,
        PathBuf::from("/var/log/containers")
    );
    let off = AgentFile::from_toml("[limits]\nprotected_namespaces = []\n").expect("valid");
    assert!(off.protected.namespaces.is_empty());
}

#[test]
fn errors_name_the_field_and_the_range() {
    let cases: &[(&str, &str)] = &[
        (
            "[limits]\nmax_concurrent_faults = 0",
            "limits.max_concurrent_faults: 0 is outside 1..=1000",
        ),
        (
            "[limits]\nmax_concurrent_faults = 1001",
            "limits.max_concurrent_faults: 1001 is outside 1..=1000",
        ),
        (
            "[limits]\nmax_duration = \"8d\"",
            "limits.max_duration: 8days is outside the allowed range 1s..=7days",
        ),
        (
            "[limits]\nmax_duration = \"500ms\"",
            "limits.max_duration: 500ms is outside the allowed range 1s..=7days",
        ),
        (
            "[limits]\nallowed_kinds = [\"cpu\", \"gpu\"]",
            "limits.allowed_kinds[1]: unknown kind \"gpu\"",
        ),
        (
            "[limits]\nprotected_pids = [0]",
            "limits.protected_pids[0]: 0 is outside 1..=4194304",
        ),
        (
            "[limits]\nprotected_names = [\"^ok$\", \"(unclosed\"]",
            "limits.protected_names[1]: \"(unclosed\" is not a regular expression",
        ),
        (
            "[limits]\nprotected_cgroups = [\"kubepods\"]",
            "limits.protected_cgroups[0]: \"kubepods\" must be an absolute path",
        ),
        (
            "[limits]\nprotected_namespaces = [\"kube-system\", \"Kube_System\"]",
            "limits.protected_namespaces[1]: \"Kube_System\" is not a namespace name (1..=63 of a-z, 0-9, -, starting and ending alphanumeric)",
        ),
        (
            "[limits]\npod_logs_dir = \"var/log/pods\"",
            "limits.pod_logs_dir: \"var/log/pods\" must be an absolute path without '..'",
        ),
        (
            "[limits]\nio_paths = [\"/tmp/../etc\"]",
            "limits.io_paths[0]: \"/tmp/../etc\" must be an absolute path without '..'",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with(&format!("--config <text>: {want}")),
            "{text}: got {got:?}, want {want:?}"
        );
    }
    assert!(err("[limits]\nmax_duration = \"soon\"")
        .starts_with("--config <text>: limits.max_duration: \"soon\" is not a duration"));
}

#[test]
fn unknown_fields_and_bad_toml_are_refused() {
    let got = err("[limits]\nmax_concurent_faults = 3");
    assert!(
        got.contains("unknown field `max_concurent_faults`"),
        "{got}"
    );
    let got = err("[limts]\n");
    assert!(got.contains("unknown field `limts`"), "{got}");
    let got = err("[limits]\nmax_concurrent_faults = \"many\"");
    assert!(got.contains("max_concurrent_faults"), "{got}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let missing = AgentFile::load(&path).expect_err("missing").to_string();
    assert!(
        missing.starts_with(&format!("--config {}: cannot read", path.display())),
        "{missing}"
    );
    std::fs::write(&path, "[limits]\nmax_duration = \"10m\"\n").expect("write");
    let f = AgentFile::load(&path).expect("load");
    assert_eq!(f.limits.max_duration, std::time::Duration::from_secs(600));
}

#[test]
fn network_link_idle_is_read_and_its_range_named() {
    let f = AgentFile::from_toml("").expect("empty");
    assert_eq!(f.network.link_idle, std::time::Duration::from_secs(30));
    let f = AgentFile::from_toml("[network]\nlink_idle = \"2m\"\n").expect("2m");
    assert_eq!(f.network.link_idle, std::time::Duration::from_secs(120));
    assert_eq!(
        err("[network]\nlink_idle = \"10ms\"\n"),
        "--config <text>: network.link_idle: 10ms is outside the allowed range 100ms..=1h"
    );
    let e = err("[network]\nlink_idle = \"soon\"\n");
    assert!(
        e.starts_with("--config <text>: network.link_idle: \"soon\" is not a duration"),
        "{e}"
    );
    let e = err("[network]\nidle = \"1s\"\n");
    assert!(e.contains("unknown field `idle`"), "{e}");
}
