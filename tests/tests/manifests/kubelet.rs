//! The kubelet's part for the rendered pods, on this host: each volume a container mounts made
//! from the Secret, ConfigMap (rendered, or as the coordinator published it through the API),
//! projected ServiceAccount token (registered with the stand-in API server, bound to the pod on
//! its node), hostPath, emptyDir or PVC it names, with the kubelet's file names, modes and
//! fsGroup ownership; the service-account token mount and `KUBERNETES_SERVICE_*` of a pod that
//! automounts its token; then the container's command, args and env (`NODE_NAME` from the
//! downward API) under its uid, capability bounding set and no-new-privs, with the Service name
//! resolving through a private /etc/hosts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_tests::binary;
use faultline_tests::procs::{require_tool, Proc};
use serde_json::Value;

use super::kube_api::KubeApi;

pub const SERVICE_HOST: &str = "faultline-coordinator.faultline.svc";

/// Secret name -> key -> bytes.
pub type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// What the pods are started from.
pub struct Cluster<'a> {
    pub objs: &'a BTreeMap<String, Value>,
    pub secrets: &'a Secrets,
    pub api: &'a KubeApi,
}

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

/// Where a volume's files go: its host directory, their mode and group.
struct Dest<'a> {
    host: &'a Path,
    mode: u32,
    gid: Option<u32>,
}

/// A Secret's keys (all, or the items) into the volume.
fn secret_files(
    c: &Cluster,
    vol: &str,
    secret: &str,
    items: Option<&Value>,
    optional: bool,
    dest: &Dest,
) {
    let Some(data) = c.secrets.get(secret) else {
        assert!(
            optional,
            "volume {vol} needs Secret {secret}, which nobody makes"
        );
        return;
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
            .unwrap_or_else(|| panic!("Secret {secret} has no key {key} (volume {vol})"));
        write_file(&dest.host.join(path), bytes, dest.mode, dest.gid);
    }
}

/// The ConfigMap's data: rendered by the chart, or else published through the API (waited for,
/// as the kubelet waits before it starts the container).
fn config_map(c: &Cluster, vol: &str, name: &str) -> BTreeMap<String, String> {
    if let Some(cm) = c.objs.get(&format!("ConfigMap/{name}")) {
        return serde_json::from_value(cm["data"].clone()).expect("ConfigMap data");
    }
    let data = c.api.wait_config_map(name, Duration::from_secs(20));
    assert!(!data.is_empty(), "volume {vol}: ConfigMap {name} is empty");
    data
}

