//! Kubernetes enrollment's checks against a `tower-test` mock of the API server answering the
//! recorded TokenReview and Pod of an agent on node-a: what the coordinator asks (TokenReview
//! with audience faultline, then that one pod), and every way a token is refused, each refusal
//! naming its check. An attacker's view: a token from another node, another audience, another
//! service account, a recreated pod, a dying pod, a revoked node.

mod kube_support;

use faultline_coordinator::enroll::Revocations;
use faultline_coordinator::kube::enroll::{AgentServiceAccount, KubeEnrollment, KubeRefusal};
use faultline_coordinator::kube::PodAccess;
use faultline_coordinator::store::{RevocationRecord, Revoked};
use faultline_core::NodeName;
use kube_support::identity::{
    pod, review, unauthenticated, IdentityApi, State, POD_NAME, POD_UID, REVIEW_PATH, TOKEN_A,
};
use kube_support::status_json;
use serde_json::{json, Value};
use tonic::Code;

fn node(n: &str) -> NodeName {
    n.parse().expect("node name")
}

fn enrollment(api: &IdentityApi) -> KubeEnrollment {
    let account: AgentServiceAccount = "faultline/faultline-agent".parse().expect("account");
    KubeEnrollment::new(&api.access, Some(account))
}

/// Verifies TOKEN_A (or `token`) for `n` with no revocations.
async fn verify(api: &IdentityApi, token: &str, n: &str) -> Result<String, KubeRefusal> {
    enrollment(api)
        .verify(&node(n), token, &Revocations::default())
        .await
        .map(|p| p.to_string())
}

/// The refusal, its gRPC code and message.
async fn refused(api: &IdentityApi, token: &str, n: &str) -> (Code, String) {
    match verify(api, token, n).await {
        Ok(pod) => panic!("{n} enrolled with {pod}; expected a refusal"),
        Err(r) => {
            let s = r.status();
            (s.code(), s.message().to_string())
        }
    }
}

const POD_GET: &str = "GET /api/v1/namespaces/faultline/pods/faultline-agent-7xk2p";

#[tokio::test]
async fn a_token_bound_to_a_pod_on_node_a_enrolls_node_a_and_never_node_b() {
    let api = IdentityApi::node_a();
    let pod = verify(&api, TOKEN_A, "node-a")
        .await
        .expect("node-a enrolls");
    assert_eq!(pod, format!("pod faultline/{POD_NAME} (uid {POD_UID})"));

    // What was asked: a TokenReview for audience faultline carrying the token, then the pod
    // it is bound to, in the service account's namespace.
    let seen = api.api.seen_full();
    assert_eq!(seen.len(), 2, "{:?}", api.calls());
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, format!("{REVIEW_PATH}?"));
    assert_eq!(seen[0].content_type, "application/json");
    let sent: Value = serde_json::from_str(&seen[0].body).expect("JSON body");
    assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["spec"]["audiences"], json!(["faultline"]));
    assert_eq!(sent["spec"]["token"], TOKEN_A);
    assert_eq!(api.calls()[1], POD_GET);

    // The same token for another node: refused, naming both nodes. The token's own node-name
    // agrees with the pod, so the pod's spec.nodeName decides.
    let (code, msg) = refused(&api, TOKEN_A, "node-b").await;
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        msg,
        "kubernetes_token: pod faultline/faultline-agent-7xk2p is on node node-a, not node-b: \
         an agent enrolls only the node its pod runs on"
    );
}

