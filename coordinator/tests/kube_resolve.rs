//! The Kubernetes port against a `tower-test` mock of the API server answering real API JSON:
//! the requests it makes (selectors, paging), pods and nodes as the planner sees them, API
//! errors that tell the operator what to fix, and kubeconfig loading.

mod kube_support;

use faultline_coordinator::kube::{resolve, Cluster, KubeCluster, KubeSource, PodAccess};
use faultline_core::experiment::{ContainerView, PodSelector};
use kube_support::{shop_pod, status_json, FakeApi, PODS_SHOP};

fn shop_selector() -> PodSelector {
    PodSelector {
        namespaces: vec!["kube-system".into(), "shop".into()],
        label_selector: Some("app=checkout,tier in (web,api)".into()),
        field_selector: Some("spec.nodeName!=node-z".into()),
        containers: vec![],
    }
}

#[tokio::test]
async fn pods_and_nodes_arrive_as_the_planner_needs_them() {
    let (access, api) = FakeApi::shop();
    let PodAccess::Cluster(cluster) = access else {
        panic!("expected a cluster")
    };
    let view = resolve(cluster.as_ref(), &shop_selector())
        .await
        .expect("resolve");

    // The selectors went to the API server, URL-encoded, with a page size (the lists run
    // concurrently, so in any order).
    let mut seen = api.seen();
    seen.sort();
    assert_eq!(
        seen,
        [
            "/api/v1/namespaces/kube-system/pods?&fieldSelector=spec.nodeName%21%3Dnode-z&labelSelector=app%3Dcheckout%2Ctier+in+%28web%2Capi%29&limit=500",
            "/api/v1/namespaces/shop/pods?&fieldSelector=spec.nodeName%21%3Dnode-z&labelSelector=app%3Dcheckout%2Ctier+in+%28web%2Capi%29&limit=500",
            "/api/v1/nodes?&limit=500",
        ]
    );
    assert_eq!(view.pods.len(), 9);
    let a = view
        .pods
        .iter()
        .find(|p| p.name == "checkout-7d4f9b6c5-abcde")
        .expect("pod abcde");
    let (uid, app, proxy) = shop_pod("checkout-7d4f9b6c5-abcde");
    assert_eq!(a.namespace, "shop");
    assert_eq!(a.uid, uid);
    assert_eq!(a.node.as_deref(), Some("node-a"));
    assert_eq!(a.phase, "Running");
    assert!(!a.terminating);
    assert_eq!(app.len(), 64, "a containerd ID without its prefix");
    assert_eq!(
        a.containers,
        [
            ContainerView {
                name: "app".into(),
                id: app,
                running: true,
                state: "running".into()
            },
            ContainerView {
                name: "istio-proxy".into(),
                id: proxy,
                running: true,
                state: "running".into()
            },
        ]
    );

    let find = |name: &str| {
        view.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("pod {name}"))
    };
    let pending = find("checkout-7d4f9b6c5-pqrst");
    assert_eq!(pending.node, None);
    assert_eq!(pending.phase, "Pending");
    assert_eq!(pending.containers[0].state, "no status yet");
    assert_eq!(pending.containers[0].id, "");
    let crashing = find("checkout-7d4f9b6c5-uvwxy");
    assert!(!crashing.containers[0].running);
    assert_eq!(crashing.containers[0].state, "waiting: CrashLoopBackOff");
    assert!(find("checkout-7d4f9b6c5-zzzzz").terminating);
    assert_eq!(find("coredns-5d78c9869d-x2x7q").namespace, "kube-system");

    let nodes: Vec<(String, bool)> = view
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ready))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node-a".to_string(), true),
            ("node-b".to_string(), true),
            ("node-c".to_string(), true),
            ("node-d".to_string(), false)
        ]
    );
    assert_eq!(
        view.nodes[0]
            .labels
            .get("kubernetes.io/hostname")
            .map(String::as_str),
        Some("node-a")
    );
}

