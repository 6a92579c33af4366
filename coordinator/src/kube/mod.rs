//! Kubernetes access: the narrow [`Cluster`] port (list pods and nodes for pod targets; review a
//! ServiceAccount token and read its pod for agent enrollment; publish the CA bundle agents
//! trust; delete and watch pods for pod-kill), its kube-rs implementation [`KubeCluster`], the
//! conversion of API objects into the coordinator's views, and where the coordinator's
//! credentials come from.
//!
//! - [`enroll`]: Kubernetes enrollment, the rules a ServiceAccount token must pass before the
//!   issuer signs a certificate for a node.
//! - [`cabundle`]: the ConfigMap with the CA bundle agents mount.
//! - [`podkill`]: deleting pods and watching for their replacements (fault kind pod-kill).

pub mod cabundle;
mod client;
mod convert;
pub mod enroll;
mod names;
pub mod podkill;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{NodeView, PodSelector, PodView};

pub use client::{KubeCluster, KubeSource};
pub use convert::{
    bare_container_id, node_view, pod_facts, pod_view, token_reviewed, PodFacts, TokenReviewed,
};
pub use names::NamespacedName;

/// How long one list call (all its pages) may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A boxed future, so [`Cluster`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed stream of watch events.
pub type BoxStream<T> = futures::stream::BoxStream<'static, T>;

/// The Kubernetes calls the coordinator makes: reads for pod targets and enrollment, one
/// TokenReview, one write (the CA bundle ConfigMap), and for pod-kill, pod deletes and a pod
/// watch.
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

    /// Who `token` belongs to, asked of the API server for `audiences` (a TokenReview). A token
    /// the API server does not accept is an answer (`authenticated: false`), not an error.
    fn review_token<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<TokenReviewed, KubeError>>;

    /// One pod; `None` when it does not exist.
    fn pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PodFacts>, KubeError>>;

    /// Creates or updates ConfigMap `namespace/name` so that its data is `data` (server-side
    /// apply, field manager `faultline-coordinator`).
    fn apply_config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        data: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), KubeError>>;

    // pod-kill (issue 13): the coordinator's only deletes, and the watch for replacements.

    /// Deletes pod `namespace/name` if it is still the pod `uid`, with this grace period
    /// (`None`: the pod's own).
    fn delete_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
        grace_period_seconds: Option<i64>,
    ) -> BoxFuture<'a, Result<podkill::Deleted, KubeError>>;

    /// Watches the pods of `namespace` matching `label_selector` from `resource_version`.
    fn watch_pods<'a>(
        &'a self,
        namespace: &'a str,
        label_selector: Option<&'a str>,
        resource_version: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<Result<podkill::PodEvent, KubeError>>, KubeError>>;
}

/// Whether this coordinator can reach the Kubernetes API (for pod targets and Kubernetes
/// enrollment).
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
    /// A call other than a list; `what` says which ("reviewing the token (TokenReview)").
    #[error("{what}: {message}")]
    Call { what: String, message: String },
    #[error("{what}: no answer from the Kubernetes API within {}s", API_TIMEOUT.as_secs())]
    CallTimeout { what: String },
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

/// `call`, cut off after [`API_TIMEOUT`] with [`KubeError::CallTimeout`].
pub async fn timed_call<T>(
    what: &str,
    call: impl Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(KubeError::CallTimeout {
            what: what.to_string(),
        }),
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
