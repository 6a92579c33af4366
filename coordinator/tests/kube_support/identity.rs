//! The fake API for Kubernetes enrollment: TokenReviews answered per token and pods per name,
//! from the recorded TokenReview and Pod of the agent on node-a, changed by each test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_coordinator::kube::{KubeCluster, PodAccess};
use serde_json::{json, Value};

use super::{status_json, FakeApi, Seen};

pub const TOKENREVIEW: &str = include_str!("tokenreview-faultline-agent.json");
pub const POD: &str = include_str!("pod-faultline-agent.json");
/// The pod of the recordings, its UID and the token bound to it.
pub const POD_NAME: &str = "faultline-agent-7xk2p";
pub const POD_UID: &str = "5c0b7f4e-8a1d-4c2b-9f63-2e4a1d7b9c10";
pub const TOKEN_A: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vZGUtYSJ9.agent-on-node-a.sig";
pub const REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The recorded TokenReview answer (authenticated, bound to the node-a pod), changed by `f`.
pub fn review(f: impl FnOnce(&mut Value)) -> Value {
    let mut v: Value = serde_json::from_str(TOKENREVIEW).expect("tokenreview JSON");
    f(&mut v);
    v
}

/// What the API server answers for a token it does not accept: no `authenticated`, an empty
/// user and the authenticators' errors.
pub fn unauthenticated(error: &str) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {},
        "status": {"user": {}, "error": error}
    })
}

/// The recorded pod of the agent on node-a, changed by `f`.
pub fn pod(f: impl FnOnce(&mut Value)) -> Value {
    let mut v: Value = serde_json::from_str(POD).expect("pod JSON");
    f(&mut v);
    v
}

/// The API's state: TokenReview status by token, pods by `namespace/name`.
#[derive(Default)]
pub struct State {
    pub reviews: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    /// An error answer (code, Status JSON) for every TokenReview.
    pub review_error: Option<(u16, String)>,
}

pub struct IdentityApi {
    pub state: Arc<Mutex<State>>,
    pub api: FakeApi,
    pub access: PodAccess,
}

impl IdentityApi {
    /// TOKEN_A bound to the node-a pod, which exists and runs.
    pub fn node_a() -> IdentityApi {
        let state = State {
            reviews: BTreeMap::from([(TOKEN_A.to_string(), review(|_| {}))]),
            pods: BTreeMap::from([(format!("faultline/{POD_NAME}"), pod(|_| {}))]),
            review_error: None,
        };
        IdentityApi::with(state)
    }

    pub fn with(state: State) -> IdentityApi {
        let state = Arc::new(Mutex::new(state));
        let answers = state.clone();
        let (client, api) = FakeApi::start_full(move |req: &Seen| {
            let state = answers.lock().expect("state");
            answer(&state, req)
        });
        IdentityApi {
            state,
            api,
            access: PodAccess::Cluster(Arc::new(KubeCluster::new(client))),
        }
    }

    pub fn set_review(&self, token: &str, review: Value) {
        let mut s = self.state.lock().expect("state");
        s.reviews.insert(token.to_string(), review);
    }

    pub fn set_pod(&self, pod: Value) {
        let key = format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().expect("namespace"),
            pod["metadata"]["name"].as_str().expect("name")
        );
        self.state.lock().expect("state").pods.insert(key, pod);
    }

    /// The method and path of every request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.api
            .seen_full()
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect()
    }
}

fn answer(state: &State, req: &Seen) -> (u16, String) {
    let path = req.uri.split('?').next().unwrap_or_default();
    if req.method == "POST" && path == REVIEW_PATH {
        if let Some((code, body)) = &state.review_error {
            return (*code, body.clone());
        }
        let sent: Value = serde_json::from_str(&req.body).expect("TokenReview request JSON");
        let token = sent["spec"]["token"].as_str().unwrap_or_default();
        let mut answer = state.reviews.get(token).cloned().unwrap_or_else(|| {
            unauthenticated(
                "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
            )
        });
        // The API server echoes the spec it was sent.
        answer["spec"] = sent["spec"].clone();
        return (201, answer.to_string());
    }
    if req.method == "GET" {
        if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
            if let Some((ns, name)) = rest.split_once("/pods/") {
                return match state.pods.get(&format!("{ns}/{name}")) {
                    Some(p) => (200, p.to_string()),
                    None => (
                        404,
                        status_json(404, "NotFound", &format!("pods \"{name}\" not found")),
                    ),
                };
            }
        }
    }
    (
        404,
        status_json(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}
