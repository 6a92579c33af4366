//! The chart's pods, started on this host the way the kubelet would start them: the container's
//! command, args and env from the rendered manifest (`NODE_NAME` from the downward API), every
//! volume made from the Secret, projected Secrets, ConfigMap, hostPath, emptyDir or PVC it
//! names (file names and modes as the kubelet writes them, fsGroup ownership), the coordinator
//! as its non-root uid with no capabilities and no-new-privs, the agent as root limited to the
//! DaemonSet's capability list, and the Service name resolving through a private /etc/hosts.
//! Both must pass their readiness probes and the agent must hold a session under its node's
//! identity: the Secret layouts, file names, flags, env names, ports and probes all fit.
//!
//! Not simulated: the read-only root filesystem, seccomp and AppArmor, and the cluster network
//! (ports are remapped to free loopback ports). Needs root (setpriv, unshare, chown).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use faultline_tests::procs::{require_tool, Proc};
use faultline_tests::stack::{agents_connected, wait_ready};
use faultline_tests::{binary, free_port};
use serde::Deserialize;
use serde_json::Value;

use super::chart::render;

const NODE: &str = "node-a";
const SERVICE_HOST: &str = "faultline-coordinator.faultline.svc";

/// Secret name -> key -> bytes.
type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A volume's defaultMode as written in the manifest: `0440` is octal to kubectl (YAML 1.1);
/// serde_yaml_ng keeps such a leading-zero number as the string "0440". Plain numbers are
/// decimal, as in JSON.
fn mode(v: &Value, default: u32) -> u32 {
    match v {
        Value::Null => default,
        Value::String(s) if s.starts_with('0') => {
            u32::from_str_radix(s, 8).unwrap_or_else(|e| panic!("defaultMode {s}: {e}"))
        }
        Value::Number(n) => u32::try_from(n.as_u64().expect("mode")).expect("mode fits u32"),
        other => panic!("defaultMode {other} is not a mode"),
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(g)).expect("chown");
    }
}

/// The kubelet's part for one container: each mounted volume made under `dir`, returned as
/// (mountPath, host directory).
fn volumes(
    pod: &Value,
    container: &Value,
    objs: &BTreeMap<String, Value>,
    secrets: &Secrets,
    dir: &Path,
) -> Vec<(String, PathBuf)> {
    let fs_group = pod["securityContext"]["fsGroup"]
        .as_u64()
        .map(|g| u32::try_from(g).expect("gid"));
    let by_name: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("mount name");
        let mount = m["mountPath"].as_str().expect("mountPath").to_string();
        let vol = by_name
            .get(name)
            .unwrap_or_else(|| panic!("volumeMount {name} names no volume"));
        let host = dir.join(format!("vol-{name}"));
        // (secret name, items or all keys, optional)
        let mut sources: Vec<(&str, Option<&Value>, bool)> = Vec::new();
        let mut file_mode = 0o644;
        if let Some(s) = vol.get("secret") {
            sources.push((
                s["secretName"].as_str().expect("secretName"),
                s.get("items"),
                false,
            ));
            file_mode = mode(&s["defaultMode"], 0o644);
        } else if let Some(p) = vol.get("projected") {
            file_mode = mode(&p["defaultMode"], 0o644);
            for src in p["sources"].as_array().expect("projected sources") {
                let s = &src["secret"];
                sources.push((
                    s["name"].as_str().expect("projected secret name"),
                    s.get("items"),
                    s["optional"] == true,
                ));
            }
        } else if let Some(c) = vol.get("configMap") {
            let cm_name = c["name"].as_str().expect("configMap name");
            let cm = objs
                .get(&format!("ConfigMap/{cm_name}"))
                .unwrap_or_else(|| {
                    panic!("volume {name}: the chart renders no ConfigMap {cm_name}")
                });
            for (k, v) in cm["data"].as_object().expect("ConfigMap data") {
                write_file(
                    &host.join(k),
                    v.as_str().expect("data").as_bytes(),
                    0o644,
                    fs_group,
                );
            }
        } else if let Some(h) = vol.get("hostPath") {
            let path = h["path"].as_str().expect("hostPath path");
            if path == "/sys/fs/cgroup" {
                // The host's cgroup tree is the real thing here too.
                out.push((mount, PathBuf::from(path)));
                continue;
            }
            std::fs::create_dir_all(&host).expect("hostPath dir");
        } else if vol.get("emptyDir").is_some() || vol.get("persistentVolumeClaim").is_some() {
            std::fs::create_dir_all(&host).expect("volume dir");
            if let Some(g) = fs_group {
                std::os::unix::fs::chown(&host, Some(0), Some(g)).expect("chown volume");
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o2775))
                    .expect("chmod volume");
            }
        } else {
            panic!("volume {name}: a kind this test does not make: {vol}");
        }
        for (secret, items, optional) in sources {
            let Some(data) = secrets.get(secret) else {
                assert!(
                    optional,
                    "volume {name} needs Secret {secret}, which nobody makes"
                );
                continue;
            };
            let pairs: Vec<(String, String)> = match items.and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i["key"].as_str().expect("item key").to_string(),
                            i["path"].as_str().expect("item path").to_string(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in pairs {
                let bytes = data
                    .get(&key)
                    .unwrap_or_else(|| panic!("Secret {secret} has no key {key} (volume {name})"));
                write_file(&host.join(path), bytes, file_mode, fs_group);
            }
        }
        std::fs::create_dir_all(&host).expect("volume dir");
        if fs_group.is_some() {
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o2775))
                .expect("chmod volume");
        }
        out.push((mount, host));
    }
    out
}

