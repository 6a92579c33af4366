//! The workloads as shipped: what the agent DaemonSet and the coordinator Deployment hold, least
//! privilege RBAC, and config files the binaries accept.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{object, yaml_docs};

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e.clone()))
        .collect()
}

#[test]
fn the_agent_daemonset_has_what_the_agent_needs_and_no_more() {
    let f = "daemonset/manifests/40-agent.yaml";
    let ds = object(f, "DaemonSet", "faultline-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64() >= Some(60));
    let class = pod["priorityClassName"]
        .as_str()
        .expect("priorityClassName");
    let pc = object(
        "daemonset/manifests/20-priorityclass.yaml",
        "PriorityClass",
        class,
    );
    assert!(pc["value"].as_i64() >= Some(1_000_000));
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "SYS_ADMIN", "KILL", "SYS_PTRACE"])
    );
    let env = env_of(c);
    assert_eq!(
        env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env["FAULTLINE_COORDINATOR"]["value"],
        "https://faultline-coordinator.faultline.svc:7443"
    );
    assert_eq!(
        env["FAULTLINE_ENROLL_URL"]["value"],
        "https://faultline-coordinator.faultline.svc:7444"
    );
    assert!(
        !env.contains_key("FAULTLINE_CERTS_DIR"),
        "agents have no certificate files"
    );
    let metrics = env["FAULTLINE_METRICS_LISTEN"]["value"]
        .as_str()
        .expect("metrics");
    let port: u64 = metrics
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_u64(), Some(port));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"].as_u64(), Some(port));
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"][k][r].is_string(),
                "resources.{k}.{r} missing"
            );
        }
    }
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().expect("path").to_string(),
                m["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    let host_paths: BTreeMap<String, String> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_string(),
                v["hostPath"]["path"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(host_paths[&mounts["/sys/fs/cgroup"]], "/sys/fs/cgroup");
    let state = env["FAULTLINE_STATE_DIR"]["value"]
        .as_str()
        .expect("state dir");
    assert_eq!(host_paths[&mounts[state]], "/var/lib/faultline");
    // Its credential and trust: the projected token and the CA bundle, under the paths the
    // env names.
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let token = env["FAULTLINE_KUBERNETES_TOKEN_FILE"]["value"]
        .as_str()
        .expect("token file");
    let (dir, file) = token.rsplit_once('/').expect("a path");
    let sat = &volume(&mounts[dir])["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sat["path"], file);
    assert_eq!(sat["audience"], "faultline");
    let ca = env["FAULTLINE_CA"]["value"].as_str().expect("ca");
    let (dir, _) = ca.rsplit_once('/').expect("a path");
    assert_eq!(volume(&mounts[dir])["configMap"]["name"], "faultline-ca");

    // The shipped agent config is one the agent accepts.
    let cm = object(f, "ConfigMap", "faultline-agent-config");
    let toml = cm["data"]["agent.toml"].as_str().expect("agent.toml");
    let agent = faultline_agent::config::file::AgentFile::from_toml(toml)
        .unwrap_or_else(|e| panic!("{f}: agent.toml is refused by the agent: {e}"));

    // The agent enforces the coordinator's protected namespaces on its own, reading pods'
    // namespaces from the kubelet's log directories, mounted read-only from the host.
    let cm = object(
        "daemonset/manifests/30-coordinator.yaml",
        "ConfigMap",
        "faultline-coordinator-config",
    );
    let policy = faultline_coordinator::config::parse_policy(
        cm["data"]["coordinator.toml"]
            .as_str()
            .expect("coordinator.toml"),
    )
    .expect("coordinator.toml");
    assert_eq!(agent.protected.namespaces, policy.protected_namespaces);
    let logs = agent.protected.pod_logs_dir.display().to_string();
    assert_eq!(host_paths[&mounts[&logs]], "/var/log/pods");
    let read_only = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["mountPath"] == logs.as_str() && m["readOnly"] == true);
    assert!(read_only, "{logs} is mounted read-only");
    // container-kill (issue 13) reads the kubelet's container log links, mounted read-only.
    let links = agent.protected.container_logs_dir.display().to_string();
    assert_eq!(host_paths[&mounts[&links]], "/var/log/containers");
    assert!(
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == links.as_str() && m["readOnly"] == true),
        "{links} is mounted read-only"
    );
}

#[test]
fn the_coordinator_deployment_and_rbac_are_least_privilege() {
    let f = "daemonset/manifests/30-coordinator.yaml";
    let d = object(f, "Deployment", "faultline-coordinator");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64() > Some(0));
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--listen=0.0.0.0:7443"), "{args:?}");
    assert!(args.contains(&"--metrics-listen=0.0.0.0:9466"), "{args:?}");
    assert!(args.contains(&"--enroll-listen=0.0.0.0:7444"), "{args:?}");
    let claim = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .expect("a PVC for the store");
    object(f, "PersistentVolumeClaim", claim);
    let svc = object(f, "Service", "faultline-coordinator");
    let ports: Vec<u64> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, [7443, 7444, 9466]);

    // The shipped policy is one the coordinator accepts, with Faultline's own namespace
    // protected.
    let cm = object(f, "ConfigMap", "faultline-coordinator-config");
    let policy = faultline_coordinator::config::parse_policy(
        cm["data"]["coordinator.toml"]
            .as_str()
            .expect("coordinator.toml"),
    )
    .unwrap_or_else(|e| panic!("{f}: coordinator.toml is refused by the coordinator: {e}"));
    assert!(policy
        .protected_namespaces
        .contains(&"faultline".to_string()));
    assert!(policy
        .protected_namespaces
        .contains(&"kube-system".to_string()));

    // RBAC: read-only pods and nodes and TokenReviews for the coordinator, and in its
    // namespace the one ConfigMap it publishes; nothing for the agent.
    let rbac = yaml_docs("daemonset/manifests/10-rbac.yaml");
    let role = rbac
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
        ])
    );
    let ns_role = rbac.iter().find(|d| d["kind"] == "Role").expect("a Role");
    assert_eq!(ns_role["metadata"]["namespace"], "faultline");
    assert_eq!(
        ns_role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["faultline-ca"], "verbs": ["get", "patch"]}
        ])
    );
    assert!(
        args.contains(&"--publish-ca-bundle=faultline/faultline-ca"),
        "the Role names the ConfigMap the coordinator writes: {args:?}"
    );
    let bound: Vec<Value> = rbac
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .flat_map(|b| b["subjects"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        bound.iter().all(|s| s["name"] == "faultline-coordinator"),
        "{bound:?}"
    );
}