#[tokio::test]
async fn the_pods_node_decides_when_the_token_names_no_node() {
    // API servers before 1.30 add no node-name to the user's extra.
    let api = IdentityApi::node_a();
    api.set_review(
        TOKEN_A,
        review(|r| {
            let extra = r["status"]["user"]["extra"].as_object_mut().expect("extra");
            extra.remove("authentication.kubernetes.io/node-name");
            extra.remove("authentication.kubernetes.io/node-uid");
        }),
    );
    verify(&api, TOKEN_A, "node-a")
        .await
        .expect("node-a enrolls");
    let (_, msg) = refused(&api, TOKEN_A, "node-b").await;
    assert!(msg.contains("is on node node-a, not node-b"), "{msg}");

    // A token whose node-name disagrees with its pod (the pod object is what counts, and a
    // disagreement is refused whichever node is asked).
    api.set_review(
        TOKEN_A,
        review(|r| {
            r["status"]["user"]["extra"]["authentication.kubernetes.io/node-name"] =
                json!(["node-b"])
        }),
    );
    for asked in ["node-a", "node-b"] {
        let (code, msg) = refused(&api, TOKEN_A, asked).await;
        assert_eq!(code, Code::PermissionDenied);
        assert!(
            msg.contains("(its token says node node-b) is on node node-a"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn tokens_for_another_audience_are_refused_before_any_pod_is_read() {
    let api = IdentityApi::node_a();
    // The API server's own answer for a token projected for another audience.
    let other = "eyJhbGciOiJSUzI1NiJ9.default-audience.sig";
    api.set_review(
        other,
        unauthenticated(
            "[invalid bearer token, token audiences [\"https://kubernetes.default.svc.cluster.local\"] \
             is invalid for the target audiences [\"faultline\"], unknown]",
        ),
    );
    let (code, msg) = refused(&api, other, "node-a").await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        msg.starts_with("kubernetes_token: unauthenticated: "),
        "{msg}"
    );
    assert!(
        msg.contains("is invalid for the target audiences [\"faultline\"]"),
        "{msg}"
    );

    // An authenticator that ignores audiences accepts it, but names no faultline audience.
    let unaware = "eyJhbGciOiJSUzI1NiJ9.audience-unaware.sig";
    api.set_review(unaware, review(|r| r["status"]["audiences"] = json!([])));
    let (code, msg) = refused(&api, unaware, "node-a").await;
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(
        msg,
        "kubernetes_token: wrong audience: the Kubernetes API accepts the token for [], not for \
         \"faultline\" (project it with audience: faultline)"
    );
    let api_aud = "eyJhbGciOiJSUzI1NiJ9.api-audience.sig";
    api.set_review(
        api_aud,
        review(|r| {
            r["status"]["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"])
        }),
    );
    let (_, msg) = refused(&api, api_aud, "node-a").await;
    assert!(msg.contains("wrong audience"), "{msg}");
    assert!(
        !api.calls().iter().any(|c| c.starts_with("GET")),
        "no pod may be read for a refused token: {:?}",
        api.calls()
    );
}

#[tokio::test]
async fn unauthenticated_tokens_are_refused_with_the_api_servers_reason() {
    let api = IdentityApi::node_a();
    let expired = "eyJhbGciOiJSUzI1NiJ9.expired.sig";
    api.set_review(
        expired,
        unauthenticated("[invalid bearer token, service account token has expired]"),
    );
    let (code, msg) = refused(&api, expired, "node-a").await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(msg.contains("service account token has expired"), "{msg}");
    // A made-up token: the API server knows nothing of it.
    let (code, msg) = refused(&api, "not-a-token", "node-a").await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(msg.contains("square/go-jose"), "{msg}");
    // Empty and oversized tokens never reach the API.
    let before = api.calls().len();
    let (code, msg) = refused(&api, "  \n", "node-a").await;
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::InvalidArgument,
            "kubernetes_token: empty; send the projected ServiceAccount token"
        )
    );
    let (code, msg) = refused(&api, &"x".repeat(16 * 1024 + 1), "node-a").await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("16385 bytes; a ServiceAccount token is at most 16384"),
        "{msg}"
    );
    assert_eq!(api.calls().len(), before);
    assert!(!api.calls().iter().any(|c| c.starts_with("GET")));
}

