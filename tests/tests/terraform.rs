//! The Terraform modules (terraform/): formatting and checkov on every module and example, and
//! the modules that need no provider applied for real. terraform/modules/host is initialised,
//! validated, planned and applied over SSH to an sshd in a network namespace: it installs the
//! agent (the binary of this build), which enrolls with a join token at a coordinator on the
//! host side and gets a fault; `terraform destroy` stops it (the fault reverted) and removes
//! every file. terraform/modules/coordinator-host is applied the same way with an agent from
//! the host module enrolling at it (terraform/whole.rs), and examples/vms renders its
//! cloud-init for real (terraform/vms.rs).
//!
//! The kubernetes module's providers (helm, kubernetes, tls) cannot be downloaded here (no
//! access to registry.terraform.io); it is parsed and checked against the chart's
//! values.schema.json instead (terraform/kubernetes.rs).
//!
//! The agents started here sweep at start-up like any agent: their network sweep sees only
//! their own namespace (the sshd's private /run hides the others), while the eBPF, process
//! and cgroup sweeps are host-wide and leave what a live agent holds alone.
//!
//! Needs root (a network namespace), terraform on PATH, openssh-server and openssh-client,
//! iproute2, util-linux (setpriv), python3-venv and PyPI (checkov), and the workspace binaries
//! (`cargo build --workspace --bins`).

#[path = "terraform/env.rs"]
mod env;
#[path = "terraform/kubernetes.rs"]
mod kubernetes;
#[path = "terraform/vms.rs"]
mod vms;
#[path = "terraform/whole.rs"]
mod whole;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use env::{repo, Coordinator, Netns, Sshd, Terraform};
use faultline_tests::binary;
use faultline_tests::procs::require_root;
use faultline_tests::stack::workers_of;
use serde_json::json;

