//! A whole bare-metal installation by Terraform alone: terraform/modules/coordinator-host puts
//! the coordinator on a host (an sshd in a network namespace), terraform/modules/host puts an
//! agent beside it that enrolls there with a join token, and destroying both leaves nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use faultline_identity::pki::{self, InitOptions};
use faultline_tests::binary;
use faultline_tests::procs::run;
use faultline_tests::stack::workers_of;
use serde_json::json;

use super::env::{repo, Netns, Sshd, Terraform};

/// Lines the provisioners printed on the host.
fn remote(out: &str) -> String {
    out.lines()
        .filter_map(|l| l.split_once("(remote-exec): ").map(|(_, r)| r))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(files_below(&e.path()));
            }
        }
    }
    out
}

fn root_module(tf: &Terraform, module: &str, inputs: serde_json::Value) {
    let mut m = inputs;
    m["source"] = json!(tf.relative(&repo().join("terraform/modules").join(module)));
    let doc = json!({ "module": { "it": m } });
    std::fs::write(tf.dir.join("main.tf.json"), doc.to_string()).expect("main.tf.json");
}

pub fn coordinator_and_agent_by_terraform_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ns = Netns::create();
    let sshd = Sshd::start(&ns, dir);
    let certs = dir.join("certs");
    pki::init_dir(
        &certs,
        &InitOptions {
            sans: vec![ns.ns_ip.to_string()],
            agents: vec![],
            days: 1,
            force: false,
        },
    )
    .expect("certs");
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).expect(f);
    let prefix = dir.join("root");
    // remote-exec's scripts go here, not to /tmp: Terraform leaves each one behind, emptied.
    let scripts = dir.join("remote-exec");
    std::fs::create_dir(&scripts).expect("remote-exec dir");
    let ssh = json!({
        "user": "root",
        "host_key": sshd.host_key_pub,
        "timeout": "30s",
        "script_path": format!("{}/tf_%RAND%.sh", scripts.display()),
    });
    let common = |staging: &str| {
        json!({
            "ssh": ssh,
            "ssh_private_key": sshd.client_key,
            "install_prefix": prefix.display().to_string(),
            "staging_dir": dir.join(staging).display().to_string(),
        })
    };

    // The coordinator, on the default ports inside the namespace.
    let tf_c = Terraform::new(&dir.join("tf-coordinator"));
    let mut c = common("staging-c");
    c["host"] = json!({ "address": ns.ns_ip.to_string(), "port": sshd.addr.port() });
    c["coordinator_binary_path"] = json!(binary("faultline-coordinator").display().to_string());
    c["faultctl_binary_path"] = json!(binary("faultctl").display().to_string());
    c["tls"] = json!({
        "ca_pem": read("ca.pem"),
        "cert_pem": read("coordinator.pem"),
        "key_pem": read("coordinator-key.pem"),
    });
    c["issuer"] = json!({ "cert_pem": read("ca.pem"), "key_pem": read("ca-key.pem") });
    c["policy"] = json!({ "max_fleet_percent_under_fault": 100 });
    root_module(&tf_c, "coordinator-host", c);
    tf_c.ok(&["init", "-input=false", "-no-color"]);
    tf_c.ok(&["validate", "-no-color"]);
    let (out, took) = tf_c.ok(&["apply", "-input=false", "-auto-approve", "-no-color"]);
    let out = remote(&out);
    println!("coordinator-host apply: {took:.1?}\n{out}");
    assert!(out.contains("install_mode process"), "{out}");
    assert!(out.contains("the coordinator is ready"), "{out}");

    // It runs as the prefix's user faultline, not root, and its store is closed to others.
    let pid: u32 = std::fs::read_to_string(prefix.join("run/faultline-coordinator.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let passwd = std::fs::read_to_string(prefix.join("etc/passwd")).expect("prefix passwd");
    let uid: u32 = passwd
        .lines()
        .find(|l| l.starts_with("faultline:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no user faultline in {passwd}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let real_uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("Uid");
    assert_eq!(
        real_uid,
        uid.to_string(),
        "the coordinator runs as faultline"
    );
    assert!(
        status.contains("CapEff:\t0000000000000000"),
        "no capabilities:\n{status}"
    );
    let store = prefix.join("var/lib/faultline-coordinator");
    let md = std::fs::metadata(&store).expect("store");
    assert_eq!((md.uid(), md.mode() & 0o777), (uid, 0o700));

    let faultctl = |args: &[&str]| {
        let url = format!("https://{}:7443", ns.ns_ip);
        let c = certs.display().to_string();
        let mut all = vec!["--coordinator", url.as_str(), "--certs-dir", c.as_str()];
        all.extend_from_slice(args);
        run(&binary("faultctl"), &all)
    };
    let (ok, token) = faultctl(&["-o", "json", "tokens", "create", "--uses", "1"]);
    assert!(ok, "{token}");
    let token: serde_json::Value = serde_json::from_str(&token).expect("json");

    // The agent, enrolling at it (the enrollment URL defaults to the next port, 7444).
    let tf_a = Terraform::new(&dir.join("tf-agent"));
    let mut a = common("staging-a");
    a["hosts"] =
        json!({ "tf-host-2": { "address": ns.ns_ip.to_string(), "port": sshd.addr.port() } });
    a["coordinator_url"] = json!(format!("https://{}:7443", ns.ns_ip));
    a["ca_pem"] = json!(read("ca.pem"));
    a["join_token"] = token["token"].clone();
    a["agent_binary_path"] = json!(binary("faultline-agent").display().to_string());
    a["metrics_listen"] = json!("127.0.0.1:9465");
    a["agent_limits"] = json!({ "io_paths": [dir.display().to_string()] });
    root_module(&tf_a, "host", a);
    tf_a.ok(&["init", "-input=false", "-no-color"]);
    let (out, took) = tf_a.ok(&["apply", "-input=false", "-auto-approve", "-no-color"]);
    println!("host apply: {took:.1?}\n{}", remote(&out));
    let (ok, list) = faultctl(&["-o", "json", "agents", "list"]);
    assert!(ok, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let agent = list
        .as_array()
        .or_else(|| list["agents"].as_array())
        .and_then(|l| l.iter().find(|a| a["node_name"] == "tf-host-2"))
        .unwrap_or_else(|| panic!("no tf-host-2 in {list}"));
    assert_eq!(agent["connected"], true, "{agent}");

    // Break it: the agent is SIGKILLed with a fault applied (no SIGTERM, no revert). Destroy
    // must still revert the fault (recover, from the journal) and remove everything.
    let agent_pid: u32 = std::fs::read_to_string(prefix.join("run/faultline-agent.pid"))
        .expect("agent pid file")
        .trim()
        .parse()
        .expect("pid");
    let doc = dir.join("exp.yaml");
    std::fs::write(
        &doc,
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: tf-kill}\nspec:\n  duration: 5m\n  targets:\n    mode: all\n  faults:\n    - {kind: cpu, load: 10, workers: 1}\n",
    )
    .expect("experiment");
    let (ok, out) = faultctl(&["apply", "-f", &doc.display().to_string()]);
    assert!(ok, "faultctl apply: {out}");
    let since = std::time::Instant::now();
    let workers = loop {
        let w = workers_of(agent_pid);
        if !w.is_empty() {
            break w;
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "the cpu worker never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &agent_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    while Path::new(&format!("/proc/{agent_pid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // (The workers watch their agent and stop with it; the journal entry stays.)
    assert!(
        prefix.join("var/lib/faultline").read_dir().is_ok(),
        "the state dir with its journal is still there"
    );
    let (out, took) = tf_a.ok(&["destroy", "-input=false", "-auto-approve", "-no-color"]);
    let out = remote(&out);
    println!("host destroy after SIGKILL: {took:.1?}\n{out}");
    assert!(out.contains("no running agent"), "{out}");
    assert!(out.contains("recovery: reverted fault tf-kill-"), "{out}");
    for w in &workers {
        assert!(
            !Path::new(&format!("/proc/{w}")).exists(),
            "the worker {w} survived destroy"
        );
    }
    // The coordinator's files are all still there, and the doc page both share.
    assert!(prefix
        .join("usr/share/doc/faultline/bare-metal.md")
        .is_file());
    assert!(prefix.join("usr/local/bin/faultline-coordinator").is_file());
    let (out, took) = tf_c.ok(&["destroy", "-input=false", "-auto-approve", "-no-color"]);
    println!("coordinator-host destroy: {took:.1?}\n{}", remote(&out));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the coordinator is gone"
    );
    let left = files_below(&prefix);
    assert!(left.is_empty(), "destroy left files behind: {left:?}");
    let others = ns.others_than(sshd.proc.pid());
    assert!(
        others.is_empty(),
        "left in the namespace besides sshd: {others:?}"
    );
}