#[tokio::test]
async fn tokens_of_other_service_accounts_are_refused() {
    let api = IdentityApi::node_a();
    // A workload's own token, bound to its pod on node-a.
    let workload = "eyJhbGciOiJSUzI1NiJ9.shop-default.sig";
    api.set_review(
        workload,
        review(|r| {
            let user = &mut r["status"]["user"];
            user["username"] = json!("system:serviceaccount:shop:default");
            user["groups"] = json!([
                "system:serviceaccounts",
                "system:serviceaccounts:shop",
                "system:authenticated"
            ]);
            user["extra"]["authentication.kubernetes.io/pod-name"] =
                json!(["checkout-7d4f9b6c5-abcde"]);
        }),
    );
    let (code, msg) = refused(&api, workload, "node-a").await;
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        msg,
        "kubernetes_token: wrong service account: the token belongs to \
         system:serviceaccount:shop:default, not to \
         system:serviceaccount:faultline:faultline-agent (--agent-service-account)"
    );
    // The agents' account name in another namespace is another account.
    let elsewhere = "eyJhbGciOiJSUzI1NiJ9.chaos-agent.sig";
    api.set_review(
        elsewhere,
        review(|r| {
            r["status"]["user"]["username"] = json!("system:serviceaccount:chaos:faultline-agent")
        }),
    );
    let (_, msg) = refused(&api, elsewhere, "node-a").await;
    assert!(msg.contains("wrong service account: the token belongs to system:serviceaccount:chaos:faultline-agent"), "{msg}");
    // A person or a node is not a service account at all.
    let kubelet = "eyJhbGciOiJSUzI1NiJ9.kubelet.sig";
    api.set_review(
        kubelet,
        review(|r| r["status"]["user"]["username"] = json!("system:node:node-a")),
    );
    let (_, msg) = refused(&api, kubelet, "node-a").await;
    assert!(msg.contains("belongs to system:node:node-a"), "{msg}");
    assert!(!api.calls().iter().any(|c| c.starts_with("GET")));
}

