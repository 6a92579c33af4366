//! terraform/examples/vms rendered for real (it needs no provider): both cloud-configs are
//! decoded and compared with the files the SSH install applies.

use serde_json::json;

use super::env::{repo, Terraform};

/// `write_files` of a cloud-config: path -> (permissions, decoded content).
fn cloud_init_files(user_data: &str) -> std::collections::BTreeMap<String, (String, String)> {
    use base64::Engine as _;
    use std::io::Write as _;
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    let doc: serde_json::Value = serde_yaml_ng::from_str(user_data).expect("cloud-config YAML");
    let mut out = std::collections::BTreeMap::new();
    for f in doc["write_files"].as_array().expect("write_files") {
        assert_eq!(f["encoding"], "gz+b64", "{f}");
        let gz = base64::engine::general_purpose::STANDARD
            .decode(f["content"].as_str().expect("content"))
            .expect("base64");
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&gz)
            .expect("write");
        let text = child.wait_with_output().expect("gzip -dc");
        assert!(text.status.success(), "gzip -dc of {}", f["path"]);
        out.insert(
            f["path"].as_str().expect("path").to_string(),
            (
                f["permissions"].as_str().unwrap_or("").to_string(),
                String::from_utf8(text.stdout).expect("utf-8"),
            ),
        );
    }
    out
}

pub fn vms_example() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    faultline_identity::pki::init_dir(
        &certs,
        &faultline_identity::pki::InitOptions {
            sans: vec!["coordinator.example.internal".into()],
            agents: vec![],
            days: 1,
            force: false,
        },
    )
    .expect("certs");
    // A copy of the example that uses the modules in place.
    let tf = Terraform::new(&tmp.path().join("tf"));
    let example = repo().join("terraform/examples/vms");
    for f in ["main.tf", "variables.tf", "outputs.tf", "versions.tf"] {
        let text = std::fs::read_to_string(example.join(f)).expect(f).replace(
            "../../modules/",
            &format!("{}/", tf.relative(&repo().join("terraform/modules"))),
        );
        std::fs::write(tf.dir.join(f), text).expect(f);
    }
    let token = format!("0a1b2c.{}", "e".repeat(64));
    std::fs::write(
        tf.dir.join("terraform.tfvars.json"),
        json!({
            "release_url": "https://releases.example.com/faultline/0.1.0",
            "agent_sha256": "a".repeat(64),
            "coordinator_sha256": "c".repeat(64),
            "certs_dir": certs.display().to_string(),
            "join_token": token,
        })
        .to_string(),
    )
    .expect("tfvars");
    tf.ok(&["init", "-input=false", "-no-color"]);
    tf.ok(&["validate", "-no-color"]);
    tf.ok(&["plan", "-input=false", "-no-color"]);
    tf.ok(&["apply", "-input=false", "-auto-approve", "-no-color"]);
    let (out, _) = tf.ok(&["output", "-json"]);
    let outputs: serde_json::Value = serde_json::from_str(&out).expect("outputs");
    assert_eq!(
        outputs["coordinator_url"]["value"],
        "https://coordinator.example.internal:7443"
    );

    let agent = outputs["agent_user_data"]["value"]
        .as_str()
        .expect("agent user-data");
    let files = cloud_init_files(agent);
    let staged = |rel: &str| {
        files
            .get(&format!("/var/tmp/faultline-terraform/{rel}"))
            .unwrap_or_else(|| panic!("no {rel} in {:?}", files.keys()))
            .clone()
    };
    let read = |rel: &str| std::fs::read_to_string(repo().join(rel)).expect(rel);
    // The same files the SSH install applied for real.
    for (rel, src) in [
        ("scripts/install-host.sh", "scripts/install-host.sh"),
        (
            "agent/dist/faultline-agent.service",
            "agent/dist/faultline-agent.service",
        ),
        ("agent/dist/agent.env", "agent/dist/agent.env"),
        ("docs/bare-metal.md", "docs/bare-metal.md"),
        (
            "faultline-host.sh",
            "terraform/modules/host/files/faultline-host.sh",
        ),
        ("ca.pem", "-"),
    ] {
        let (mode, text) = staged(rel);
        assert_eq!(mode, "0600", "{rel}");
        let want = if src == "-" {
            std::fs::read_to_string(certs.join("ca.pem")).expect("ca.pem")
        } else {
            read(src)
        };
        assert_eq!(text, want, "{rel} differs from {src}");
    }
    assert_eq!(staged("join-token").1, format!("{token}\n"));
    let settings = staged("settings.env").1;
    for line in [
        "COORDINATOR='https://coordinator.example.internal:7443'",
        "ENROLL_URL='https://coordinator.example.internal:7444'",
        "NODE_NAME=''",
        "LABELS='env=staging'",
        "WAIT_READY_SECONDS=0",
        "BINARY_URL='https://releases.example.com/faultline/0.1.0/faultline-agent'",
    ] {
        assert!(
            settings.lines().any(|l| l == line),
            "{line} not in:\n{settings}"
        );
    }
    let toml = staged("agent/dist/agent.toml").1;
    assert!(
        toml.contains("max_concurrent_faults = 8")
            && toml.contains("allowed_kinds = [\"network\",\"cpu\",\"memory\",\"process\"]"),
        "{toml}"
    );
    assert!(
        agent.contains("faultline-host.sh' install '/var/tmp/faultline-terraform'"),
        "runcmd runs the install:\n{agent}"
    );
    let gz = outputs["agent_user_data_base64gzip"]["value"]
        .as_str()
        .expect("gzip");
    println!(
        "agent user-data: {} bytes, {} base64-gzip; coordinator user-data: {} bytes",
        agent.len(),
        gz.len(),
        outputs["coordinator_user_data"]["value"]
            .as_str()
            .map_or(0, str::len)
    );

    let coordinator = cloud_init_files(
        outputs["coordinator_user_data"]["value"]
            .as_str()
            .expect("coordinator user-data"),
    );
    let key = &coordinator["/var/tmp/faultline-coordinator-terraform/tls/issuer-key.pem"];
    assert_eq!(
        key.1,
        std::fs::read_to_string(certs.join("ca-key.pem")).expect("ca-key.pem")
    );
    assert_eq!(key.0, "0600");
}
