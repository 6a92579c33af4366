//! Agent identity in the install as shipped: no rendering of the chart (default, cert-manager,
//! other options) and no file in daemonset/manifests mounts a Secret into the agent pod, names
//! an agent key or lists a node; the agent gets only the published CA bundle and a projected
//! token for the audience `faultline`, and the coordinator only the RBAC enrollment needs.

use serde_json::Value;

use super::chart::{files_under, render, template};
use super::root;

/// Every Secret the pod template refers to: volumes, projected sources, env.
fn secrets_of(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in pod["volumes"].as_array().cloned().unwrap_or_default() {
        if let Some(n) = v["secret"]["secretName"].as_str() {
            out.push(n.to_string());
        }
        for s in v["projected"]["sources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(n) = s["secret"]["name"].as_str() {
                out.push(n.to_string());
            }
        }
    }
    for c in pod["containers"].as_array().cloned().unwrap_or_default() {
        for e in c["env"].as_array().cloned().unwrap_or_default() {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                out.push(n.to_string());
            }
        }
        for e in c["envFrom"].as_array().cloned().unwrap_or_default() {
            if let Some(n) = e["secretRef"]["name"].as_str() {
                out.push(n.to_string());
            }
        }
    }
    out
}

/// Words of `text` that name an agent key file (`agent-<node>-key...`).
fn agent_key_names(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "\"',:[]{}".contains(c))
        .filter(|w| {
            w.find("agent-")
                .is_some_and(|i| w[i + "agent-".len()..].contains("-key"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn agents_mount_no_key_and_no_node_is_listed_anywhere() {
    let renderings = [
        ("faultline", vec![]),
        ("chaos", vec!["tls.source=certManager"]),
        (
            "faultline",
            vec![
                "namespace.create=true",
                "monitoring.podMonitor.enabled=true",
            ],
        ),
    ];
    let mut texts: Vec<(String, String)> = renderings
        .iter()
        .map(|(ns, sets)| {
            let out = template(ns, sets);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                format!("helm template -n {ns} {sets:?}"),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect();
    for (name, text) in files_under(&root().join("daemonset/manifests")) {
        texts.push((format!("daemonset/manifests/{name}"), text));
    }
    for (what, text) in &texts {
        assert!(!text.contains("agentNodes"), "{what} names agentNodes");
        assert_eq!(agent_key_names(text), Vec::<String>::new(), "{what}");
        assert!(
            !text.contains("spiffe://faultline/agent/"),
            "{what} issues an agent certificate"
        );
    }
    // Spot-check the scanner on what the old chart rendered.
    assert_eq!(
        agent_key_names("  - key: tls.key\n    path: agent-node-a-key.pem"),
        ["agent-node-a-key.pem"]
    );

    for (ns, sets) in &renderings {
        let objs = render(ns, sets);
        let pod = &objs["DaemonSet/faultline-agent"]["spec"]["template"]["spec"];
        assert_eq!(
            secrets_of(pod),
            Vec::<String>::new(),
            "{sets:?}: the agent mounts a Secret"
        );
        let ds = serde_json::to_string(&objs["DaemonSet/faultline-agent"]).expect("JSON");
        assert!(!ds.contains("tls.key"), "{sets:?}: {ds}");
        // What it does mount: the published CA bundle and a token for audience faultline, not
        // the API server's own token.
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["serviceAccountName"], "faultline-agent");
        let volumes = pod["volumes"].as_array().expect("volumes");
        let ca = volumes
            .iter()
            .find(|v| v["name"] == "ca")
            .expect("ca volume");
        assert_eq!(ca["configMap"]["name"], "faultline-ca");
        let token = volumes
            .iter()
            .find(|v| v["name"] == "token")
            .expect("token volume");
        let sources = token["projected"]["sources"].as_array().expect("sources");
        assert_eq!(sources.len(), 1, "{sources:?}");
        let sat = &sources[0]["serviceAccountToken"];
        assert_eq!(sat["audience"], "faultline");
        assert_eq!(sat["expirationSeconds"], 600);
        // Any ConfigMap an agent mounts holds no key either.
        for v in volumes {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                if let Some(obj) = objs.get(&format!("ConfigMap/{cm}")) {
                    assert!(!obj.to_string().contains("PRIVATE KEY"), "{cm}");
                }
            }
        }
        // The coordinator may review tokens and read the pod they are bound to.
        let rules = objs["ClusterRole/faultline-coordinator"]["rules"]
            .as_array()
            .expect("rules")
            .clone();
        assert!(
            rules.iter().any(
                |r| r["apiGroups"] == serde_json::json!(["authentication.k8s.io"])
                    && r["resources"] == serde_json::json!(["tokenreviews"])
                    && r["verbs"] == serde_json::json!(["create"])
            ),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|r| r["resources"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from("pods")))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|a| a.contains(&Value::from("get")))),
            "{rules:?}"
        );
        let role = &objs["Role/faultline-coordinator"];
        assert_eq!(role["metadata"]["namespace"], *ns);
        assert!(
            role.to_string()
                .contains("\"resourceNames\":[\"faultline-ca\"]"),
            "{role}"
        );
    }
}