/// Rewrites container paths to the volumes' host directories and container ports to the free
/// loopback ports in `ports`.
fn rewrite(value: &str, mounts: &[(String, PathBuf)], ports: &BTreeMap<u64, u16>) -> String {
    let (prefix, rest) = match value.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") => (format!("{flag}="), v.to_string()),
        _ => (String::new(), value.to_string()),
    };
    let mut rest = rest;
    if let Some((m, host)) = mounts
        .iter()
        .filter(|(m, _)| rest == *m || rest.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _)| m.len())
    {
        rest = format!("{}{}", host.display(), &rest[m.len()..]);
    }
    for (from, to) in ports {
        if let Some(addr) = rest.strip_suffix(&format!(":{from}")) {
            let addr = if addr == "0.0.0.0" { "127.0.0.1" } else { addr };
            rest = format!("{addr}:{to}");
        }
    }
    format!("{prefix}{rest}")
}

struct Started {
    proc: Proc,
    /// The readiness probe's address and path.
    ready: (std::net::SocketAddr, String),
}

/// Starts `container` of `pod` as the kubelet would (see the module doc).
fn start(
    what: &str,
    pod: &Value,
    objs: &BTreeMap<String, Value>,
    secrets: &Secrets,
    ports: &BTreeMap<u64, u16>,
    dir: &Path,
) -> Started {
    let c = &pod["containers"][0];
    let mounts = volumes(pod, c, objs, secrets, dir);
    let command: Vec<&str> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let exe_name = Path::new(command[0]).file_name().expect("exe name");
    // A copy the container's uid can reach whatever the checkout's permissions.
    let exe = dir.join(exe_name);
    std::fs::copy(binary(&exe_name.to_string_lossy()), &exe).expect("copy binary");

    let sc = &c["securityContext"];
    let uid = sc["runAsUser"]
        .as_u64()
        .or(pod["securityContext"]["runAsUser"].as_u64())
        .unwrap_or(0);
    let gid = pod["securityContext"]["runAsGroup"].as_u64().unwrap_or(uid);
    let caps: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|c| format!("+{}", c.to_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );
    let mut bounding = vec!["-all".to_string()];
    bounding.extend(caps);
    let mut setpriv = vec![
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        format!("--bounding-set={}", bounding.join(",")),
        "--inh-caps=-all".into(),
    ];
    match pod["securityContext"]["fsGroup"].as_u64() {
        Some(g) => setpriv.push(format!("--groups={g}")),
        None => setpriv.push("--clear-groups".into()),
    }
    if sc["allowPrivilegeEscalation"] == false {
        setpriv.push("--no-new-privs".into());
    }

    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost {SERVICE_HOST}\n")).expect("hosts");
    let mut argv: Vec<String> = vec![
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        "mount --bind \"$0\" /etc/hosts && exec setpriv \"$@\"".into(),
        hosts.display().to_string(),
    ];
    argv.extend(setpriv);
    argv.push("env".into());
    argv.push("-i".into());
    argv.push("PATH=/usr/bin:/bin".into());
    for e in c["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().expect("env name");
        let value = if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            NODE.to_string()
        } else {
            rewrite(e["value"].as_str().expect("env value"), &mounts, ports)
        };
        argv.push(format!("{name}={value}"));
    }
    argv.push(exe.display().to_string());
    for a in c["args"].as_array().cloned().unwrap_or_default() {
        argv.push(rewrite(a.as_str().expect("arg"), &mounts, ports));
    }
    let proc = Proc::spawn(what, &require_tool("unshare", "util-linux"), &argv, dir);

    let probe = &c["readinessProbe"]["httpGet"];
    let port = match &probe["port"] {
        Value::Number(n) => n.as_u64().expect("probe port"),
        Value::String(name) => c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| {
                panic!("{what}: the probe names port {name}, which is not declared")
            }),
        other => panic!("{what}: probe port {other}"),
    };
    let addr = format!("127.0.0.1:{}", ports[&port]).parse().expect("addr");
    Started {
        proc,
        ready: (
            addr,
            probe["path"].as_str().expect("probe path").to_string(),
        ),
    }
}

