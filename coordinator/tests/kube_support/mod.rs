//! A stand-in Kubernetes API for tests: a kube-rs client over a `tower-test` mock service whose
//! requests are answered from real API JSON (the PodList, NodeList, Pod and TokenReview files
//! next to this one, or what a test supplies), and recorded (method, path, body). Helpers panic
//! with a message.
#![allow(dead_code)]

pub mod identity;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_coordinator::kube::{KubeCluster, PodAccess};
use http::{Request, Response};
use kube::client::Body;
use tokio::task::JoinHandle;

pub const PODS_SHOP: &str = include_str!("pods-shop.json");
pub const PODS_KUBE_SYSTEM: &str = include_str!("pods-kube-system.json");
pub const NODES: &str = include_str!("nodes.json");

/// The container IDs (without `containerd://`) and UIDs of the pods in `pods-shop.json`.
pub fn shop_pod(name: &str) -> (String, String, String) {
    let list: serde_json::Value = serde_json::from_str(PODS_SHOP).expect("pods-shop.json");
    let items = list["items"].as_array().expect("items");
    let pod = items
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no pod {name} in pods-shop.json"));
    let id = |c: &str| {
        pod["status"]["containerStatuses"]
            .as_array()
            .and_then(|cs| cs.iter().find(|s| s["name"] == c))
            .and_then(|s| s["containerID"].as_str())
            .map(|s| s.trim_start_matches("containerd://").to_string())
            .unwrap_or_default()
    };
    (
        pod["metadata"]["uid"].as_str().expect("uid").to_string(),
        id("app"),
        id("istio-proxy"),
    )
}

/// A Kubernetes `Status` answer, as the API server sends for errors.
pub fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": {"kind": "pods"}, "code": code
    })
    .to_string()
}

/// One request the fake API received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: String,
}

type Responder = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// The fake API: every request's path and query, in order; answers come from the responder.
pub struct FakeApi {
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Every request in full, in order.
    pub full: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    /// A client whose requests `respond(path_and_query)` answers.
    pub fn start<F>(respond: F) -> (kube::Client, FakeApi)
    where
        F: Fn(&str) -> (u16, String) + Send + Sync + 'static,
    {
        FakeApi::start_full(move |seen: &Seen| respond(&seen.uri))
    }

    /// A client whose requests `respond(request)` answers (method, path and query, body).
    pub fn start_full<F>(respond: F) -> (kube::Client, FakeApi)
    where
        F: Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    {
        use http_body_util::BodyExt;
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let full = Arc::new(Mutex::new(Vec::new()));
        let (seen, seen_full) = (requests.clone(), full.clone());
        let respond: Arc<Responder> = Arc::new(respond);
        let task = tokio::spawn(async move {
            let mut handle = handle;
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                seen.lock().expect("requests").push(uri.clone());
                let method = req.method().to_string();
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = req
                    .into_body()
                    .collect()
                    .await
                    .expect("request body")
                    .to_bytes();
                let request = Seen {
                    method,
                    uri,
                    content_type,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                };
                seen_full.lock().expect("requests").push(request.clone());
                let (code, body) = respond(&request);
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
                    .expect("response");
                send.send_response(resp);
            }
        });
        (
            kube::Client::new(service, "default"),
            FakeApi {
                requests,
                full,
                task,
            },
        )
    }

    /// A cluster answering with `pods` per namespace (JSON PodLists; other namespaces are
    /// empty) and `nodes` (a JSON NodeList).
    pub fn cluster(pods: &[(&str, &str)], nodes: &str) -> (PodAccess, FakeApi) {
        let pods: BTreeMap<String, String> = pods
            .iter()
            .map(|(ns, json)| (ns.to_string(), json.to_string()))
            .collect();
        let nodes = nodes.to_string();
        let (client, api) = FakeApi::start(move |uri| {
            let path = uri.split('?').next().unwrap_or_default();
            if path == "/api/v1/nodes" {
                return (200, nodes.clone());
            }
            let ns = path
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|r| r.strip_suffix("/pods"));
            match ns {
                Some(ns) => (
                    200,
                    pods.get(ns).cloned().unwrap_or_else(|| {
                        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#.into()
                    }),
                ),
                None => (404, status_json(404, "NotFound", "the server could not find the requested resource")),
            }
        });
        (PodAccess::Cluster(Arc::new(KubeCluster::new(client))), api)
    }

    /// The shop cluster of the JSON files: pods in `shop` and `kube-system`, four nodes.
    pub fn shop() -> (PodAccess, FakeApi) {
        FakeApi::cluster(
            &[("shop", PODS_SHOP), ("kube-system", PODS_KUBE_SYSTEM)],
            NODES,
        )
    }

    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    /// Every request in full.
    pub fn seen_full(&self) -> Vec<Seen> {
        self.full.lock().expect("requests").clone()
    }
}
