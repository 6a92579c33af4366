//! `faultctl certs init` run as a user would: files, modes, created/kept, refused input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use faultline_identity::test_util::key_usage;

const BIN: &str = env!("CARGO_BIN_EXE_faultctl");

fn faultctl(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FAULTLINE_CERTS_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

const STEMS: [&str; 7] = [
    "ca",
    "coordinator",
    "admin",
    "operator",
    "viewer",
    "agent-demo-a",
    "agent-demo-b",
];

#[test]
fn writes_the_full_layout_then_keeps_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let d = dir.to_str().expect("utf-8 path");
    let out = faultctl(&["certs", "init", "--dir", d, "--agents", "demo-a,demo-b"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    for stem in STEMS {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        assert_eq!(mode(&cert), 0o644, "{stem}.pem");
        assert_eq!(mode(&key), 0o600, "{stem}-key.pem must be private");
        for file in [&cert, &key] {
            let line = format!("created  {}\n", file.display());
            assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
        }
    }
    assert!(!stdout.contains("kept"), "{stdout}");
    // Only the coordinator may serve; everybody else is a client.
    for stem in &STEMS[1..] {
        let usage = key_usage(&dir.join(format!("{stem}.pem")));
        let want = if *stem == "coordinator" {
            (false, true)
        } else {
            (true, false)
        };
        assert_eq!(usage, want, "{stem}.pem (clientAuth, serverAuth)");
    }
    assert!(
        stdout.contains(&format!("--certs-dir {d}")),
        "usage hint: {stdout}"
    );
    assert!(
        stdout.contains("--node-name demo-a"),
        "usage hint: {stdout}"
    );

    // Second run: everything is kept, nothing changes on disk.
    let ca_before = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
    let out = faultctl(&["certs", "init", "--dir", d, "--agents", "demo-a,demo-b"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(!stdout.contains("created"), "{stdout}");
    for stem in STEMS {
        let line = format!("kept     {}\n", dir.join(format!("{stem}.pem")).display());
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).expect("ca.pem"),
        ca_before
    );

    // Adding an agent creates only its two files, signed by the same CA.
    let out = faultctl(&["certs", "init", "--dir", d, "--agents", "demo-c"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("created").count(), 2, "{stdout}");
    assert!(stdout.contains("agent-demo-c-key.pem"), "{stdout}");
}

#[test]
fn json_output_lists_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().to_str().expect("utf-8 path");
    let out = faultctl(&["-o", "json", "certs", "init", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let files = v["files"].as_array().expect("files array");
    assert_eq!(
        files.len(),
        10,
        "CA, coordinator, admin, operator, viewer: {v}"
    );
    assert!(files
        .iter()
        .all(|f| f["created"] == serde_json::json!(true)));
}

#[test]
fn certs_dir_is_the_default_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("c");
    let out = Command::new(BIN)
        .args(["certs", "init"])
        .env("FAULTLINE_CERTS_DIR", &d)
        .output()
        .expect("run faultctl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.join("admin.pem").exists());
}

#[test]
fn bad_agents_are_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let d = dir.to_str().expect("utf-8 path");
    for bad in ["Bad_Name", "ok,", "dash-"] {
        let out = faultctl(&["certs", "init", "--dir", d, "--agents", bad]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.starts_with("error: --agents: "), "{bad}: {stderr}");
    }
    let out = faultctl(&["certs", "init", "--dir", d, "--agents", "Bad_Name"]);
    assert!(text(&out.stderr).contains("\"Bad_Name\""));
    assert!(!dir.exists(), "nothing may be written for refused input");
}

#[test]
fn bad_days_and_sans_are_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let d = dir.to_str().expect("utf-8 path");
    for days in ["0", "3651", "soon"] {
        let out = faultctl(&["certs", "init", "--dir", d, "--days", days]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--days {days}: {stderr}");
        assert!(stderr.contains("--days"), "{stderr}");
        if days != "soon" {
            assert!(stderr.contains("1..=3650"), "range named: {stderr}");
        }
    }
    let out = faultctl(&["certs", "init", "--dir", d, "--san", "not a host"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--san \"not a host\""), "{stderr}");
    assert!(!dir.exists(), "nothing may be written for refused input");
}

#[test]
fn kubernetes_secrets_carry_exactly_the_mounted_files() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("c");
    let ds = d.to_str().expect("utf-8 path");
    let out = faultctl(&[
        "certs",
        "init",
        "--dir",
        ds,
        "--agents",
        "node-a,node-b",
        "--kubernetes",
        "--namespace",
        "chaos",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs: Vec<serde_json::Value> = yaml
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).expect("YAML document"))
        .collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    // (Secret, key, file it holds): no agent key, whatever --agents made.
    let want = [
        (
            "faultline-coordinator-tls",
            vec![
                ("ca.pem", "ca.pem"),
                ("coordinator-key.pem", "coordinator-key.pem"),
                ("coordinator.pem", "coordinator.pem"),
            ],
        ),
        (
            "faultline-issuer",
            vec![("tls.crt", "ca.pem"), ("tls.key", "ca-key.pem")],
        ),
    ];
    for (doc, (name, files)) in docs.iter().zip(want) {
        assert_eq!(doc["kind"], "Secret");
        assert_eq!(doc["metadata"]["name"], name);
        assert_eq!(doc["metadata"]["namespace"], "chaos");
        let data = doc["data"].as_object().expect("data");
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort();
        let want_keys: Vec<&str> = files.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys, want_keys,
            "{name}: only what the coordinator mounts (never an agent's key or admin)"
        );
        for (key, file) in files {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data[key].as_str().expect("base64 string"))
                .expect("valid base64");
            assert_eq!(
                decoded,
                std::fs::read(d.join(file)).expect("file"),
                "{name}/{key}"
            );
        }
    }
    assert!(!yaml.contains("agent-"), "no agent file: {yaml}");
    let bad = faultctl(&[
        "certs",
        "init",
        "--dir",
        ds,
        "--kubernetes",
        "--namespace",
        "Not_A_Namespace",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--namespace"),
        "{}",
        text(&bad.stderr)
    );
}
