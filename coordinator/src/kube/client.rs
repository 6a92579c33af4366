//! The [`Cluster`] port over the Kubernetes API with kube-rs (paged lists of pods and nodes),
//! and where its credentials come from: `--kubeconfig`/`KUBECONFIG`, else the in-cluster
//! service account, else none (pod targets are then refused with that reason).

use std::path::PathBuf;

use faultline_core::experiment::{NodeView, PodView};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{node_view, pod_view, BoxFuture, Cluster, KubeError, PodAccess};

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

/// What an API error means for the operator.
fn api_error(what: &str, e: kube::Error) -> KubeError {
    let message = match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "{} (HTTP {}; the coordinator's service account needs get, list and watch on pods \
             and nodes: see daemonset/manifests/10-rbac.yaml)",
            s.message, s.code
        ),
        kube::Error::Api(s) => format!("{} (HTTP {} {})", s.message, s.code, s.reason),
        other => faultline_identity::tls::error_chain(&other),
    };
    KubeError::Api {
        what: what.to_string(),
        message,
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