/// What PID 1 is: the module's install_mode auto picks systemd only when it is systemd.
fn pid1() -> String {
    std::fs::read_to_string("/proc/1/comm")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every file, link and directory below `dir` (not `dir` itself).
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        out.push(e.path().display().to_string());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(entries(&e.path()));
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn agent_entry(list: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    list.as_array()
        .or_else(|| list["agents"].as_array())
        .and_then(|l| l.iter().find(|a| a["node_name"] == name).cloned())
}

#[test]
fn host_module_installs_an_enrolled_agent_over_ssh_and_destroy_removes_it() {
    require_root("the Terraform host test (a network namespace and sshd)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ns = Netns::create();
    let sshd = Sshd::start(&ns, dir);
    let coord = Coordinator::start(ns.host_ip);
    let systemd = pid1() == "systemd";
    // The prefix is a temp dir, so install_mode auto takes the process path even on systemd.
    println!(
        "PID 1 is {:?}: systemd {}; the module's install_mode auto takes the process path",
        pid1(),
        if systemd { "runs" } else { "does not run" },
    );

    let token = coord.json(&[
        "tokens",
        "create",
        "--ttl",
        "10m",
        "--uses",
        "1",
        "--labels",
        "source=token",
    ])["token"]
        .as_str()
        .expect("token")
        .to_string();
    let prefix = dir.join("root");
    let staging = dir.join("staging");
    let io_dir = dir.join("io");
    std::fs::create_dir(&io_dir).expect("io dir");
    let tf = Terraform::new(&dir.join("tf"));
    let ca = std::fs::read_to_string(coord.certs.path().join("ca.pem")).expect("ca.pem");
    let node = "tf-host-1";
    // remote-exec's scripts go here, not to /tmp: Terraform leaves each one behind, emptied.
    let scripts = dir.join("remote-exec");
    std::fs::create_dir(&scripts).expect("remote-exec dir");
    // The root module, as JSON configuration, with the module used in place.
    let root = json!({
        "module": { "host": {
            "source": tf.relative(&repo().join("terraform/modules/host")),
            "hosts": { node: {
                "address": sshd.addr.ip().to_string(),
                "port": sshd.addr.port(),
                "labels": { "rack": "r1" },
            } },
            "ssh": {
                "user": "root",
                "host_key": sshd.host_key_pub,
                "timeout": "30s",
                "script_path": format!("{}/tf_%RAND%.sh", scripts.display()),
            },
            "ssh_private_key": sshd.client_key,
            "coordinator_url": format!("https://{}", coord.grpc),
            "enroll_url": format!("https://{}", coord.enroll),
            "ca_pem": ca,
            "join_token": token,
            "labels": { "zone": "z1" },
            "metrics_listen": format!("127.0.0.1:{}", faultline_tests::free_port()),
            "install_prefix": prefix.display().to_string(),
            "staging_dir": staging.display().to_string(),
            "agent_binary_path": binary("faultline-agent").display().to_string(),
            "agent_limits": {
                "max_concurrent_faults": 4,
                "max_duration": "10m",
                "io_paths": [io_dir.display().to_string()],
            },
        } },
        "output": {
            "agents": { "value": "${module.host.agents}" },
            "install_mode": { "value": "${module.host.install_mode}" },
        },
    });
    std::fs::write(
        tf.dir.join("main.tf.json"),
        serde_json::to_string_pretty(&root).expect("json"),
    )
    .expect("main.tf.json");

    let (init, _) = tf.ok(&["init", "-input=false", "-no-color"]);
    assert!(
        init.contains("Terraform has been successfully initialized"),
        "{init}"
    );
    tf.ok(&["validate", "-no-color"]);
    let (plan, _) = tf.ok(&["plan", "-input=false", "-no-color"]);
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{plan}"
    );
    let (apply, apply_took) = tf.ok(&["apply", "-input=false", "-auto-approve", "-no-color"]);
    // What ran on the host (the plan output above it quotes the script itself).
    let apply = remote_lines(&apply);
    let path = apply
        .lines()
        .find(|l| l.contains("==> faultline-agent: install_mode"))
        .unwrap_or_else(|| panic!("the apply does not say its install_mode:\n{apply}"));
    println!(
        "terraform apply: {apply_took:.1?}; {}\n{apply}",
        path.trim()
    );
    assert!(
        path.contains("install_mode process"),
        "a temp prefix must take the process path: {path}"
    );
    assert!(
        apply.contains("the agent is ready (it has a session with"),
        "the install waits for /readyz:\n{apply}"
    );

    // The agent runs in the namespace, from the prefix, and the coordinator lists it enrolled
    // with the token's and the module's labels.
    let pid: u32 = std::fs::read_to_string(prefix.join("run/faultline-agent.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).expect("agent exe"),
        prefix.join("usr/local/bin/faultline-agent")
    );
    assert!(ns.pids().contains(&pid), "the agent runs in the namespace");
    let listed = coord.json(&["agents", "list"]);
    let a = agent_entry(&listed, node).unwrap_or_else(|| panic!("no {node} in {listed}"));
    println!("faultctl agents list: {a}");
    let labels = a["labels"].to_string();
    for l in ["source", "token", "rack", "r1", "zone", "z1"] {
        assert!(labels.contains(l), "labels {labels} lack {l}");
    }
    let etc = prefix.join("etc/faultline");
    assert_eq!(mode(&etc.join("join-token")), 0o600);
    assert_eq!(mode(&etc.join("agent.env")), 0o600);
    let toml = std::fs::read_to_string(etc.join("agent.toml")).expect("agent.toml");
    assert!(
        toml.contains("max_concurrent_faults = 4") && toml.contains("max_duration = \"10m\""),
        "{toml}"
    );
    assert!(
        prefix
            .join("var/lib/faultline/identity/agent.pem")
            .is_file(),
        "the agent enrolled and keeps its certificate in its state dir"
    );
    assert!(
        !staging.exists(),
        "the staging dir is removed after install"
    );

    // A fault on it: destroy must revert it before the agent goes.
    let doc = dir.join("exp.yaml");
    std::fs::write(
        &doc,
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: tf-cpu}\nspec:\n  duration: 5m\n  targets:\n    mode: all\n  faults:\n    - {kind: cpu, load: 10, workers: 1}\n",
    )
    .expect("experiment");
    let (ok, out) = coord.faultctl(&["apply", "-f", &doc.display().to_string()]);
    assert!(ok, "faultctl apply: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let workers = loop {
        let w = workers_of(pid);
        if !w.is_empty() {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the cpu fault's worker never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let (destroy, destroy_took) = tf.ok(&["destroy", "-input=false", "-auto-approve", "-no-color"]);
    let uploaded = std::fs::read_dir(&scripts)
        .expect("remote-exec dir")
        .count();
    assert!(
        uploaded >= 2,
        "remote-exec used ssh.script_path for apply and destroy: {uploaded} scripts there"
    );
    let destroy = remote_lines(&destroy);
    println!("terraform destroy: {destroy_took:.1?}\n{destroy}");
    assert!(
        destroy.contains(&format!("stopped faultline-agent pid {pid}")),
        "{destroy}"
    );
    assert!(
        destroy.contains("nothing found"),
        "recover after the stop finds nothing to revert:\n{destroy}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the agent is gone"
    );
    for w in workers {
        assert!(
            !Path::new(&format!("/proc/{w}")).exists(),
            "the cpu worker {w} survived destroy"
        );
    }
    let left = entries(&prefix);
    assert!(left.is_empty(), "destroy left files behind: {left:?}");
    let others = ns.others_than(sshd.proc.pid());
    assert!(
        others.is_empty(),
        "left in the namespace besides sshd: {others:?}"
    );
    let staged: Vec<String> = entries(dir)
        .into_iter()
        .filter(|e| e.contains("staging"))
        .collect();
    assert!(staged.is_empty(), "staging files left: {staged:?}");
    let listed = coord.json(&["agents", "list"]);
    let a = agent_entry(&listed, node).unwrap_or_else(|| panic!("no {node} in {listed}"));
    assert_eq!(a["connected"], false, "{a}");
    // The agent ends its session before it reverts (docs/architecture.md, "Shutdown"), so
    // the coordinator learns of it by the lease: the target fails as lost, the experiment
    // aborts, and nothing is left applied in its record.
    let since = Instant::now();
    let target = loop {
        let exp = coord.json(&["describe", "experiment", "tf-cpu"]);
        let t = exp["targets"][0].clone();
        if t["state"] != "applied" {
            break t;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the coordinator still has the fault applied 30 s after destroy: {exp}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "the coordinator {:?} after destroy: target {} ({})",
        since.elapsed(),
        target["state"],
        target["error"]
    );
    assert!(
        target["error"]
            .as_str()
            .is_some_and(|e| e.contains("reverted its faults")),
        "{target}"
    );
}

/// The lines the provisioners printed from the host, without Terraform's prefix.
fn remote_lines(out: &str) -> String {
    out.lines()
        .filter_map(|l| l.split_once("(remote-exec): ").map(|(_, r)| r))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn coordinator_host_and_host_modules_install_a_whole_installation_and_destroy_removes_it() {
    require_root("the Terraform coordinator-host test (a network namespace and sshd)");
    whole::coordinator_and_agent_by_terraform_alone();
}

// ---- Offline checks of every module --------------------------------------------------------

#[test]
fn terraform_fmt_and_checkov_pass_on_every_module_and_example() {
    let out = std::process::Command::new("bash")
        .arg(repo().join("terraform/validate.sh"))
        .output()
        .expect("run terraform/validate.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "terraform/validate.sh:\n{text}");
    for dir in [
        "modules/host",
        "modules/coordinator-host",
        "modules/kubernetes",
        "examples/eks",
        "examples/vms",
    ] {
        assert!(
            text.contains(&format!("-d terraform/{dir}")),
            "checkov did not run on {dir}:\n{text}"
        );
    }
}

#[test]
fn kubernetes_module_parses_and_sets_only_values_the_chart_schema_has() {
    let module = kubernetes::parsed();
    let schema = kubernetes::schema();
    let mut leaves = Vec::new();
    kubernetes::leaves(
        &kubernetes::chart_values(&module),
        &mut Vec::new(),
        &mut leaves,
    );
    let declared = kubernetes::variables(&module);
    let var_ref = regex::Regex::new(r"var\.([a-z_]+)").expect("regex");
    for (path, value) in &leaves {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        assert!(
            kubernetes::schema_at(&schema, &keys).is_some(),
            "the module sets chart value {} which values.schema.json does not have",
            keys.join(".")
        );
        for cap in var_ref.captures_iter(&value.to_string()) {
            assert!(
                declared.contains(&cap[1].to_string()),
                "chart value {} refers to var.{} which variables.tf does not declare",
                keys.join("."),
                &cap[1]
            );
        }
    }
    println!(
        "{} chart values set by the module, each in values.schema.json",
        leaves.len()
    );
    assert!(
        leaves.len() >= 30,
        "only {} chart values found",
        leaves.len()
    );
    // Every top-level section of the chart (but global) is set by the module.
    for section in schema["properties"].as_object().expect("properties").keys() {
        if section != "global" {
            assert!(
                leaves.iter().any(|(p, _)| &p[0] == section),
                "the module sets nothing under {section}"
            );
        }
    }
}

#[test]
fn every_module_and_example_parses_and_declares_the_variables_it_uses() {
    let var_ref = regex::Regex::new(r"\bvar\.([a-z_][a-z0-9_]*)").expect("regex");
    for dir in [
        "terraform/modules/host",
        "terraform/modules/coordinator-host",
        "terraform/modules/kubernetes",
        "terraform/examples/eks",
        "terraform/examples/vms",
    ] {
        let parsed = kubernetes::parse(dir);
        for f in ["versions.tf", "variables.tf", "main.tf", "outputs.tf"] {
            assert!(
                parsed
                    .get(f)
                    .and_then(serde_json::Value::as_object)
                    .is_some_and(|o| !o.is_empty()),
                "{dir}/{f} is missing or empty"
            );
        }
        let declared = kubernetes::variables(&parsed);
        let text = parsed.to_string();
        let mut used: Vec<String> = var_ref
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .collect();
        used.sort();
        used.dedup();
        for v in &used {
            assert!(
                declared.contains(v),
                "{dir} uses var.{v} but declares no such variable"
            );
        }
        // Every variable has a description and a type.
        for block in parsed["variables.tf"]["variable"]
            .as_array()
            .expect("variables")
        {
            let (name, body) = block
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| !k.starts_with("__")))
                .expect("variable");
            assert!(
                body.get("description").is_some(),
                "{dir}: var.{name} has no description"
            );
            assert!(body.get("type").is_some(), "{dir}: var.{name} has no type");
        }
        println!("{dir}: {} variables, {} used", declared.len(), used.len());
    }
}

fn number(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn range_text(x: f64) -> String {
    format!("{}", number(x))
}

#[test]
fn kubernetes_module_validations_refuse_what_the_chart_schema_refuses() {
    let schema = kubernetes::schema();
    let vars = kubernetes::VariablesOnly::new();
    let mut probes = 0;
    let check =
        |var: &str, msg: &str, value: serde_json::Value, want_ok: bool, names: &[String]| {
            let got = vars.plan(&kubernetes::nested(var, value.clone()));
            match (&got, want_ok) {
                (Ok(()), true) => {}
                (Err(out), false) => {
                    assert!(
                        out.contains(msg),
                        "{var} = {value}: refused, but not by {msg:?}:\n{out}"
                    );
                    for n in names {
                        assert!(
                            out.contains(n.as_str()),
                            "{var} = {value}: the message does not name {n}:\n{out}"
                        );
                    }
                }
                (Ok(()), false) => {
                    panic!("{var} = {value}: the chart refuses it, terraform plan accepted it")
                }
                (Err(out), true) => panic!(
                    "{var} = {value}: the chart accepts it, terraform plan refused it:\n{out}"
                ),
            }
        };
    for r in kubernetes::RANGES {
        let node =
            kubernetes::schema_at(&schema, r.schema).unwrap_or_else(|| panic!("{:?}", r.schema));
        let min = node["minimum"].as_f64().expect("minimum");
        let max = node["maximum"].as_f64().expect("maximum");
        let integer = node["type"] == "integer";
        let range = vec![format!("{}..={}", range_text(min), range_text(max))];
        for (x, ok) in [
            (min - 1.0, false),
            (min, true),
            (max, true),
            (max + 1.0, false),
            (min + 0.5, !integer),
        ] {
            assert_eq!(
                kubernetes::schema_accepts(node, &number(x)),
                ok,
                "{:?} {x}",
                r.schema
            );
            check(r.var, r.msg, number(x), ok, &range);
            probes += 1;
        }
        println!(
            "{:<40} {}  ({})",
            r.var,
            range[0],
            if integer { "integer" } else { "number" }
        );
    }
    for r in kubernetes::ENUMS {
        let node = kubernetes::schema_at(&schema, r.schema).expect("enum");
        let allowed: Vec<String> = node["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .map(|v| v.as_str().expect("str").to_string())
            .collect();
        for v in &allowed {
            check(r.var, r.msg, json!(v), true, &[]);
            probes += 1;
        }
        check(r.var, r.msg, json!("Sometimes"), false, &allowed);
        probes += 1;
        println!("{:<40} one of {}", r.var, allowed.join(", "));
    }
    for p in kubernetes::PATTERNS {
        let node = kubernetes::schema_at(&schema, p.row.schema)
            .unwrap_or_else(|| panic!("{:?}", p.row.schema));
        let mut refused = Vec::new();
        for s in p.samples {
            let chart_ok = kubernetes::schema_accepts(node, &kubernetes::chart_form(p.row.var, s));
            let want = chart_ok && !p.stricter.contains(s);
            check(p.row.var, p.row.msg, json!(s), want, &[]);
            if !want {
                refused.push(format!("{s:?}"));
            }
            probes += 1;
        }
        println!("{:<40} refused {}", p.row.var, refused.join(" "));
    }
    println!("{probes} terraform plans agree with values.schema.json");
}

// ---- The vms example ----------------------------------------------------------------------

#[test]
fn vms_example_renders_cloud_init_that_carries_the_ssh_install_files() {
    vms::vms_example();
}

#[test]
fn host_module_refuses_bad_input_at_plan_time_naming_the_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tf = Terraform::new(tmp.path());
    let module = |extra: serde_json::Value| {
        let mut m = json!({
            "source": tf.relative(&repo().join("terraform/modules/host")),
            "hosts": { "db-1": { "address": "192.0.2.10" } },
            "coordinator_url": "https://coordinator.example.internal:7443",
            "ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "join_token": format!("0a1b2c.{}", "f".repeat(64)),
            "agent_binary_path": binary("faultline-agent").display().to_string(),
        });
        for (k, v) in extra.as_object().expect("object") {
            m[k] = v.clone();
        }
        std::fs::write(
            tf.dir.join("main.tf.json"),
            json!({ "module": { "host": m } }).to_string(),
        )
        .expect("main.tf.json");
    };
    module(json!({}));
    tf.ok(&["init", "-input=false", "-no-color"]);
    let (plan, _) = tf.ok(&["plan", "-input=false", "-no-color"]);
    assert!(plan.contains("Plan: 1 to add"), "{plan}");
    for (extra, message) in [
        (json!({ "join_token": "3f9a1c" }), "join_token: <id>.<secret>, a 6-hex-digit id and a 64-hex-digit secret"),
        (json!({ "agent_limits": { "max_concurrent_faults": 0 } }), "agent_limits.max_concurrent_faults: an integer in 1..=1000."),
        (json!({ "agent_limits": { "max_duration": "8d" } }), "agent_limits.max_duration: 1s..=7d"),
        (json!({ "agent_limits": { "allowed_kinds": ["cpu", "disk"] } }), "agent_limits.allowed_kinds: each one of network, drop, partition, cpu, memory, io, process."),
        (json!({ "hosts": { "DB_1": { "address": "192.0.2.10" } } }), "hosts: every key is a node name"),
        (json!({ "hosts": { "db-1": { "address": "192.0.2.10", "port": 70000 } } }), "hosts[*].port: an SSH port is an integer in 1..=65535."),
        (json!({ "coordinator_url": "http://coordinator:7443" }), "coordinator_url: https://HOST[:PORT]"),
        (json!({ "install_mode": "systemd", "install_prefix": "/tmp/x" }), "install_mode: systemd loads units from /etc/systemd/system only"),
        (json!({ "agent_binary_path": "/nonexistent/faultline-agent" }), "agent_binary_path: an existing file on the machine running Terraform"),
        (json!({ "agent_binary_path": null }), "agent_binary_path, or agent_binary_url with agent_binary_sha256"),
        (json!({ "ssh": { "script_path": "/tmp/install.sh" } }), "ssh.script_path: an absolute path without spaces or quotes that contains %RAND%"),
    ] {
        module(extra.clone());
        let (ok, out, _) = tf.run(&["plan", "-input=false", "-no-color"]);
        assert!(!ok, "{extra} was accepted");
        // Terraform wraps long messages.
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(message), "{extra}: no {message:?} in:\n{out}");
    }
}