/// Each volume `container` of `pod` (scheduled on `node`) mounts, made under `dir`, as
/// (mountPath, host directory).
pub fn volumes(
    c: &Cluster,
    pod: &Value,
    container: &Value,
    node: &str,
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
        if let Some(s) = vol.get("secret") {
            let secret = s["secretName"].as_str().expect("secretName");
            let dest = Dest {
                host: &host,
                mode: mode(&s["defaultMode"], 0o644),
                gid: fs_group,
            };
            secret_files(c, name, secret, s.get("items"), false, &dest);
        } else if let Some(p) = vol.get("projected") {
            let file_mode = mode(&p["defaultMode"], 0o644);
            for src in p["sources"].as_array().expect("projected sources") {
                if let Some(s) = src.get("secret") {
                    let secret = s["name"].as_str().expect("projected secret name");
                    let optional = s["optional"] == true;
                    let dest = Dest {
                        host: &host,
                        mode: file_mode,
                        gid: fs_group,
                    };
                    secret_files(c, name, secret, s.get("items"), optional, &dest);
                } else if let Some(t) = src.get("serviceAccountToken") {
                    // The API server refuses expirationSeconds below 600.
                    let exp = t["expirationSeconds"].as_u64().unwrap_or(3600);
                    assert!(exp >= 600, "volume {name}: expirationSeconds {exp} < 600");
                    let audience = t["audience"]
                        .as_str()
                        .unwrap_or("https://kubernetes.default.svc.cluster.local");
                    let token = c.api.project(pod, node, audience);
                    let path = t["path"].as_str().expect("token path");
                    write_file(&host.join(path), token.as_bytes(), file_mode, fs_group);
                } else {
                    panic!("volume {name}: a projected source this test does not make: {src}");
                }
            }
        } else if let Some(cm) = vol.get("configMap") {
            let cm_name = cm["name"].as_str().expect("configMap name");
            for (k, v) in config_map(c, name, cm_name) {
                write_file(&host.join(k), v.as_bytes(), 0o644, fs_group);
            }
        } else if let Some(h) = vol.get("hostPath") {
            let path = h["path"].as_str().expect("hostPath path");
            if path == "/sys/fs/cgroup" {
                // The host's cgroup tree is the real thing here too.
                out.push((mount, PathBuf::from(path)));
                continue;
            }
        } else if vol.get("emptyDir").is_some() || vol.get("persistentVolumeClaim").is_some() {
            std::fs::create_dir_all(&host).expect("volume dir");
            if let Some(g) = fs_group {
                std::os::unix::fs::chown(&host, Some(0), Some(g)).expect("chown volume");
            }
        } else {
            panic!("volume {name}: a kind this test does not make: {vol}");
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
pub fn rewrite(value: &str, mounts: &[(String, PathBuf)], ports: &BTreeMap<u64, u16>) -> String {
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

pub struct Started {
    pub proc: Proc,
    /// The readiness probe's address and path.
    pub ready: (std::net::SocketAddr, String),
    /// Each mounted volume: (mountPath, host directory).
    pub mounts: Vec<(String, PathBuf)>,
}

/// Starts the first container of `pod` on `node` as the kubelet would (see the module doc).
pub fn start(
    c: &Cluster,
    what: &str,
    pod: &Value,
    node: &str,
    ports: &BTreeMap<u64, u16>,
    dir: &Path,
) -> Started {
    let ctr = &pod["containers"][0];
    let mounts = volumes(c, pod, ctr, node, dir);
    let command: Vec<&str> = ctr["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let exe_name = Path::new(command[0]).file_name().expect("exe name");
    // A copy the container's uid can reach whatever the checkout's permissions.
    let exe = dir.join(exe_name);
    std::fs::copy(binary(&exe_name.to_string_lossy()), &exe).expect("copy binary");

    let sc = &ctr["securityContext"];
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
    // A pod that automounts its token gets /var/run/secrets/kubernetes.io/serviceaccount (here
    // over a private /run, /var/run being a link to it).
    let service_account = match pod["automountServiceAccountToken"] == true {
        true => c.api.service_account_dir(dir).display().to_string(),
        false => String::new(),
    };

    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost {SERVICE_HOST}\n")).expect("hosts");
    let script = "mount --bind \"$0\" /etc/hosts || exit 1
        if [ -n \"$1\" ]; then
          sa=/run/secrets/kubernetes.io/serviceaccount
          mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p $sa && mount --bind \"$1\" $sa || exit 1
        fi
        shift
        exec setpriv \"$@\"";
    let mut argv: Vec<String> = vec![
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
        hosts.display().to_string(),
        service_account,
    ];
    argv.extend(setpriv);
    argv.push("env".into());
    argv.push("-i".into());
    argv.push("PATH=/usr/bin:/bin".into());
    // The kubelet gives every pod the API server's address.
    argv.push("KUBERNETES_SERVICE_HOST=127.0.0.1".into());
    argv.push(format!("KUBERNETES_SERVICE_PORT={}", c.api.addr.port()));
    for e in ctr["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().expect("env name");
        let value = if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            node.to_string()
        } else {
            rewrite(e["value"].as_str().expect("env value"), &mounts, ports)
        };
        argv.push(format!("{name}={value}"));
    }
    argv.push(exe.display().to_string());
    for a in ctr["args"].as_array().cloned().unwrap_or_default() {
        argv.push(rewrite(a.as_str().expect("arg"), &mounts, ports));
    }
    let proc = Proc::spawn(what, &require_tool("unshare", "util-linux"), &argv, dir);

    let probe = &ctr["readinessProbe"]["httpGet"];
    let port = match &probe["port"] {
        Value::Number(n) => n.as_u64().expect("probe port"),
        Value::String(name) => ctr["ports"]
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
        mounts,
    }
}
