//! The systemd units for bare-metal and VM hosts (agent/dist, coordinator/dist):
//! `systemd-analyze verify` accepts them, `systemd-analyze security` rates the coordinator's
//! sandbox, the agent's unit grants what the DaemonSet grants, and both daemons start from the
//! shipped env files the way the units start them (user, group, capability bounding set,
//! no-new-privs, umask, StateDirectory), the agent holds a session, and SIGTERM stops each
//! cleanly within its unit's TimeoutStopSec.
//!
//! This host has no systemd as PID 1, so the units are not run by systemd itself; their
//! sandboxing directives beyond the ones above are checked by `systemd-analyze` only.
//! Needs root, systemd (systemd-analyze) and util-linux (setpriv).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::procs::{require_tool, Proc};
use faultline_tests::stack::{agents_connected, wait_ready};
use faultline_tests::{binary, free_port};
use serde::Deserialize;
use serde_json::Value;

/// The uid and gid the test gives the unit's `faultline` user.
const FAULTLINE_ID: u32 = 61_999;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `[Service]` settings of a unit: key -> values (a key may repeat).
fn service(rel: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(rel).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]" {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{rel}: {line}"));
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    unit.get(key)
        .and_then(|v| v.last())
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// KEY=VALUE lines of an env file.
fn env_file(rel: &str) -> Vec<(String, String)> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{rel}: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

const UNITS: [(&str, &str); 2] = [
    ("agent/dist/faultline-agent.service", "faultline-agent"),
    (
        "coordinator/dist/faultline-coordinator.service",
        "faultline-coordinator",
    ),
];

/// A root directory for `systemd-analyze --root`: the host's unit library, our units, and the
/// binaries their ExecStart= names.
fn analyze_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).expect("mkdir");
    let st = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(
        st.success(),
        "copying /usr/lib/systemd/system (install systemd)"
    );
    std::fs::create_dir_all(r.join("etc/systemd/system")).expect("mkdir");
    std::fs::create_dir_all(r.join("usr/local/bin")).expect("mkdir");
    for (unit, exe) in UNITS {
        let name = Path::new(unit).file_name().expect("name");
        std::fs::copy(root().join(unit), r.join("etc/systemd/system").join(name)).expect("cp unit");
        std::fs::copy(binary(exe), r.join("usr/local/bin").join(exe)).expect("cp binary");
    }
    dir
}

