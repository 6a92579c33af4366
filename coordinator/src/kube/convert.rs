//! Kubernetes API objects into the coordinator's views: a Pod into a [`PodView`] (node, UID,
//! phase, each regular container with its runtime ID and state) or the [`PodFacts`] enrollment
//! checks, a Node into a [`NodeView`], a TokenReview's status into [`TokenReviewed`].

use std::collections::BTreeMap;

use faultline_core::experiment::{ContainerView, NodeView, PodView};
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Node, Pod};

/// What the API server says about a token (a TokenReview's status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenReviewed {
    pub authenticated: bool,
    /// Why it is not authenticated, as the API server puts it.
    pub error: String,
    pub audiences: Vec<String>,
    pub username: String,
    pub uid: String,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl TokenReviewed {
    /// The first value of the user's extra `key`, when not empty.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// What enrollment reads of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub service_account: String,
    pub phase: String,
    pub terminating: bool,
    pub created_unix_ms: Option<i64>,
}

/// `containerd://0a1b...` -> `0a1b...` (any runtime prefix).
pub fn bare_container_id(id: &str) -> &str {
    id.rsplit_once("://").map_or(id, |(_, bare)| bare)
}

fn state_text(state: Option<&ContainerState>) -> (bool, String) {
    let Some(s) = state else {
        return (false, "no state reported".into());
    };
    if s.running.is_some() {
        return (true, "running".into());
    }
    if let Some(w) = &s.waiting {
        return (
            false,
            format!(
                "waiting: {}",
                w.reason.as_deref().unwrap_or("unknown reason")
            ),
        );
    }
    if let Some(t) = &s.terminated {
        return (
            false,
            format!(
                "terminated: {} (exit code {})",
                t.reason.as_deref().unwrap_or("unknown reason"),
                t.exit_code
            ),
        );
    }
    (false, "no state reported".into())
}

fn container_view(name: &str, status: Option<&ContainerStatus>) -> ContainerView {
    let Some(st) = status else {
        return ContainerView {
            name: name.to_string(),
            id: String::new(),
            running: false,
            state: "no status yet".into(),
        };
    };
    let (running, state) = state_text(st.state.as_ref());
    ContainerView {
        name: name.to_string(),
        id: bare_container_id(st.container_id.as_deref().unwrap_or_default()).to_string(),
        running,
        state,
    }
}

/// The planner's view of a pod. Containers come from the spec (so a container without a status
/// yet still shows), with the status of the same name.
pub fn pod_view(pod: &Pod) -> PodView {
    let meta = &pod.metadata;
    let statuses: &[ContainerStatus] = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let mut containers: Vec<ContainerView> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| container_view(&c.name, statuses.iter().find(|st| st.name == c.name)))
                .collect()
        })
        .unwrap_or_default();
    // A status for a container the spec does not list (should not happen): keep it visible.
    for st in statuses {
        if !containers.iter().any(|c| c.name == st.name) {
            containers.push(container_view(&st.name, Some(st)));
        }
    }
    PodView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        terminating: meta.deletion_timestamp.is_some(),
        containers,
    }
}

/// The planner's view of a node: its labels and whether its `Ready` condition is `True`.
pub fn node_view(node: &Node) -> NodeView {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready,
    }
}

/// What enrollment reads of a pod.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        terminating: meta.deletion_timestamp.is_some(),
        created_unix_ms: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond()),
    }
}

/// A TokenReview's status: who the API server says the token belongs to.
pub fn token_reviewed(status: Option<&TokenReviewStatus>) -> TokenReviewed {
    let Some(s) = status else {
        return TokenReviewed {
            error: "the TokenReview came back without a status".into(),
            ..TokenReviewed::default()
        };
    };
    let user = s.user.as_ref();
    TokenReviewed {
        authenticated: s.authenticated.unwrap_or(false),
        error: s.error.clone().unwrap_or_default(),
        audiences: s.audiences.clone().unwrap_or_default(),
        username: user.and_then(|u| u.username.clone()).unwrap_or_default(),
        uid: user.and_then(|u| u.uid.clone()).unwrap_or_default(),
        extra: user.and_then(|u| u.extra.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_prefixes_are_stripped() {
        assert_eq!(bare_container_id("containerd://0a1b"), "0a1b");
        assert_eq!(bare_container_id("cri-o://ff"), "ff");
        assert_eq!(bare_container_id("docker://12"), "12");
        assert_eq!(bare_container_id("abc"), "abc");
        assert_eq!(bare_container_id(""), "");
    }
}