/// The Secrets `faultctl certs init --kubernetes` prints, decoded.
fn faultctl_secrets(certs: &Path) -> Secrets {
    let out = Command::new(binary("faultctl"))
        .args(["certs", "init", "--dir"])
        .arg(certs)
        .args(["--agents", NODE, "--san", SERVICE_HOST, "--kubernetes"])
        .output()
        .expect("run faultctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut secrets = Secrets::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).expect("YAML");
        if v.is_null() {
            continue;
        }
        let data = v["data"]
            .as_object()
            .expect("Secret data")
            .iter()
            .map(|(k, b64)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_str().expect("base64 string"))
                    .expect("base64");
                (k.clone(), bytes)
            })
            .collect();
        secrets.insert(
            v["metadata"]["name"].as_str().expect("name").to_string(),
            data,
        );
    }
    secrets
}

/// What cert-manager would put in its Secrets for the chart's Certificates (tls.crt, tls.key,
/// ca.crt), made from the same CA.
fn cert_manager_secrets(certs: &Path) -> Secrets {
    let read = |f: &str| std::fs::read(certs.join(f)).expect("cert file");
    let pair = |stem: &str| {
        BTreeMap::from([
            ("tls.crt".to_string(), read(&format!("{stem}.pem"))),
            ("tls.key".to_string(), read(&format!("{stem}-key.pem"))),
            ("ca.crt".to_string(), read("ca.pem")),
        ])
    };
    Secrets::from([
        (
            "faultline-coordinator-tls-cm".to_string(),
            pair("coordinator"),
        ),
        (
            format!("faultline-agent-{NODE}"),
            pair(&format!("agent-{NODE}")),
        ),
    ])
}

fn run_install(sets: &[&str], cert_manager: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // The coordinator's uid walks into it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod tmp");
    let certs = dir.join("certs");
    let mut secrets = faultctl_secrets(&certs);
    if cert_manager {
        secrets = cert_manager_secrets(&certs);
    }
    let objs = render("faultline", sets);
    let mut ports = BTreeMap::new();
    for key in [
        "Deployment/faultline-coordinator",
        "DaemonSet/faultline-agent",
    ] {
        for p in objs[key]["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("ports")
        {
            ports.insert(
                p["containerPort"].as_u64().expect("containerPort"),
                free_port(),
            );
        }
    }
    // The agents dial the Service port, which targets the coordinator's grpc container port.
    let svc = &objs["Service/faultline-coordinator"]["spec"]["ports"];
    let grpc = svc
        .as_array()
        .expect("service ports")
        .iter()
        .find(|p| p["targetPort"] == "grpc")
        .expect("grpc service port");
    let service_port = grpc["port"].as_u64().expect("port");
    assert!(
        ports.contains_key(&service_port),
        "the Service's grpc port is the container's (the agents' URL names it)"
    );

    let cdir = dir.join("coordinator");
    let adir = dir.join("agent");
    for d in [&cdir, &adir] {
        std::fs::create_dir_all(d).expect("mkdir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let coord_pod = &objs["Deployment/faultline-coordinator"]["spec"]["template"]["spec"];
    let coordinator = start("coordinator", coord_pod, &objs, &secrets, &ports, &cdir);
    wait_probe(&coordinator, Duration::from_secs(20));
    let agent_pod = &objs["DaemonSet/faultline-agent"]["spec"]["template"]["spec"];
    let agent = start("agent", agent_pod, &objs, &secrets, &ports, &adir);
    let took = wait_probe(&agent, Duration::from_secs(20));
    println!("{sets:?}: the agent pod was ready {took:?} after the coordinator pod");

    // The agent holds its session as node-a, and the coordinator ran as its non-root uid.
    let status = std::fs::read_to_string(format!("/proc/{}/status", coordinator.proc.pid()))
        .expect("coordinator status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(uid_line.contains("65532"), "{uid_line}");
    let caps = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff");
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    assert_eq!(
        agents_connected(coordinator.ready.0),
        1.0,
        "the coordinator counts one agent"
    );
    assert!(
        agent.proc.log_text().contains(NODE),
        "the agent's log does not name {NODE}:\n{}",
        agent.proc.log_text()
    );
}

fn wait_probe(s: &Started, timeout: Duration) -> Duration {
    assert_eq!(s.ready.1, "/readyz");
    wait_ready(&s.proc, s.ready.0, timeout)
}

#[test]
fn the_rendered_pods_start_with_faultctl_secrets_and_the_agent_connects() {
    run_install(&[], false);
}

#[test]
fn the_rendered_pods_start_with_cert_manager_secrets_and_the_agent_connects() {
    run_install(
        &[
            "tls.source=certManager",
            "tls.certManager.agentNodes={node-a,node-b}",
        ],
        true,
    );
}