#[test]
fn systemd_analyze_verify_accepts_both_units_without_a_warning() {
    let analyze = require_tool("systemd-analyze", "systemd");
    let r = analyze_root();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", r.path().display()))
        .args([
            "/etc/systemd/system/faultline-agent.service",
            "/etc/systemd/system/faultline-coordinator.service",
        ])
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

fn exposure(unit: &str, r: &Path) -> f64 {
    let out = Command::new(require_tool("systemd-analyze", "systemd"))
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", r.display()))
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level for {unit}:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn the_coordinator_unit_is_sandboxed() {
    let r = analyze_root();
    let coordinator = exposure("faultline-coordinator.service", r.path());
    let agent = exposure("faultline-agent.service", r.path());
    println!("systemd-analyze security: coordinator {coordinator}, agent {agent} (0 = fenced off, 10 = exposed)");
    assert!(
        coordinator <= 2.0,
        "the coordinator's exposure is {coordinator}, above 2.0 (\"OK\")"
    );
    // The agent changes the host by design; capabilities are its fence.
    assert!(agent > coordinator);
}

#[test]
fn the_agent_unit_grants_what_the_daemonset_grants() {
    let unit = service("agent/dist/faultline-agent.service");
    let mut caps: Vec<String> = one(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    caps.sort();
    let text = read("daemonset/manifests/40-agent.yaml");
    let ds = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .find(|v| v["kind"] == "DaemonSet")
        .expect("the DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let mut want: Vec<String> = pod["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("add")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    want.sort();
    assert_eq!(
        caps, want,
        "the unit and the DaemonSet grant different capabilities"
    );
    assert_eq!(one(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(
        one(&unit, "KillMode"),
        "mixed",
        "SIGTERM must reach the agent alone"
    );
    let stop: u64 = one(&unit, "TimeoutStopSec").parse().expect("seconds");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(
        stop >= grace,
        "TimeoutStopSec {stop} is shorter than the DaemonSet's {grace} s"
    );
}

/// Rewrites a path under /etc/faultline or /var/lib into `dir`, and 0.0.0.0:port into a free
/// loopback port.
fn rewrite(value: &str, dir: &Path, ports: &mut BTreeMap<String, u16>) -> String {
    for prefix in ["/etc/faultline", "/var/lib/"] {
        if let Some(rest) = value.strip_prefix(prefix) {
            return format!("{}{prefix}{rest}", dir.display());
        }
    }
    if let Some(port) = value.strip_prefix("0.0.0.0:") {
        let free = *ports.entry(port.to_string()).or_insert_with(free_port);
        return format!("127.0.0.1:{free}");
    }
    value.to_string()
}

/// Starts `exe` as the unit starts it, with `env` (already rewritten).
fn start_unit(
    name: &str,
    unit: &BTreeMap<String, Vec<String>>,
    exe: &Path,
    env: &[(String, String)],
    dir: &Path,
) -> Proc {
    let (uid, gid) = match one(unit, "User") {
        "root" => (0, 0),
        "faultline" => (FAULTLINE_ID, FAULTLINE_ID),
        other => panic!("User={other}: the test knows root and faultline"),
    };
    let mut bounding = vec!["-all".to_string()];
    for c in one(unit, "CapabilityBoundingSet").split_whitespace() {
        bounding.push(format!("+{}", c.trim_start_matches("CAP_").to_lowercase()));
    }
    let mut args: Vec<String> = vec![
        "-c".into(),
        format!(
            "umask {}; exec \"$@\"",
            unit.get("UMask")
                .and_then(|u| u.last())
                .map_or("0022", String::as_str)
        ),
        "sh".into(),
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        format!("--bounding-set={}", bounding.join(",")),
        "--inh-caps=-all".into(),
    ];
    if one(unit, "NoNewPrivileges") == "yes" {
        args.push("--no-new-privs".into());
    }
    args.extend(["env".into(), "-i".into(), "PATH=/usr/bin:/bin".into()]);
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.push(exe.display().to_string());
    // StateDirectory=: /var/lib/<name>, owned by the unit's user, with its mode.
    let state = dir.join("var/lib").join(one(unit, "StateDirectory"));
    std::fs::create_dir_all(&state).expect("state dir");
    let mode = u32::from_str_radix(one(unit, "StateDirectoryMode"), 8).expect("octal mode");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).expect("chown");
    Proc::spawn(name, Path::new("/bin/sh"), &args, dir)
}

fn stop_within(p: &mut Proc, unit: &BTreeMap<String, Vec<String>>) -> Duration {
    let limit = Duration::from_secs(one(unit, "TimeoutStopSec").parse().expect("seconds"));
    let start = Instant::now();
    let status = p.signal_and_wait(one(unit, "KillSignal").trim_start_matches("SIG"), limit);
    assert!(
        status.success(),
        "{} exited with {status} on SIGTERM:\n{}",
        p.name,
        p.log_text()
    );
    start.elapsed()
}

#[test]
fn both_daemons_start_from_the_shipped_env_files_as_their_units_start_them() {
    require_tool("setpriv", "util-linux");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let etc = dir.join("etc/faultline");
    std::fs::create_dir_all(&etc).expect("mkdir");
    for f in ["agent/dist/agent.toml", "coordinator/dist/coordinator.toml"] {
        let p = root().join(f);
        std::fs::copy(&p, etc.join(p.file_name().expect("name"))).expect("copy config");
    }
    // Certificates as docs/bare-metal.md installs them: the coordinator's readable by group
    // faultline (0640), the agent's root-only.
    let tls = etc.join("tls");
    let out = Command::new(binary("faultctl"))
        .args(["certs", "init", "--dir"])
        .arg(&tls)
        .args(["--agents", "node-a"])
        .output()
        .expect("faultctl certs init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o755)).expect("chmod tls");
    for f in ["ca.pem", "coordinator.pem", "coordinator-key.pem"] {
        let p = tls.join(f);
        std::os::unix::fs::chown(&p, Some(0), Some(FAULTLINE_ID)).expect("chgrp");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    }

    let mut ports = BTreeMap::new();
    let coord_unit = service("coordinator/dist/faultline-coordinator.service");
    let coord_env: Vec<(String, String)> = env_file("coordinator/dist/coordinator.env")
        .into_iter()
        .map(|(k, v)| {
            let v = rewrite(&v, dir, &mut ports);
            (k, v)
        })
        .collect();
    let get = |env: &[(String, String)], k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the env file sets no {k}"))
    };
    let grpc = get(&coord_env, "FAULTLINE_LISTEN");
    let coord_metrics: std::net::SocketAddr = get(&coord_env, "FAULTLINE_METRICS_LISTEN")
        .parse()
        .expect("addr");
    // The unit's user must reach its binary.
    let coord_exe = dir.join("faultline-coordinator");
    std::fs::copy(binary("faultline-coordinator"), &coord_exe).expect("copy binary");
    let mut coordinator = start_unit("coordinator", &coord_unit, &coord_exe, &coord_env, dir);
    wait_ready(&coordinator, coord_metrics, Duration::from_secs(20));

    let agent_unit = service("agent/dist/faultline-agent.service");
    let mut agent_env: Vec<(String, String)> = env_file("agent/dist/agent.env")
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "FAULTLINE_COORDINATOR" {
                // The coordinator's certificate names localhost; the example host is the
                // operator's to fill in.
                format!(
                    "https://localhost:{}",
                    grpc.rsplit(':').next().expect("port")
                )
            } else {
                rewrite(&v, dir, &mut ports)
            };
            (k, v)
        })
        .collect();
    agent_env.push(("FAULTLINE_NODE_NAME".into(), "node-a".into()));
    let agent_metrics: std::net::SocketAddr = get(&agent_env, "FAULTLINE_METRICS_LISTEN")
        .parse()
        .expect("addr");
    let mut agent = start_unit(
        "agent",
        &agent_unit,
        &binary("faultline-agent"),
        &agent_env,
        dir,
    );
    let took = wait_ready(&agent, agent_metrics, Duration::from_secs(20));
    println!("the agent was ready {took:?} after start");

    assert_eq!(
        agents_connected(coord_metrics),
        1.0,
        "the coordinator counts one agent"
    );

    // The store belongs to the unit's user and UMask=0077 keeps it private.
    let state = dir.join("var/lib/faultline-coordinator");
    let mut files = 0;
    for e in std::fs::read_dir(&state).expect("store dir").flatten() {
        let md = e.metadata().expect("metadata");
        assert_eq!(md.uid(), FAULTLINE_ID, "{}", e.path().display());
        assert_eq!(
            md.mode() & 0o077,
            0,
            "{} is open to others",
            e.path().display()
        );
        files += 1;
    }
    assert!(
        files > 0,
        "the coordinator wrote nothing under {}",
        state.display()
    );

    let a = stop_within(&mut agent, &agent_unit);
    let c = stop_within(&mut coordinator, &coord_unit);
    println!("SIGTERM: the agent stopped in {a:?}, the coordinator in {c:?}");
}

#[test]
fn install_host_sets_up_a_root_offline_and_keeps_edited_config() {
    require_tool("systemctl", "systemd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = tmp.path();
    let install = |what: &[&str]| {
        let out = Command::new("bash")
            .arg(root().join("scripts/install-host.sh"))
            .arg("--root")
            .arg(r)
            .arg("--bin-dir")
            .arg(faultline_tests::bin_dir())
            .args(what)
            .output()
            .expect("run install-host.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "install-host.sh {what:?}:\n{text}");
        text
    };
    install(&["agent", "coordinator", "faultctl"]);

    let mode = |rel: &str| {
        let md = std::fs::metadata(r.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        (md.mode() & 0o7777, md.uid(), md.gid())
    };
    for exe in ["faultline-agent", "faultline-coordinator", "faultctl"] {
        assert_eq!(mode(&format!("usr/local/bin/{exe}")).0, 0o755, "{exe}");
    }
    // The units' Documentation= page.
    assert!(r.join("usr/share/doc/faultline/bare-metal.md").is_file());
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("faultline:"))
        .unwrap_or_else(|| panic!("no faultline user:\n{passwd}"));
    let gid: u32 = user.split(':').nth(3).expect("gid").parse().expect("gid");
    assert_eq!(mode("etc/faultline/coordinator.env"), (0o640, 0, gid));
    assert_eq!(mode("etc/faultline/agent.env"), (0o600, 0, 0));
    for unit in ["faultline-agent.service", "faultline-coordinator.service"] {
        let link = r
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        let target =
            std::fs::read_link(&link).unwrap_or_else(|e| panic!("{unit} not enabled: {e}"));
        assert_eq!(target, Path::new("/etc/systemd/system").join(unit));
        assert_eq!(
            std::fs::read_to_string(r.join("etc/systemd/system").join(unit)).expect("unit"),
            read(&format!(
                "{}/dist/{unit}",
                if unit.contains("agent") {
                    "agent"
                } else {
                    "coordinator"
                }
            ))
        );
    }

    // A second run (an upgrade) replaces binaries and units but keeps the operator's config.
    let edited = "FAULTLINE_COORDINATOR=https://coord.prod:7443\n";
    std::fs::write(r.join("etc/faultline/agent.env"), edited).expect("edit");
    let text = install(&["agent"]);
    assert!(text.contains("kept"), "{text}");
    assert_eq!(
        std::fs::read_to_string(r.join("etc/faultline/agent.env")).expect("agent.env"),
        edited
    );

    // Bad input names what is allowed.
    let out = Command::new("bash")
        .arg(root().join("scripts/install-host.sh"))
        .args(["--root", "/nonexistent-never", "agnet"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown argument 'agnet': give agent, coordinator and/or faultctl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
