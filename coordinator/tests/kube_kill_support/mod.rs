//! A stand-in Kubernetes API for the pod-kill tests that changes as an API server does when
//! pods are deleted, from real API JSON (the shop PodList and NodeList, the Pod a DELETE
//! returns, a ReplicaSet's new Pending pod): a DELETE with a grace period marks the pod
//! terminating (0 removes it at once), checks the UID precondition (409 Conflict as the API
//! server words it) and 404s a missing pod; the ReplicaSet's replacement appears and becomes
//! Ready after set delays, the deleted pod goes after its shutdown time; lists show the pods
//! as they are, and watches return the events since the resource version asked for (from
//! `0`: the pods as ADDED first). Every request is recorded by [`FakeApi`].
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_coordinator::kube::{KubeCluster, PodAccess};
use serde_json::{json, Value};

use crate::kube_support::{status_json, FakeApi, Seen, NODES, PODS_SHOP};

pub const DELETED_POD: &str = include_str!("../kube_support/pod-checkout-deleted.json");
pub const REPLACEMENT_PENDING: &str =
    include_str!("../kube_support/pod-checkout-replacement-pending.json");

/// How the pretend kubelet and ReplicaSet controller behave after a delete.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From the delete until the replacement pod exists (Pending).
    pub replace_after: Duration,
    /// From the delete until the replacement is Ready.
    pub ready_after: Duration,
    /// From a graceful delete until the pod object is gone (the containers exited).
    pub shutdown_after: Duration,
}

enum Change {
    Add(Value),
    Ready(String),
    Remove(String),
}

struct State {
    pods: Vec<Value>,
    rv: u64,
    /// (resource version, event).
    events: Vec<(u64, Value)>,
    scheduled: Vec<(Instant, Change)>,
    timing: Timing,
    replacements: u32,
    /// When each pod (by name) was deleted.
    pub deleted_at: Vec<(String, Instant)>,
    /// Without `delete` on pods (the chart's podKill.enabled=false): every DELETE is 403.
    forbidden: bool,
    /// (name, new UID): recreate that pod just before its DELETE is answered.
    recreate: Option<(String, String)>,
}

