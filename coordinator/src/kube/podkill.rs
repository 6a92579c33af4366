//! What pod-kill needs of the Kubernetes API: deleting one pod (with a grace period, and a UID
//! precondition so a StatefulSet's replacement of the same name is never deleted by mistake),
//! and watching a namespace's pods to see replacements become Ready. The pod as pod-kill sees
//! it is a [`PodState`]: its controller (who replaces it) and its `Ready` condition.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions, WatchEvent, WatchParams};

use super::{timed_call, BoxStream, KubeError};

/// What pod-kill's RBAC must grant (daemonset/chart/faultline values `podKill.enabled`).
pub const RBAC_DELETE: &str = "delete on pods (Helm value podKill.enabled=true)";
const RBAC_WATCH: &str = "watch on pods";
/// How long one watch request may stay open before the coordinator opens the next.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// The controller that owns a pod (and makes its replacement).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A pod as pod-kill looks at it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub controller: Option<Owner>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    pub resource_version: String,
}

impl PodState {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The API server accepted it; the pod as it returned it (terminating, or gone at once).
    Accepted(Option<PodState>),
    /// No such pod, or the name now belongs to another pod (UID precondition failed).
    Gone(String),
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// Added or modified.
    Changed(PodState),
    Deleted(PodState),
    /// A bookmark: only the resource version moved.
    Bookmark(String),
    /// The watch must start over from a new list (HTTP 410 Gone: too old a resource version).
    Expired(String),
}

pub fn pod_state(pod: &Pod) -> PodState {
    let meta = &pod.metadata;
    let controller = meta
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        });
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodState {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        controller,
        ready,
        terminating: meta.deletion_timestamp.is_some(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
    }
}

fn api_message(e: &kube::Error, rbac: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "{} (HTTP {}; the coordinator's service account needs {rbac})",
            s.message, s.code
        ),
        kube::Error::Api(s) => format!("{} (HTTP {} {})", s.message, s.code, s.reason),
        other => faultline_identity::tls::error_chain(other),
    }
}

/// Deletes `namespace/name` if it is still the pod `uid`.
pub async fn delete_pod(
    client: kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    grace_period_seconds: Option<i64>,
) -> Result<Deleted, KubeError> {
    let what = format!("deleting pod {namespace}/{name}");
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let params = DeleteParams {
        grace_period_seconds: grace_period_seconds.map(|g| u32::try_from(g).unwrap_or(u32::MAX)),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let call = async {
        match api.delete(name, &params).await {
            Ok(either) => Ok(Deleted::Accepted(either.left().as_ref().map(pod_state))),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Deleted::Gone(
                format!("{} (HTTP {} {})", s.message, s.code, s.reason),
            )),
            Err(e) => Err(KubeError::Call {
                what: what.clone(),
                message: api_message(&e, RBAC_DELETE),
            }),
        }
    };
    timed_call(&what, call).await
}

/// Watches the pods of `namespace` (matching `label_selector`) from `resource_version`
/// (`"0"`: the current pods first, as ADDED events, then every change).
pub async fn watch_pods(
    client: kube::Client,
    namespace: &str,
    label_selector: Option<&str>,
    resource_version: &str,
) -> Result<BoxStream<Result<PodEvent, KubeError>>, KubeError> {
    let what = format!("watching pods in namespace {namespace}");
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    if let Some(l) = label_selector {
        params = params.labels(l);
    }
    let call = async {
        api.watch(&params, resource_version)
            .await
            .map_err(|e| KubeError::Call {
                what: what.clone(),
                message: api_message(&e, RBAC_WATCH),
            })
    };
    let stream = timed_call(&what, call).await?;
    let what2 = what.clone();
    Ok(stream
        .map(move |ev| match ev {
            Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                Ok(PodEvent::Changed(pod_state(&p)))
            }
            Ok(WatchEvent::Deleted(p)) => Ok(PodEvent::Deleted(pod_state(&p))),
            Ok(WatchEvent::Bookmark(b)) => Ok(PodEvent::Bookmark(b.metadata.resource_version)),
            Ok(WatchEvent::Error(s)) if s.code == 410 => Ok(PodEvent::Expired(s.message)),
            Ok(WatchEvent::Error(s)) => Err(KubeError::Call {
                what: what2.clone(),
                message: format!("{} (HTTP {} {})", s.message, s.code, s.reason),
            }),
            Err(e) => Err(KubeError::Call {
                what: what2.clone(),
                message: api_message(&e, RBAC_WATCH),
            }),
        })
        .boxed())
}