#[tokio::test]
async fn a_token_not_bound_to_a_pod_is_refused() {
    let api = IdentityApi::node_a();
    // `kubectl create token faultline-agent --audience faultline`: right account and audience,
    // bound to nothing.
    let unbound = "eyJhbGciOiJSUzI1NiJ9.unbound.sig";
    api.set_review(
        unbound,
        review(|r| {
            r["status"]["user"]["extra"] = json!({
                "authentication.kubernetes.io/credential-id": ["JTI=0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5"]
            })
        }),
    );
    let (code, msg) = refused(&api, unbound, "node-a").await;
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.starts_with("kubernetes_token: token not bound to a pod: the Kubernetes API names no authentication.kubernetes.io/pod-name for system:serviceaccount:faultline:faultline-agent"), "{msg}");
    // A pod name without its UID is not a binding either.
    api.set_review(
        unbound,
        review(|r| {
            r["status"]["user"]["extra"]
                .as_object_mut()
                .expect("extra")
                .remove("authentication.kubernetes.io/pod-uid");
        }),
    );
    let (_, msg) = refused(&api, unbound, "node-a").await;
    assert!(
        msg.contains("names no authentication.kubernetes.io/pod-uid"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_is_refused_by_uid() {
    let api = IdentityApi::node_a();
    let new_uid = "9e8d7c6b-5a49-4382-b716-a5f4e3d2c1b0";
    api.set_pod(pod(|p| p["metadata"]["uid"] = json!(new_uid)));
    let (code, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        msg,
        format!(
            "kubernetes_token: pod UID mismatch: the token is bound to pod \
             faultline/faultline-agent-7xk2p with uid {POD_UID}, but that pod now has uid {new_uid}"
        )
    );
}

#[tokio::test]
async fn gone_pending_terminating_or_foreign_pods_are_refused() {
    let api = IdentityApi::with(State {
        reviews: [(TOKEN_A.to_string(), review(|_| {}))].into(),
        ..State::default()
    });
    let (code, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(msg, "kubernetes_token: pod faultline/faultline-agent-7xk2p, which the token is bound to, does not exist");

    // Still Pending (the kubelet has not reported Running yet): worth retrying.
    api.set_pod(pod(|p| p["status"]["phase"] = json!("Pending")));
    let (code, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(code, Code::Unavailable, "{msg}");
    assert_eq!(
        msg,
        "kubernetes_token: pod faultline/faultline-agent-7xk2p is Pending, not Running"
    );
    api.set_pod(pod(|p| p["status"]["phase"] = json!("Failed")));
    assert_eq!(
        refused(&api, TOKEN_A, "node-a").await.0,
        Code::PermissionDenied
    );

    api.set_pod(pod(|p| {
        p["metadata"]["deletionTimestamp"] = json!("2025-06-02T10:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(60);
    }));
    let (code, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        msg,
        "kubernetes_token: pod faultline/faultline-agent-7xk2p is terminating"
    );

    api.set_pod(pod(|p| {
        p["spec"]["serviceAccountName"] = json!("default");
        p["spec"]["serviceAccount"] = json!("default");
    }));
    let (_, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(msg, "kubernetes_token: pod faultline/faultline-agent-7xk2p runs as service account default, not faultline-agent");

    api.set_pod(pod(|p| {
        p["spec"].as_object_mut().expect("spec").remove("nodeName");
    }));
    let (_, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert!(
        msg.contains("is on node (none: not scheduled), not node-a"),
        "{msg}"
    );
}

#[tokio::test]
async fn api_failures_name_the_permission_and_are_worth_retrying() {
    let api = IdentityApi::node_a();
    api.state.lock().expect("state").review_error = Some((
        403,
        status_json(
            403,
            "Forbidden",
            "tokenreviews.authentication.k8s.io is forbidden: User \
             \"system:serviceaccount:faultline:faultline-coordinator\" cannot create resource \
             \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
        ),
    ));
    let (code, msg) = refused(&api, TOKEN_A, "node-a").await;
    assert_eq!(code, Code::Unavailable);
    assert!(msg.starts_with("kubernetes_token: checking the token with the Kubernetes API failed: reviewing the token (TokenReview): tokenreviews.authentication.k8s.io is forbidden"), "{msg}");
    assert!(
        msg.contains("needs create on tokenreviews (authentication.k8s.io)"),
        "{msg}"
    );
}

#[tokio::test]
async fn without_kubernetes_access_or_account_the_credential_is_refused_naming_why() {
    let off = KubeEnrollment::new(&PodAccess::none(), "faultline/faultline-agent".parse().ok());
    let err = off
        .verify(&node("node-a"), TOKEN_A, &Revocations::default())
        .await
        .expect_err("off");
    assert_eq!(err.status().code(), Code::FailedPrecondition);
    assert!(err.to_string().starts_with("kubernetes_token: Kubernetes enrollment is off on this coordinator: the coordinator has no Kubernetes access"), "{err}");
    let api = IdentityApi::node_a();
    let none = KubeEnrollment::new(&api.access, None);
    let err = none
        .verify(&node("node-a"), TOKEN_A, &Revocations::default())
        .await
        .expect_err("off");
    assert!(
        err.to_string().ends_with("--agent-service-account is none"),
        "{err}"
    );
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn a_revoked_node_enrolls_again_only_from_a_pod_created_after_the_revocation() {
    let api = IdentityApi::node_a();
    // The recorded pod was created at 2025-06-02T09:14:07Z; node-a is revoked an hour later.
    let revoked_at = 1_748_855_647_000 + 3_600_000;
    let revocations = Revocations::from_records(vec![RevocationRecord {
        node_name: "node-a".into(),
        revoked: Revoked {
            by: "admin/admin".into(),
            at_unix_ms: revoked_at,
            reason: "disk image compromised".into(),
        },
        serials: vec![],
    }]);
    let e = enrollment(&api);
    let err = e
        .verify(&node("node-a"), TOKEN_A, &revocations)
        .await
        .expect_err("the old pod's token");
    assert_eq!(err.status().code(), Code::PermissionDenied);
    assert_eq!(
        err.to_string(),
        "kubernetes_token: node node-a was revoked by admin/admin at 2025-06-02T10:14:07Z: disk \
         image compromised; it may enroll again only from an agent pod created after that (pod \
         faultline/faultline-agent-7xk2p was created at 2025-06-02T09:14:07Z)"
    );
    // The DaemonSet's new pod (same name here, new creation time) enrolls.
    api.set_pod(pod(|p| {
        p["metadata"]["creationTimestamp"] = json!("2025-06-02T10:20:00Z")
    }));
    e.verify(&node("node-a"), TOKEN_A, &revocations)
        .await
        .expect("a pod made after the revocation");
    // Other nodes were never affected.
    assert!(revocations.of_node("node-b").is_none());
}