fn name_of(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ready_status() -> Value {
    let list: Value = serde_json::from_str(PODS_SHOP).expect("pods-shop.json");
    list["items"][0]["status"].clone()
}

impl State {
    fn bump(&mut self, kind: &str, pod: &Value) {
        self.rv += 1;
        let mut p = pod.clone();
        p["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events
            .push((self.rv, json!({"type": kind, "object": p})));
    }

    fn set(&mut self, name: &str, f: impl FnOnce(&mut Value)) {
        if let Some(i) = self.pods.iter().position(|p| name_of(p) == name) {
            f(&mut self.pods[i]);
            let p = self.pods[i].clone();
            self.bump("MODIFIED", &p);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.pods.iter().position(|p| name_of(p) == name) {
            let p = self.pods.remove(i);
            self.bump("DELETED", &p);
        }
    }

    /// Applies every scheduled change that is due.
    fn advance(&mut self) {
        let now = Instant::now();
        self.scheduled.sort_by_key(|(at, _)| *at);
        while self.scheduled.first().is_some_and(|(at, _)| *at <= now) {
            let (_, change) = self.scheduled.remove(0);
            match change {
                Change::Add(p) => {
                    self.pods.push(p.clone());
                    self.bump("ADDED", &p);
                }
                Change::Ready(name) => self.set(&name, |p| {
                    p["status"] = ready_status();
                }),
                Change::Remove(name) => self.remove(&name),
            }
        }
    }

    fn list(&self, ns: &str) -> Value {
        let items: Vec<Value> = self
            .pods
            .iter()
            .filter(|p| p["metadata"]["namespace"] == ns)
            .cloned()
            .collect();
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items})
    }

    /// Newline-delimited watch events after `since` (0: the pods as ADDED, then nothing).
    fn watch(&self, ns: &str, since: u64) -> String {
        let lines: Vec<String> = if since == 0 {
            self.pods
                .iter()
                .filter(|p| p["metadata"]["namespace"] == ns)
                .map(|p| json!({"type": "ADDED", "object": p}).to_string())
                .collect()
        } else {
            self.events
                .iter()
                .filter(|(rv, e)| *rv > since && e["object"]["metadata"]["namespace"] == ns)
                .map(|(_, e)| e.to_string())
                .collect()
        };
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn delete(&mut self, name: &str, body: &str) -> (u16, String) {
        if self.forbidden {
            let ns = "shop";
            return (
                403,
                status_json(
                    403,
                    "Forbidden",
                    &format!("pods \"{name}\" is forbidden: User \"system:serviceaccount:faultline:faultline-coordinator\" cannot delete resource \"pods\" in API group \"\" in the namespace \"{ns}\""),
                ),
            );
        }
        if self.recreate.as_ref().is_some_and(|(n, _)| n == name) {
            if let Some((_, uid)) = self.recreate.take() {
                if let Some(mut p) = self.pods.iter().find(|p| name_of(p) == name).cloned() {
                    self.remove(name);
                    p["metadata"]["uid"] = json!(uid);
                    self.pods.push(p.clone());
                    self.bump("ADDED", &p);
                }
            }
        }
        let opts: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let Some(pod) = self.pods.iter().find(|p| name_of(p) == name).cloned() else {
            return (
                404,
                status_json(404, "NotFound", &format!("pods \"{name}\" not found")),
            );
        };
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(want) = opts["preconditions"]["uid"].as_str() {
            if want != uid {
                return (
                    409,
                    status_json(
                        409,
                        "Conflict",
                        &format!("Operation cannot be fulfilled on Pod \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
                    ),
                );
            }
        }
        let now = Instant::now();
        self.deleted_at.push((name.to_string(), now));
        // The Pod as the API server returns it: the recorded deleted pod's shape, this pod's
        // identity and the grace period asked for (or the pod's own, 30 s).
        let grace = opts["gracePeriodSeconds"].as_i64();
        let mut answer: Value =
            serde_json::from_str(DELETED_POD).expect("pod-checkout-deleted.json");
        answer["metadata"]["name"] = json!(name);
        answer["metadata"]["uid"] = json!(uid);
        answer["spec"] = pod["spec"].clone();
        answer["metadata"]["deletionGracePeriodSeconds"] = json!(grace.unwrap_or(30));
        let t = self.timing;
        self.replacements += 1;
        let mut r: Value = serde_json::from_str(REPLACEMENT_PENDING)
            .expect("pod-checkout-replacement-pending.json");
        let rname = format!("checkout-7d4f9b6c5-r{:04}", self.replacements);
        r["metadata"]["name"] = json!(rname);
        r["metadata"]["uid"] = json!(format!("3c9d41f2-7b5e-4a10-8e2f-{:012}", self.replacements));
        self.scheduled.push((now + t.replace_after, Change::Add(r)));
        self.scheduled
            .push((now + t.ready_after, Change::Ready(rname)));
        if grace == Some(0) {
            self.remove(name);
        } else {
            let g = answer["metadata"]["deletionGracePeriodSeconds"].clone();
            let ts = answer["metadata"]["deletionTimestamp"].clone();
            self.set(name, |p| {
                p["metadata"]["deletionTimestamp"] = ts;
                p["metadata"]["deletionGracePeriodSeconds"] = g;
            });
            self.scheduled
                .push((now + t.shutdown_after, Change::Remove(name.to_string())));
        }
        (200, answer.to_string())
    }
}

/// The live cluster: its API for the coordinator and the recorded requests.
pub struct LiveCluster {
    state: Arc<Mutex<State>>,
    pub api: FakeApi,
}

impl LiveCluster {
    /// The shop pods named in `pods` (from pods-shop.json) and the four nodes.
    pub fn start(pods: &[&str], timing: Timing) -> (PodAccess, LiveCluster) {
        LiveCluster::start_with(pods, timing, false)
    }

    /// As [`LiveCluster::start`]; `forbidden`: the coordinator may not delete pods.
    pub fn start_with(pods: &[&str], timing: Timing, forbidden: bool) -> (PodAccess, LiveCluster) {
        let list: Value = serde_json::from_str(PODS_SHOP).expect("pods-shop.json");
        let items: Vec<Value> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|p| pods.contains(&name_of(p).as_str()))
            .cloned()
            .collect();
        assert_eq!(items.len(), pods.len(), "every pod is in pods-shop.json");
        let state = Arc::new(Mutex::new(State {
            pods: items,
            rv: 4_900_000,
            events: Vec::new(),
            scheduled: Vec::new(),
            timing,
            replacements: 0,
            deleted_at: Vec::new(),
            forbidden,
            recreate: None,
        }));
        let s = state.clone();
        let (client, api) = FakeApi::start_full(move |req: &Seen| {
            let mut st = s.lock().expect("state");
            st.advance();
            let (path, query) = req.uri.split_once('?').unwrap_or((&req.uri, ""));
            if path == "/api/v1/nodes" {
                return (200, NODES.to_string());
            }
            let rest = path.strip_prefix("/api/v1/namespaces/").unwrap_or_default();
            let (ns, tail) = rest.split_once('/').unwrap_or((rest, ""));
            match (req.method.as_str(), tail) {
                ("GET", "pods") if query.contains("watch=true") => {
                    let since = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("resourceVersion="))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    (200, st.watch(ns, since))
                }
                ("GET", "pods") => (200, st.list(ns).to_string()),
                ("DELETE", t) if t.starts_with("pods/") => st.delete(&t[5..], &req.body),
                _ => (
                    404,
                    status_json(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                ),
            }
        });
        (
            PodAccess::Cluster(Arc::new(KubeCluster::new(client))),
            LiveCluster { state, api },
        )
    }

    /// Every DELETE: (pod name, request body as JSON).
    pub fn deletes(&self) -> Vec<(String, Value)> {
        self.api
            .seen_full()
            .into_iter()
            .filter(|s| s.method == "DELETE")
            .map(|s| {
                let name = s
                    .uri
                    .split('?')
                    .next()
                    .and_then(|p| p.rsplit('/').next())
                    .unwrap_or_default()
                    .to_string();
                (name, serde_json::from_str(&s.body).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// The next DELETE of pod `name` finds it recreated under the same name with a new UID
    /// (as a StatefulSet does between the coordinator's list and its delete); returns the UID.
    pub fn recreate_before_delete(&self, name: &str) -> String {
        let uid = "7e57a7e0-5a3e-4c1d-9b8a-0f0e0d0c0b0a".to_string();
        let mut st = self.state.lock().expect("state");
        st.recreate = Some((name.to_string(), uid.clone()));
        uid
    }

    /// The UID of a pod now in the cluster.
    pub fn uid(&self, name: &str) -> Option<String> {
        let st = self.state.lock().expect("state");
        st.pods
            .iter()
            .find(|p| name_of(p) == name)
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
    }
}
