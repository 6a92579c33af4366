//! Kubernetes enrollment: an agent proves which node it runs on with a projected ServiceAccount
//! token (audience [`AUDIENCE`]) instead of a join token, so no node list and no per-node
//! secret exists anywhere.
//!
//! # Guarantees
//! A certificate for `agent/<node>` is issued only when, in this order:
//! 1. the API server accepts the token for audience `faultline` (a TokenReview whose
//!    `spec.audiences` is `["faultline"]`: `status.authenticated`, and `faultline` in
//!    `status.audiences`, so an API server that ignores audiences cannot pass a token meant
//!    for itself);
//! 2. the token belongs to the agents' ServiceAccount (`system:serviceaccount:<ns>:<name>`,
//!    `--agent-service-account`);
//! 3. it is bound to a pod (`authentication.kubernetes.io/pod-name` and `pod-uid` in the
//!    user's extra), which exists in the ServiceAccount's namespace with that UID and runs as
//!    that ServiceAccount;
//! 4. the pod is scheduled on the node asked for (and the token's own `node-name`, when the API
//!    server adds one, agrees), is not terminating, and is `Running`;
//! 5. a revoked node's pod was created after the revocation.
//!
//! Each refusal names the check that failed. A token is never logged or stored.

use std::str::FromStr;
use std::sync::Arc;

use faultline_core::NodeName;

use super::{Cluster, KubeError, NamespacedName, PodAccess, PodFacts, TokenReviewed};
use crate::enroll::{when, Enrolled, Pki, Refusal, Revocations};

/// The audience agents' tokens are projected for, and the only one accepted.
pub const AUDIENCE: &str = "faultline";
/// The default of `--agent-service-account` (the chart's release namespace and account).
pub const DEFAULT_AGENT_SERVICE_ACCOUNT: &str = "faultline/faultline-agent";
/// The credential kind of Kubernetes enrollments, as recorded.
pub const KUBERNETES: &str = "kubernetes";
/// Longest token accepted (projected tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// The agents' ServiceAccount (`--agent-service-account NAMESPACE/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentServiceAccount(pub NamespacedName);

impl FromStr for AgentServiceAccount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(AgentServiceAccount)
    }
}

impl AgentServiceAccount {
    /// The username its tokens authenticate as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.0.namespace, self.0.name)
    }
}

/// The pod a token proved, for records and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
}

impl std::fmt::Display for BoundPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// Why a Kubernetes enrollment was refused; each names the check.
#[derive(Debug, thiserror::Error)]
pub enum KubeRefusal {
    #[error("kubernetes_token: Kubernetes enrollment is off on this coordinator: {0}")]
    Off(String),
    #[error("kubernetes_token: {0}")]
    Invalid(String),
    #[error("kubernetes_token: checking the token with the Kubernetes API failed: {0}")]
    Api(#[from] KubeError),
    #[error("kubernetes_token: unauthenticated: the Kubernetes API does not accept the token for audience \"{AUDIENCE}\" (TokenReview: {0})")]
    Unauthenticated(String),
    #[error("kubernetes_token: wrong audience: the Kubernetes API accepts the token for {0:?}, not for \"{AUDIENCE}\" (project it with audience: {AUDIENCE})")]
    WrongAudience(Vec<String>),
    #[error("kubernetes_token: wrong service account: the token belongs to {got}, not to {want} (--agent-service-account)")]
    WrongServiceAccount { got: String, want: String },
    #[error("kubernetes_token: token not bound to a pod: the Kubernetes API names no {missing} for {username}; use the token the kubelet projects into the agent's pod (a serviceAccountToken volume)")]
    NotBoundToPod {
        username: String,
        missing: &'static str,
    },
    #[error("kubernetes_token: pod {pod}, which the token is bound to, does not exist")]
    PodGone { pod: String },
    #[error("kubernetes_token: pod UID mismatch: the token is bound to pod {pod} with uid {token_uid}, but that pod now has uid {pod_uid}")]
    PodUidMismatch {
        pod: String,
        token_uid: String,
        pod_uid: String,
    },
    #[error("kubernetes_token: pod {pod} runs as service account {got}, not {want}")]
    PodServiceAccount {
        pod: String,
        got: String,
        want: String,
    },
    #[error("kubernetes_token: pod {pod} is on node {on}, not {asked}: an agent enrolls only the node its pod runs on")]
    WrongNode {
        pod: String,
        on: String,
        asked: String,
    },
    #[error("kubernetes_token: pod {pod} is terminating")]
    Terminating { pod: String },
    #[error("kubernetes_token: pod {pod} is {phase}, not Running")]
    NotRunning { pod: String, phase: String },
    #[error("kubernetes_token: {0}")]
    Revoked(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl KubeRefusal {
    /// The one conversion into a gRPC status. A pod still `Pending` and an API that did not
    /// answer are `UNAVAILABLE` (the agent retries); every other refusal is final.
    pub fn status(&self) -> tonic::Status {
        let m = self.to_string();
        match self {
            KubeRefusal::Refused(r) => r.status(),
            KubeRefusal::Off(_) => tonic::Status::failed_precondition(m),
            KubeRefusal::Invalid(_) => tonic::Status::invalid_argument(m),
            KubeRefusal::Api(_) => tonic::Status::unavailable(m),
            KubeRefusal::NotRunning { phase, .. } if phase == "Pending" => {
                tonic::Status::unavailable(m)
            }
            KubeRefusal::Unauthenticated(_) | KubeRefusal::WrongAudience(_) => {
                tonic::Status::unauthenticated(m)
            }
            _ => tonic::Status::permission_denied(m),
        }
    }
}

/// Kubernetes enrollment as configured on a coordinator: the API and the agents' account.
#[derive(Clone)]
pub enum KubeEnrollment {
    On {
        cluster: Arc<dyn Cluster>,
        account: AgentServiceAccount,
    },
    /// Refused with this reason.
    Off(String),
}

impl std::fmt::Debug for KubeEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeEnrollment::On { account, .. } => write!(f, "KubeEnrollment::On({})", account.0),
            KubeEnrollment::Off(why) => write!(f, "KubeEnrollment::Off({why:?})"),
        }
    }
}

