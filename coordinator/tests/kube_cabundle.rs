//! The CA bundle ConfigMap agents mount, against a `tower-test` mock of the API server: the
//! server-side apply the coordinator sends, and the publisher keeping the ConfigMap equal to
//! the file through a broken write, a rotation, API errors and a hand edit (paused time).

mod common;
mod kube_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use faultline_coordinator::kube::cabundle::{self, BundleError, REFRESH};
use faultline_coordinator::kube::{KubeCluster, NamespacedName};
use kube_support::{status_json, FakeApi, Seen};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn target() -> NamespacedName {
    "faultline/faultline-ca".parse().expect("target")
}

/// The ConfigMap bodies of every apply, and a switch that makes the API refuse.
struct Api {
    applied: Arc<Mutex<Vec<Value>>>,
    forbidden: Arc<Mutex<bool>>,
    api: FakeApi,
    cluster: Arc<KubeCluster>,
}

fn api() -> Api {
    let applied = Arc::new(Mutex::new(Vec::new()));
    let forbidden = Arc::new(Mutex::new(false));
    let (a, f) = (applied.clone(), forbidden.clone());
    let (client, api) = FakeApi::start_full(move |req: &Seen| {
        if *f.lock().expect("flag") {
            return (
                403,
                status_json(
                    403,
                    "Forbidden",
                    "configmaps \"faultline-ca\" is forbidden: User \
                     \"system:serviceaccount:faultline:faultline-coordinator\" cannot patch \
                     resource \"configmaps\" in API group \"\" in the namespace \"faultline\"",
                ),
            );
        }
        let body: Value = serde_json::from_str(&req.body).expect("apply body is JSON");
        a.lock().expect("applied").push(body.clone());
        (200, body.to_string())
    });
    Api {
        applied,
        forbidden,
        api,
        cluster: Arc::new(KubeCluster::new(client)),
    }
}

impl Api {
    fn bundles(&self) -> Vec<String> {
        self.applied
            .lock()
            .expect("applied")
            .iter()
            .map(|cm| cm["data"]["ca.pem"].as_str().expect("ca.pem").to_string())
            .collect()
    }
}

#[tokio::test]
async fn the_bundle_is_a_server_side_apply_of_the_ca_file_and_nothing_else() {
    let env = Env::with_agents(&[]);
    let ca = env.certs().join("ca.pem");
    let api = api();
    let bundle = cabundle::read_bundle(&ca).expect("bundle");
    cabundle::publish(api.cluster.as_ref(), &target(), &bundle)
        .await
        .expect("publish");
    let seen = api.api.seen_full();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PATCH");
    let (path, query) = seen[0].uri.split_once('?').expect("query");
    assert_eq!(path, "/api/v1/namespaces/faultline/configmaps/faultline-ca");
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort();
    assert_eq!(params, ["fieldManager=faultline-coordinator", "force=true"]);
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    let cm = api.applied.lock().expect("applied")[0].clone();
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "faultline-ca");
    assert_eq!(cm["metadata"]["namespace"], "faultline");
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 1, "only ca.pem: {data:?}");
    assert_eq!(data["ca.pem"], std::fs::read_to_string(&ca).expect("ca"));
    // The key's file is never a bundle.
    let err = cabundle::read_bundle(&env.certs().join("ca-key.pem")).expect_err("a key");
    assert!(matches!(err, BundleError::File(_)), "{err}");
    assert!(
        err.to_string().contains("no CERTIFICATE block found"),
        "{err}"
    );

    *api.forbidden.lock().expect("flag") = true;
    let err = cabundle::publish(api.cluster.as_ref(), &target(), &bundle)
        .await
        .expect_err("forbidden");
    let text = err.to_string();
    assert!(text.starts_with("--publish-ca-bundle faultline/faultline-ca: applying ConfigMap faultline/faultline-ca: configmaps \"faultline-ca\" is forbidden"), "{text}");
    assert!(
        text.contains("needs create, and get and patch on the CA bundle ConfigMap"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_publisher_follows_the_file_through_breakage_rotation_and_api_errors() {
    let env = Env::with_agents(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("ca.pem");
    let old = std::fs::read_to_string(env.certs().join("ca.pem")).expect("ca");
    let new_ca = Env::with_agents(&[]);
    let rotated = format!(
        "{old}{}",
        std::fs::read_to_string(new_ca.certs().join("ca.pem")).expect("ca")
    );
    std::fs::write(&file, &old).expect("write");
    let api = api();
    let stop = CancellationToken::new();
    let task = tokio::spawn(cabundle::run(
        api.cluster.clone(),
        target(),
        file.clone(),
        stop.clone(),
    ));
    let settle = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    settle(1).await;
    assert_eq!(
        api.bundles(),
        std::slice::from_ref(&old),
        "published at start"
    );
    settle(60).await;
    assert_eq!(
        api.bundles().len(),
        1,
        "an unchanged file is not applied again at once"
    );

    // A half-written file is never published.
    std::fs::write(&file, &old[..old.len() / 2]).expect("write");
    settle(60).await;
    assert_eq!(api.bundles().len(), 1, "{:?}", api.bundles());

    // Rotation: old and new CA bundled; published within one check.
    std::fs::write(&file, &rotated).expect("write");
    settle(11).await;
    assert_eq!(api.bundles().last(), Some(&rotated));
    let applies = api.bundles().len();

    // The API refuses for a while: retried with backoff, then it lands.
    *api.forbidden.lock().expect("flag") = true;
    std::fs::write(&file, &old).expect("write");
    settle(120).await;
    assert_eq!(
        api.bundles().len(),
        applies,
        "nothing lands while forbidden"
    );
    let attempts = api.api.seen_full().len();
    *api.forbidden.lock().expect("flag") = false;
    settle(31).await;
    assert_eq!(api.bundles().last(), Some(&old));
    assert!(attempts > applies + 3, "retried: {attempts} requests");

    // Unchanged, it is applied again every REFRESH (a hand edit or deletion comes back).
    let before = api.bundles().len();
    settle(REFRESH.as_secs() + 11).await;
    assert_eq!(api.bundles().len(), before + 1);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the publisher stops when told")
        .expect("task");
}
