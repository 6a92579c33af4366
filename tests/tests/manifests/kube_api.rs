//! A stand-in Kubernetes API server for the rendered pods (no API server can run here): HTTPS
//! on loopback with its own CA, the service-account bearer token it gave the coordinator, and
//! the calls Faultline makes, answered in the API's JSON: TokenReview (tokens the stand-in
//! kubelet projected, each bound to a pod on a node, valid only for its audience), GET of those
//! pods (built from the rendered DaemonSet template, as the DaemonSet controller would), and the
//! server-side apply of ConfigMaps (kept, so the kubelet can mount what the coordinator
//! published). Every call is recorded. Helpers panic with a message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A token the kubelet projected: its pod and audience.
#[derive(Debug, Clone)]
pub struct Projected {
    pub pod: String,
    pub uid: String,
    pub node: String,
    pub audience: String,
    pub service_account: String,
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, Projected>,
    /// Pod name -> Pod JSON.
    pods: BTreeMap<String, Value>,
    /// "namespace/name" -> data.
    config_maps: BTreeMap<String, Value>,
    /// "METHOD path" of every call.
    calls: Vec<String>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    /// The CA that signed the server's certificate (the pods' ca.crt).
    pub ca_pem: String,
    /// The coordinator's service-account token.
    pub coordinator_token: String,
    namespace: String,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl KubeApi {
    /// Serves on 127.0.0.1 with a certificate from a CA of its own, made in `dir`.
    pub fn start(dir: &Path, namespace: &str) -> KubeApi {
        let pki = dir.join("apiserver-pki");
        faultline_identity::pki::init_dir(
            &pki,
            &faultline_identity::pki::InitOptions {
                sans: vec![],
                agents: vec![],
                days: 1,
                force: false,
            },
        )
        .expect("the API server's certificates");
        let certs = faultline_identity::tls::load_certs(&pki.join("coordinator.pem"))
            .expect("server certificate");
        let key = faultline_identity::tls::load_key(&pki.join("coordinator-key.pem"))
            .expect("server key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the API server");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let token = format!("coordinator-sa-token-{}", std::process::id());
        let (st, tok) = (state.clone(), token.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, st, tok) = (acceptor.clone(), st.clone(), tok.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| handle(st.clone(), tok.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        KubeApi {
            addr,
            ca_pem: std::fs::read_to_string(pki.join("ca.pem")).expect("CA"),
            coordinator_token: token,
            namespace: namespace.to_string(),
            state,
            runtime: Some(runtime),
        }
    }

    /// What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount for a pod that
    /// automounts its token (the coordinator's): token, ca.crt, namespace, made in `dir`.
    pub fn service_account_dir(&self, dir: &Path) -> PathBuf {
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa).expect("mkdir");
        for (f, v) in [
            ("token", self.coordinator_token.as_str()),
            ("ca.crt", self.ca_pem.as_str()),
            ("namespace", self.namespace.as_str()),
        ] {
            std::fs::write(sa.join(f), v).expect("write");
        }
        sa
    }

    /// The kubelet projects a token for `pod_template` scheduled on `node`: the API now knows
    /// the pod (Running) and the token (bound to it, valid for `audience`). Returns the token.
    pub fn project(&self, pod_template: &Value, node: &str, audience: &str) -> String {
        let n = self.state.lock().expect("state").pods.len();
        let name = format!("faultline-agent-{node}-{n}");
        let uid = format!(
            "5c0b7f4e-8a1d-4c2b-9f63-{:012x}",
            0xa9e0_0000_0000u64 + n as u64
        );
        let sa = pod_template["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let containers: Vec<Value> = pod_template["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| json!({"name": c["name"], "image": c["image"]}))
            .collect();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let pod = json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {
                "name": name, "generateName": "faultline-agent-", "namespace": self.namespace,
                "uid": uid, "resourceVersion": "1", "creationTimestamp": now,
                "labels": {"app.kubernetes.io/name": "faultline-agent"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "faultline-agent", "uid": "a1f2e3d4-b5c6-4d7e-8f90-a1b2c3d4e5f6",
                    "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {
                "containers": containers, "serviceAccountName": sa, "serviceAccount": sa,
                "automountServiceAccountToken": pod_template["automountServiceAccountToken"],
                "nodeName": node, "hostNetwork": pod_template["hostNetwork"]
            },
            "status": {"phase": "Running", "startTime": now}
        });
        let token = format!("projected.{name}.{audience}");
        let mut s = self.state.lock().expect("state");
        s.pods.insert(name.clone(), pod);
        s.tokens.insert(
            token.clone(),
            Projected {
                pod: name,
                uid,
                node: node.to_string(),
                audience: audience.to_string(),
                service_account: sa,
            },
        );
        token
    }

    /// ConfigMap `name`'s data once it exists (the coordinator publishes it), within `timeout`.
    pub fn wait_config_map(&self, name: &str, timeout: Duration) -> BTreeMap<String, String> {
        let key = format!("{}/{name}", self.namespace);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(data) = self.state.lock().expect("state").config_maps.get(&key) {
                return serde_json::from_value(data.clone()).expect("ConfigMap data");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ConfigMap {key} was not applied within {timeout:?}; calls: {:?}",
                self.calls()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("state").calls.clone()
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    token: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {token}"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (code, answer) = {
        let mut s = state.lock().expect("state");
        s.calls.push(format!("{method} {path}"));
        if authorized {
            answer(&mut s, &method, &path, &body)
        } else {
            status(401, "Unauthorized", "Unauthorized")
        }
    };
    Ok(Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .expect("response"))
}

fn answer(s: &mut State, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
        ("POST", ["", "apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            let token = sent["spec"]["token"].as_str().unwrap_or_default();
            let wanted: Vec<String> =
                serde_json::from_value(sent["spec"]["audiences"].clone()).unwrap_or_default();
            let status = match s.tokens.get(token) {
                None => {
                    json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
                }
                Some(p) if !wanted.contains(&p.audience) => json!({"user": {}, "error": format!(
                    "[invalid bearer token, token audiences [\"{}\"] is invalid for the target audiences {wanted:?}]",
                    p.audience)}),
                Some(p) => json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:faultline:{}", p.service_account),
                        "uid": "0d6f3c1a-7e2b-4f59-b8a4-3c9e1d2f7a60",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:faultline",
                                   "system:authenticated"],
                        "extra": {
                            "authentication.kubernetes.io/node-name": [p.node],
                            "authentication.kubernetes.io/pod-name": [p.pod],
                            "authentication.kubernetes.io/pod-uid": [p.uid]
                        }
                    },
                    "audiences": [p.audience]
                }),
            };
            (
                201,
                json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {"creationTimestamp": null}, "spec": sent["spec"],
                       "status": status}),
            )
        }
        ("GET", ["", "api", "v1", "namespaces", _, "pods", name]) => match s.pods.get(*name) {
            Some(p) => (200, p.clone()),
            None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ("PATCH", ["", "api", "v1", "namespaces", ns, "configmaps", name]) => {
            s.config_maps
                .insert(format!("{ns}/{name}"), sent["data"].clone());
            let mut cm = sent.clone();
            cm["metadata"]["uid"] = json!("3f0e1d2c-4b5a-4978-8695-a4b3c2d1e0f9");
            cm["metadata"]["resourceVersion"] = json!("2");
            (200, cm)
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}
