//! The [`Cluster`] port over the Kubernetes API with kube-rs (paged lists of pods and nodes,
//! TokenReview, one pod, server-side apply of a ConfigMap), and where its credentials come
//! from: `--kubeconfig`/`KUBECONFIG`, else the in-cluster service account, else none (pod
//! targets and Kubernetes enrollment are then refused with that reason).

use std::collections::BTreeMap;
use std::path::PathBuf;

use faultline_core::experiment::{NodeView, PodView};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{
    node_view, pod_facts, pod_view, timed_call, token_reviewed, BoxFuture, Cluster, KubeError,
    PodAccess, PodFacts, TokenReviewed,
};

/// The field manager of the coordinator's server-side applies.
pub const FIELD_MANAGER: &str = "faultline-coordinator";

/// What the coordinator's RBAC must grant, per call, for messages (daemonset/manifests/10-rbac.yaml).
const RBAC_LIST: &str = "get, list and watch on pods and nodes";
const RBAC_REVIEW: &str = "create on tokenreviews (authentication.k8s.io)";
const RBAC_POD: &str = "get on pods";
const RBAC_CONFIGMAP: &str =
    "create, and get and patch on the CA bundle ConfigMap, in its namespace";

/// Page size of list calls.
const PAGE: u32 = 500;

/// The Kubernetes API through a kube-rs client.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
}

impl KubeCluster {
    pub fn new(client: kube::Client) -> Self {
        KubeCluster { client }
    }
}

/// What an API error means for the operator; `rbac` is what the call needs.
fn api_message(e: kube::Error, rbac: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "{} (HTTP {}; the coordinator's service account needs {rbac}: see \
             daemonset/manifests/10-rbac.yaml)",
            s.message, s.code
        ),
        kube::Error::Api(s) => format!("{} (HTTP {} {})", s.message, s.code, s.reason),
        other => faultline_identity::tls::error_chain(&other),
    }
}

fn api_error(what: &str, e: kube::Error) -> KubeError {
    KubeError::Api {
        what: what.to_string(),
        message: api_message(e, RBAC_LIST),
    }
}

fn call_error(what: &str, rbac: &'static str) -> impl FnOnce(kube::Error) -> KubeError {
    let what = what.to_string();
    move |e| KubeError::Call {
        what,
        message: api_message(e, rbac),
    }
}

/// Every item of a list, page by page.
async fn list_all<K>(api: &Api<K>, mut params: ListParams, what: &str) -> Result<Vec<K>, KubeError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| api_error(what, e))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

impl Cluster for KubeCluster {
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        label_selector: Option<&'a str>,
        field_selector: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<PodView>, KubeError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let mut params = ListParams::default().limit(PAGE);
            if let Some(l) = label_selector {
                params = params.labels(l);
            }
            if let Some(f) = field_selector {
                params = params.fields(f);
            }
            let what = format!("pods in namespace {namespace}");
            let pods = list_all(&api, params, &what).await?;
            Ok(pods.iter().map(pod_view).collect())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeView>, KubeError>> {
        Box::pin(async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let nodes = list_all(&api, ListParams::default().limit(PAGE), "nodes").await?;
            Ok(nodes.iter().map(node_view).collect())
        })
    }

    fn review_token<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<TokenReviewed, KubeError>> {
        Box::pin(async move {
            let what = "reviewing the token (TokenReview)";
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(audiences.to_vec()),
                },
                ..TokenReview::default()
            };
            let call = async {
                api.create(&PostParams::default(), &review)
                    .await
                    .map_err(call_error(what, RBAC_REVIEW))
            };
            let answer = timed_call(what, call).await?;
            Ok(token_reviewed(answer.status.as_ref()))
        })
    }

    fn pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodFacts>, KubeError>> {
        Box::pin(async move {
            let what = format!("reading pod {namespace}/{name}");
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let call = async { api.get_opt(name).await.map_err(call_error(&what, RBAC_POD)) };
            let pod = timed_call(&what, call).await?;
            Ok(pod.as_ref().map(pod_facts))
        })
    }

    fn apply_config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        data: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        Box::pin(async move {
            let what = format!("applying ConfigMap {namespace}/{name}");
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let object = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {
                        "app.kubernetes.io/name": "faultline-coordinator",
                        "app.kubernetes.io/part-of": "faultline",
                    },
                },
                "data": data,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let call = async {
                api.patch(name, &params, &Patch::Apply(&object))
                    .await
                    .map_err(call_error(&what, RBAC_CONFIGMAP))
            };
            timed_call(&what, call).await.map(|_| ())
        })
    }

    // pod-kill (issue 13).
    fn delete_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
        grace_period_seconds: Option<i64>,
    ) -> BoxFuture<'a, Result<super::podkill::Deleted, KubeError>> {
        Box::pin(super::podkill::delete_pod(
            self.client.clone(),
            namespace,
            name,
            uid,
            grace_period_seconds,
        ))
    }

    fn watch_pods<'a>(
        &'a self,
        namespace: &'a str,
        label_selector: Option<&'a str>,
        resource_version: &'a str,
    ) -> BoxFuture<
        'a,
        Result<super::BoxStream<Result<super::podkill::PodEvent, KubeError>>, KubeError>,
    > {
        Box::pin(super::podkill::watch_pods(
            self.client.clone(),
            namespace,
            label_selector,
            resource_version,
        ))
    }
}

/// Where the coordinator's Kubernetes credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// `--kubeconfig` (or `KUBECONFIG`): one or more files, merged as kubectl merges them.
    Kubeconfig(Vec<PathBuf>),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` is set).
    InCluster,
    None,
}

impl KubeSource {
    /// From the `--kubeconfig` value (a path list, as in `KUBECONFIG`) and the environment.
    pub fn detect(kubeconfig: Option<&str>) -> KubeSource {
        let paths: Vec<PathBuf> = kubeconfig
            .map(|v| {
                std::env::split_paths(v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if !paths.is_empty() {
            KubeSource::Kubeconfig(paths)
        } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            KubeSource::InCluster
        } else {
            KubeSource::None
        }
    }

    /// Builds the client. A kubeconfig that cannot be used is an error (the operator asked for
    /// it); a broken in-cluster setup leaves pod targets unavailable with the reason.
    pub async fn connect(&self) -> Result<PodAccess, KubeError> {
        let config_error = |message: String| KubeError::Config {
            flag: "--kubeconfig",
            message,
        };
        let config = match self {
            KubeSource::None => return Ok(PodAccess::none()),
            KubeSource::InCluster => match kube::Config::incluster() {
                Ok(c) => c,
                Err(e) => {
                    return Ok(PodAccess::Unavailable(format!(
                        "the in-cluster Kubernetes configuration is unusable: {}",
                        faultline_identity::tls::error_chain(&e)
                    )))
                }
            },
            KubeSource::Kubeconfig(paths) => {
                let mut merged = Kubeconfig::default();
                for p in paths {
                    let file = Kubeconfig::read_from(p).map_err(|e| {
                        config_error(format!(
                            "{}: {}",
                            p.display(),
                            faultline_identity::tls::error_chain(&e)
                        ))
                    })?;
                    merged = merged
                        .merge(file)
                        .map_err(|e| config_error(format!("merging {}: {e}", p.display())))?;
                }
                kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| config_error(faultline_identity::tls::error_chain(&e)))?
            }
        };
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config {
            flag: "kubernetes client",
            message: faultline_identity::tls::error_chain(&e),
        })?;
        Ok(PodAccess::Cluster(std::sync::Arc::new(KubeCluster::new(
            client,
        ))))
    }
}