#[tokio::test]
async fn long_lists_are_read_page_by_page() {
    let list: serde_json::Value = serde_json::from_str(PODS_SHOP).expect("json");
    let items = list["items"].as_array().expect("items").clone();
    let page = |items: &[serde_json::Value], cont: &str| {
        serde_json::json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "48290", "continue": cont},
            "items": items
        })
        .to_string()
    };
    let (first, second) = (
        page(&items[..3], "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyOTB9"),
        page(&items[3..], ""),
    );
    let (client, api) = FakeApi::start(move |uri| {
        if uri.contains("continue=") {
            (200, second.clone())
        } else {
            (200, first.clone())
        }
    });
    let pods = KubeCluster::new(client)
        .pods("shop", Some("app=checkout"), None)
        .await
        .expect("pods");
    assert_eq!(pods.len(), items.len());
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1].contains("continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyOTB9"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn api_errors_say_what_to_fix() {
    let (client, _api) = FakeApi::start(|_| {
        (
            403,
            status_json(
                403,
                "Forbidden",
                "pods is forbidden: User \"system:serviceaccount:faultline:faultline-coordinator\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"",
            ),
        )
    });
    let err = KubeCluster::new(client)
        .pods("shop", None, None)
        .await
        .expect_err("forbidden");
    assert_eq!(
        err.to_string(),
        "listing pods in namespace shop: pods is forbidden: User \"system:serviceaccount:faultline:faultline-coordinator\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\" (HTTP 403; the coordinator's service account needs get, list and watch on pods and nodes: see daemonset/manifests/10-rbac.yaml)"
    );

    let (client, _api) = FakeApi::start(|_| {
        (
            500,
            status_json(500, "InternalError", "etcdserver: request timed out"),
        )
    });
    let err = KubeCluster::new(client).nodes().await.expect_err("500");
    assert_eq!(
        err.to_string(),
        "listing nodes: etcdserver: request timed out (HTTP 500 InternalError)"
    );
}

#[tokio::test]
async fn kubeconfig_files_are_loaded_and_bad_ones_name_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("config");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\nusers:\n- name: test\n  user:\n    token: abc\n",
    )
    .expect("write");
    let bad = dir.path().join("broken");
    std::fs::write(&bad, "clusters: [this is: not yaml").expect("write");

    // KUBECONFIG-style lists are split (empty entries skipped) and merged.
    let other = dir.path().join("other");
    let list = format!("{}::{}", good.display(), other.display());
    let source = KubeSource::detect(Some(&list));
    assert_eq!(source, KubeSource::Kubeconfig(vec![good.clone(), other]));
    let source = KubeSource::detect(Some(good.to_str().expect("utf-8")));
    match source.connect().await.expect("a client") {
        PodAccess::Cluster(_) => {}
        other => panic!("expected a cluster, got {other:?}"),
    }

    let err = KubeSource::Kubeconfig(vec![bad.clone()])
        .connect()
        .await
        .expect_err("broken");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("--kubeconfig: {}: ", bad.display())),
        "{msg}"
    );
    let missing = dir.path().join("missing");
    let err = KubeSource::Kubeconfig(vec![missing.clone()])
        .connect()
        .await
        .expect_err("missing");
    assert!(
        err.to_string()
            .starts_with(&format!("--kubeconfig: {}: ", missing.display())),
        "{err}"
    );
    match KubeSource::None.connect().await.expect("none") {
        PodAccess::Unavailable(why) => {
            assert!(why.contains("neither --kubeconfig nor KUBECONFIG"), "{why}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn the_coordinator_refuses_to_start_with_a_kubeconfig_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-kubeconfig");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultline-coordinator"))
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "none"])
        .arg("--certs-dir")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--kubeconfig")
        .arg(&missing)
        .output()
        .expect("run faultline-coordinator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: --kubeconfig: {}: ", missing.display())),
        "{stderr}"
    );
}