impl KubeEnrollment {
    /// From the coordinator's Kubernetes access and `--agent-service-account` (`None`: off).
    pub fn new(access: &PodAccess, account: Option<AgentServiceAccount>) -> Self {
        let this = match (access, account) {
            (_, None) => KubeEnrollment::Off("--agent-service-account is none".into()),
            (PodAccess::Unavailable(why), Some(_)) => KubeEnrollment::Off(why.clone()),
            (PodAccess::Cluster(cluster), Some(account)) => KubeEnrollment::On {
                cluster: cluster.clone(),
                account,
            },
        };
        match &this {
            KubeEnrollment::On { account, .. } => tracing::info!(
                "Kubernetes enrollment: agents enroll with a token of {} (audience {AUDIENCE}) \
                 bound to a running pod on their node",
                account.username()
            ),
            KubeEnrollment::Off(why) => tracing::info!("Kubernetes enrollment is off: {why}"),
        }
        this
    }

    /// The checks of the module docs: which pod `token` proves for `node`.
    pub async fn verify(
        &self,
        node: &NodeName,
        token: &str,
        revocations: &Revocations,
    ) -> Result<BoundPod, KubeRefusal> {
        let (cluster, account) = match self {
            KubeEnrollment::On { cluster, account } => (cluster, account),
            KubeEnrollment::Off(why) => return Err(KubeRefusal::Off(why.clone())),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(KubeRefusal::Invalid(
                "empty; send the projected ServiceAccount token".into(),
            ));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(KubeRefusal::Invalid(format!(
                "{} bytes; a ServiceAccount token is at most {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        let review = cluster.review_token(token, &[AUDIENCE.to_string()]).await?;
        let pod_ref = check_review(&review, account)?;
        let pod = cluster
            .pod(&account.0.namespace, &pod_ref.name)
            .await?
            .ok_or_else(|| KubeRefusal::PodGone {
                pod: pod_ref.to_string(),
            })?;
        check_pod(&pod, &pod_ref, &review, account, node)?;
        if let Some(revoked) = revocations.of_node(node.as_str()) {
            let created = pod.created_unix_ms.unwrap_or(i64::MIN);
            if created <= revoked.revoked.at_unix_ms {
                return Err(KubeRefusal::Revoked(format!(
                    "{}; it may enroll again only from an agent pod created after that (pod {} \
                     was created at {})",
                    Revocations::describe(&revoked),
                    pod_ref,
                    pod.created_unix_ms
                        .map(when)
                        .unwrap_or_else(|| "an unknown time".into())
                )));
            }
        }
        Ok(BoundPod {
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
            node: node.to_string(),
        })
    }

    /// [`KubeEnrollment::verify`], then the issuer signs `csr_der` for `node` and the
    /// enrollment is recorded (credential `kubernetes`, the pod as its id).
    pub async fn enroll(
        &self,
        pki: &Arc<Pki>,
        node: NodeName,
        token: &str,
        csr_der: Vec<u8>,
        remote: String,
    ) -> Result<(Enrolled, BoundPod), KubeRefusal> {
        if !pki.has_issuer() {
            return Err(Refusal::NoIssuer.into());
        }
        let pod = self.verify(&node, token, &pki.revocations).await?;
        let id = pod.to_string();
        let pki = pki.clone();
        let enrolled = tokio::task::spawn_blocking(move || {
            pki.enroll_verified(&node, &csr_der, KUBERNETES, &id, &remote)
        })
        .await
        .map_err(|e| Refusal::Issuer(format!("enrollment task failed: {e}")))??;
        tracing::info!(
            node = %pod.node,
            "kubernetes enrollment: agent/{} proven by {} on that node",
            pod.node,
            pod
        );
        Ok((enrolled, pod))
    }
}

/// Steps 1 to 3 of the module docs, from the review alone: the pod the token is bound to.
fn check_review(
    review: &TokenReviewed,
    account: &AgentServiceAccount,
) -> Result<PodRef, KubeRefusal> {
    if !review.authenticated {
        let error = match review.error.as_str() {
            "" => "authenticated: false".to_string(),
            e => e.to_string(),
        };
        return Err(KubeRefusal::Unauthenticated(error));
    }
    if !review.audiences.iter().any(|a| a == AUDIENCE) {
        return Err(KubeRefusal::WrongAudience(review.audiences.clone()));
    }
    let want = account.username();
    if review.username != want {
        return Err(KubeRefusal::WrongServiceAccount {
            got: review.username.clone(),
            want,
        });
    }
    let missing = |missing| KubeRefusal::NotBoundToPod {
        username: review.username.clone(),
        missing,
    };
    let name = review
        .extra(EXTRA_POD_NAME)
        .ok_or_else(|| missing(EXTRA_POD_NAME))?;
    let uid = review
        .extra(EXTRA_POD_UID)
        .ok_or_else(|| missing(EXTRA_POD_UID))?;
    Ok(PodRef {
        namespace: account.0.namespace.clone(),
        name: name.to_string(),
        uid: uid.to_string(),
    })
}

/// Step 4 of the module docs: the pod is the token's, the agents', on `node` and running.
fn check_pod(
    pod: &PodFacts,
    pod_ref: &PodRef,
    review: &TokenReviewed,
    account: &AgentServiceAccount,
    node: &NodeName,
) -> Result<(), KubeRefusal> {
    let name = pod_ref.to_string();
    if pod.uid != pod_ref.uid {
        return Err(KubeRefusal::PodUidMismatch {
            pod: name,
            token_uid: pod_ref.uid.clone(),
            pod_uid: pod.uid.clone(),
        });
    }
    if pod.service_account != account.0.name {
        return Err(KubeRefusal::PodServiceAccount {
            pod: name,
            got: pod.service_account.clone(),
            want: account.0.name.clone(),
        });
    }
    let on = pod
        .node
        .clone()
        .unwrap_or_else(|| "(none: not scheduled)".into());
    if let Some(token_node) = review.extra(EXTRA_NODE_NAME) {
        if token_node != on {
            return Err(KubeRefusal::WrongNode {
                pod: format!("{name} (its token says node {token_node})"),
                on,
                asked: node.to_string(),
            });
        }
    }
    if on != node.as_str() {
        return Err(KubeRefusal::WrongNode {
            pod: name,
            on,
            asked: node.to_string(),
        });
    }
    if pod.terminating {
        return Err(KubeRefusal::Terminating { pod: name });
    }
    if pod.phase != "Running" {
        return Err(KubeRefusal::NotRunning {
            pod: name,
            phase: pod.phase.clone(),
        });
    }
    Ok(())
}

/// The pod a token names.
#[derive(Debug, Clone)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
