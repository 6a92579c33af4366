//! Kubernetes access for pod targets: the narrow [`Cluster`] port the planner uses (list pods,
//! list nodes), its kube-rs implementation [`KubeCluster`], the conversion of API objects into
//! the planner's views, and where the coordinator's credentials come from.

mod client;
mod convert;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{NodeView, PodSelector, PodView};

pub use client::{KubeCluster, KubeSource};
pub use convert::{bare_container_id, node_view, pod_view};

/// How long one list call (all its pages) may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A boxed future, so [`Cluster`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The Kubernetes calls the coordinator makes: read-only, two of them.
pub trait Cluster: Send + Sync {
    /// The pods of `namespace` matching the selectors (any phase).
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        label_selector: Option<&'a str>,
        field_selector: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<PodView>, KubeError>>;

    /// Every node.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeView>, KubeError>>;
}

/// Whether this coordinator can resolve pod targets.
#[derive(Clone)]
pub enum PodAccess {
    Cluster(Arc<dyn Cluster>),
    /// Pod targets are refused with this reason.
    Unavailable(String),
}

impl PodAccess {
    /// No Kubernetes access configured.
    pub fn none() -> PodAccess {
        PodAccess::Unavailable(
            "the coordinator has no Kubernetes access: it does not run in a cluster \
             (KUBERNETES_SERVICE_HOST is unset) and neither --kubeconfig nor KUBECONFIG is given"
                .into(),
        )
    }
}

impl std::fmt::Debug for PodAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodAccess::Cluster(_) => f.write_str("PodAccess::Cluster"),
            PodAccess::Unavailable(why) => write!(f, "PodAccess::Unavailable({why:?})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{flag}: {message}")]
    Config { flag: &'static str, message: String },
    #[error("listing {what}: {message}")]
    Api { what: String, message: String },
    #[error("listing {what}: no answer from the Kubernetes API within {}s", API_TIMEOUT.as_secs())]
    Timeout { what: String },
}

/// The pods a selector returns, and every node.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub pods: Vec<PodView>,
    pub nodes: Vec<NodeView>,
}

async fn timed<T>(
    what: String,
    call: impl Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(KubeError::Timeout { what }),
    }
}

/// Lists the pods of every namespace of `selector` (all at once), and the nodes.
pub async fn resolve(
    cluster: &dyn Cluster,
    selector: &PodSelector,
) -> Result<ClusterView, KubeError> {
    let lists = selector.namespaces.iter().map(|ns| {
        let call = cluster.pods(
            ns,
            selector.label_selector.as_deref(),
            selector.field_selector.as_deref(),
        );
        timed(format!("pods in namespace {ns}"), call)
    });
    let (pods, nodes) = futures::future::try_join(
        futures::future::try_join_all(lists),
        timed("nodes".to_string(), cluster.nodes()),
    )
    .await?;
    Ok(ClusterView {
        pods: pods.into_iter().flatten().collect(),
        nodes,
    })
}
