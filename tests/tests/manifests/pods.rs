//! The chart's pods, started on this host the way the kubelet would start them (see
//! `kubelet.rs`) against a stand-in Kubernetes API server (`kube_api.rs`): the coordinator with
//! its Secrets and its service-account token, the agents with nothing but the CA bundle the
//! coordinator published and the ServiceAccount token the kubelet projected. Both must pass
//! their readiness probes and each agent must enroll and hold a session under its own node's
//! identity: the Secret layouts, file names, flags, env names, ports, probes, RBAC'd calls and
//! the enrollment all fit. A second node's agent enrolls with no change anywhere; an agent that
//! claims another node with its pod's token is refused.
//!
//! Not simulated: the read-only root filesystem, seccomp and AppArmor, and the cluster network
//! (ports are remapped to free loopback ports). Needs root (setpriv, unshare, mount, chown).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use faultline_tests::procs::{run, Proc};
use faultline_tests::stack::{agents_connected, wait_ready};
use faultline_tests::{binary, free_port};
use serde::Deserialize;
use serde_json::Value;

use super::chart::render;
use super::kube_api::KubeApi;
use super::kubelet::{start, Cluster, Secrets, Started, SERVICE_HOST};

/// The Secrets `faultctl certs init --kubernetes` prints, decoded.
fn faultctl_secrets(certs: &Path) -> Secrets {
    let out = Command::new(binary("faultctl"))
        .args(["certs", "init", "--dir"])
        .arg(certs)
        .args(["--san", SERVICE_HOST, "--kubernetes"])
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
/// ca.crt), made from the same CA. The issuer here is that CA itself, not an intermediate.
fn cert_manager_secrets(certs: &Path) -> Secrets {
    let read = |f: &str| std::fs::read(certs.join(f)).expect("cert file");
    let pair = |cert: &str, key: &str| {
        BTreeMap::from([
            ("tls.crt".to_string(), read(cert)),
            ("tls.key".to_string(), read(key)),
            ("ca.crt".to_string(), read("ca.pem")),
        ])
    };
    Secrets::from([
        (
            "faultline-coordinator-tls-cm".to_string(),
            pair("coordinator.pem", "coordinator-key.pem"),
        ),
        ("faultline-issuer".to_string(), pair("ca.pem", "ca-key.pem")),
    ])
}

/// Free loopback ports for every container port of both workloads.
fn ports_for(objs: &BTreeMap<String, Value>) -> BTreeMap<u64, u16> {
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
    // The agents dial the Service ports, which target the coordinator's container ports.
    for target in ["grpc", "enroll"] {
        let svc = &objs["Service/faultline-coordinator"]["spec"]["ports"];
        let port = svc
            .as_array()
            .expect("service ports")
            .iter()
            .find(|p| p["targetPort"] == target)
            .unwrap_or_else(|| panic!("no {target} Service port"))["port"]
            .as_u64()
            .expect("port");
        assert!(
            ports.contains_key(&port),
            "the Service's {target} port is the container's (the agents' URLs name it)"
        );
    }
    ports
}

fn mkdir(d: &Path) {
    std::fs::create_dir_all(d).expect("mkdir");
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn wait_probe(s: &Started, timeout: Duration) -> Duration {
    assert_eq!(s.ready.1, "/readyz");
    wait_ready(&s.proc, s.ready.0, timeout)
}

/// The agent made its key on its node (the state dir, 0600) and no volume from the cluster
/// holds a private key.
fn check_agent_identity(agent: &Started, node: &str) {
    let host = |mount: &str| {
        agent
            .mounts
            .iter()
            .find(|(m, _)| m == mount)
            .unwrap_or_else(|| panic!("no mount {mount}"))
            .1
            .clone()
    };
    let key = host("/var/lib/faultline").join("identity/agent-key.pem");
    let meta = std::fs::metadata(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        key.display()
    );
    for (mount, dir) in &agent.mounts {
        if mount == "/var/lib/faultline" || mount == "/sys/fs/cgroup" {
            continue;
        }
        for e in std::fs::read_dir(dir).expect("volume dir").flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !text.contains("PRIVATE KEY"),
                "{node}: the cluster gave the agent a key in {mount}/{}",
                e.file_name().to_string_lossy()
            );
        }
    }
    assert!(
        agent
            .proc
            .log_text()
            .contains(&format!("enrolled as agent/{node}")),
        "{}",
        agent.proc.log_text()
    );
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
    let api = KubeApi::start(dir, "faultline");
    let cluster = Cluster {
        objs: &objs,
        secrets: &secrets,
        api: &api,
    };
    let ports = ports_for(&objs);

    let cdir = dir.join("coordinator");
    mkdir(&cdir);
    let coord_pod = &objs["Deployment/faultline-coordinator"]["spec"]["template"]["spec"];
    let coordinator = start(&cluster, "coordinator", coord_pod, "node-c", &ports, &cdir);
    wait_probe(&coordinator, Duration::from_secs(20));

    let agent_pod = &objs["DaemonSet/faultline-agent"]["spec"]["template"]["spec"];
    let adir = dir.join("agent-node-a");
    mkdir(&adir);
    let agent = start(&cluster, "agent-node-a", agent_pod, "node-a", &ports, &adir);
    let took = wait_probe(&agent, Duration::from_secs(30));
    println!("{sets:?}: the agent pod was ready {took:?} after the coordinator pod");
    check_agent_identity(&agent, "node-a");

    // A node that joins later: the same pod template, nothing changed anywhere.
    let mut ports_b = ports.clone();
    let metrics = agent_pod["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .expect("agent metrics port");
    ports_b.insert(metrics, free_port());
    let bdir = dir.join("agent-node-b");
    mkdir(&bdir);
    let agent_b = start(
        &cluster,
        "agent-node-b",
        agent_pod,
        "node-b",
        &ports_b,
        &bdir,
    );
    wait_probe(&agent_b, Duration::from_secs(30));
    check_agent_identity(&agent_b, "node-b");

    // The coordinator ran as its non-root uid without capabilities, and counts both agents.
    let status = std::fs::read_to_string(format!("/proc/{}/status", coordinator.proc.pid()))
        .expect("coordinator status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(uid_line.contains("65532"), "{uid_line}");
    let caps = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff");
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    assert_eq!(agents_connected(coordinator.ready.0), 2.0);
    let calls = api.calls();
    for want in [
        "POST /apis/authentication.k8s.io/v1/tokenreviews",
        "GET /api/v1/namespaces/faultline/pods/faultline-agent-node-a-0",
        "PATCH /api/v1/namespaces/faultline/configmaps/faultline-ca",
    ] {
        assert!(calls.iter().any(|c| c == want), "no {want}: {calls:?}");
    }

    // node-a's pod token, used by an agent that says it is node-c: refused, and it exits.
    let urls = Urls::of(&objs, &ports);
    let state = dir.join("impostor/state");
    let log = refused_agent(&urls, &credential_of(&agent), "node-c", &state, dir);
    assert!(
        log.contains("is on node node-a, not node-c"),
        "the refusal names both nodes:\n{log}"
    );
    assert!(!dir.join("impostor/state/identity/agent.pem").exists());
    assert_eq!(agents_connected(coordinator.ready.0), 2.0);

    // Revoke node-b: its session is cut. Its pod (a container restart: same token file, which
    // the kubelet keeps refreshing, same state dir) cannot enroll again; a new pod on that
    // node can.
    let certs_dir = certs.display().to_string();
    let (ok, out) = run(
        &binary("faultctl"),
        &[
            "--coordinator",
            &urls.grpc,
            "--certs-dir",
            &certs_dir,
            "agents",
            "revoke",
            "node-b",
            "--reason",
            "test",
        ],
    );
    assert!(ok, "faultctl agents revoke: {out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while agents_connected(coordinator.ready.0) != 1.0 {
        assert!(
            Instant::now() < deadline,
            "node-b's session outlived its revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state_b = mount_of(&agent_b, "/var/lib/faultline");
    let credential_b = credential_of(&agent_b);
    drop(agent_b);
    let log = refused_agent(&urls, &credential_b, "node-b", &state_b, dir);
    assert!(
        log.contains("node node-b was revoked by admin/admin")
            && log.contains("it may enroll again only from an agent pod created after that"),
        "{log}"
    );
    // Pod creation times have whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let agent_b = start(
        &cluster,
        "agent-node-b-new-pod",
        agent_pod,
        "node-b",
        &ports_b,
        &bdir,
    );
    wait_probe(&agent_b, Duration::from_secs(30));
    assert_eq!(agents_connected(coordinator.ready.0), 2.0);
}

/// The coordinator's Service URLs as seen from this host.
struct Urls {
    grpc: String,
    enroll: String,
}

impl Urls {
    fn of(objs: &BTreeMap<String, Value>, ports: &BTreeMap<u64, u16>) -> Urls {
        let url = |name: &str| {
            let port = objs["Service/faultline-coordinator"]["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["port"].as_u64())
                .unwrap_or_else(|| panic!("no Service port {name}"));
            format!("https://localhost:{}", ports[&port])
        };
        Urls {
            grpc: url("grpc"),
            enroll: url("enroll"),
        }
    }
}

fn mount_of(s: &Started, mount: &str) -> PathBuf {
    s.mounts
        .iter()
        .find(|(m, _)| m == mount)
        .unwrap_or_else(|| panic!("no mount {mount}"))
        .1
        .clone()
}

/// The token and CA files an agent pod was given.
fn credential_of(pod: &Started) -> (PathBuf, PathBuf) {
    (
        mount_of(pod, "/var/run/secrets/faultline").join("token"),
        mount_of(pod, "/etc/faultline/ca").join("ca.pem"),
    )
}

/// Runs an agent as `node` with `(token, ca)`; it must be refused and exit. Its log.
fn refused_agent(
    urls: &Urls,
    (token, ca): &(PathBuf, PathBuf),
    node: &str,
    state: &Path,
    dir: &Path,
) -> String {
    let env = [
        ("FAULTLINE_NODE_NAME", node.to_string()),
        ("FAULTLINE_COORDINATOR", urls.grpc.clone()),
        ("FAULTLINE_ENROLL_URL", urls.enroll.clone()),
        (
            "FAULTLINE_KUBERNETES_TOKEN_FILE",
            token.display().to_string(),
        ),
        ("FAULTLINE_CA", ca.display().to_string()),
        ("FAULTLINE_STATE_DIR", state.display().to_string()),
        ("FAULTLINE_METRICS_LISTEN", "none".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let name = format!("refused-{node}");
    let mut agent = Proc::spawn_env(&name, &binary("faultline-agent"), &[], &env, dir);
    let exit = agent.wait(Duration::from_secs(20));
    let log = agent.log_text();
    assert!(!exit.success(), "{node} was not refused:\n{log}");
    log
}

#[test]
fn the_rendered_pods_start_with_faultctl_secrets_and_agents_enroll_by_themselves() {
    run_install(&[], false);
}

#[test]
fn the_rendered_pods_start_with_cert_manager_secrets_and_agents_enroll_by_themselves() {
    run_install(&["tls.source=certManager"], true);
}
