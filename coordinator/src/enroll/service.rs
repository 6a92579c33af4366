//! `Enrollment.Enroll`, the only service of the enrollment listener. The caller has no
//! certificate: it proves which node it is with a credential, and its CSR proves it holds the
//! key the certificate will be for. Every attempt is rate-limited per source address and
//! audited (the identity in the audit entry is the one the caller asked for).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use faultline_core::{Identity, Labels, NodeName, Role};
use faultline_identity::tls::AnonymousPeer;
use faultline_proto::pb::{self, enroll_request::Credential, enrollment_server::Enrollment};
use tonic::{Request, Response, Status};

use super::{when, Pki, Refusal, JOIN_TOKEN};
use crate::state::State;

/// The audit action of enrollment attempts.
pub const ACTION: &str = "Enrollment.Enroll";

pub struct EnrollmentService {
    pub state: Arc<State>,
    pub pki: Arc<Pki>,
    pub kubernetes: crate::kube::enroll::KubeEnrollment,
}

/// The credential of a request, named for messages.
fn kind(c: &Option<Credential>) -> &'static str {
    match c {
        Some(Credential::JoinToken(_)) => JOIN_TOKEN,
        Some(Credential::KubernetesToken(_)) => "kubernetes",
        None => "none",
    }
}

/// The public part of a join token, for logs (never the secret).
fn token_id(c: &Option<Credential>) -> String {
    match c {
        Some(Credential::JoinToken(t)) => t
            .trim()
            .split_once('.')
            .map(|(id, _)| id.chars().take(16).collect())
            .unwrap_or_else(|| "(malformed)".into()),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let remote = req
            .extensions()
            .get::<AnonymousPeer>()
            .map(|p| p.remote)
            .or_else(|| req.remote_addr());
        let req = req.into_inner();
        let claimed = Identity::new(
            Role::Agent,
            req.node_name.chars().take(253).collect::<String>(),
        );
        let from = remote.map(|r| r.to_string()).unwrap_or_else(|| "?".into());
        let what = match token_id(&req.credential) {
            id if id.is_empty() => format!("with credential {}", kind(&req.credential)),
            id => format!("with join token {id}"),
        };
        let outcome = self.attempt(remote, req).await;
        let detail = match &outcome {
            Ok(r) => format!(
                "enrolled from {from} {what}: certificate valid until {}, labels {}",
                when(r.not_after_unix_ms),
                Labels(r.labels.clone().into_iter().collect())
            ),
            Err(status) => format!("refused from {from} {what}: {}", status.message()),
        };
        crate::metrics::enrollment(outcome.is_ok(), &claimed.to_string(), &detail);
        let _ = self.state.audit(&claimed, ACTION, detail, outcome.is_ok());
        outcome.map(Response::new)
    }
}

impl EnrollmentService {
    async fn attempt(
        &self,
        remote: Option<SocketAddr>,
        req: pb::EnrollRequest,
    ) -> Result<pb::EnrollResponse, Status> {
        if let Some(remote) = remote {
            if let Err(wait) = self.pki.limiter.attempt(remote.ip(), Instant::now()) {
                return Err(Status::resource_exhausted(format!(
                    "too many enrollment attempts from {}: at most {} a minute; retry in {} s",
                    remote.ip(),
                    self.pki.limiter.per_minute(),
                    wait.as_secs() + 1
                )));
            }
        }
        let node: NodeName = req
            .node_name
            .parse()
            .map_err(|e| Status::invalid_argument(format!("node_name: {e}")))?;
        let remote = remote.map(|r| r.to_string()).unwrap_or_default();
        let pki = self.pki.clone();
        let enrolled = match req.credential {
            Some(Credential::JoinToken(token)) => {
                let csr = req.csr_der;
                tokio::task::spawn_blocking(move || {
                    pki.redeem_join_token(&node, &token, &csr, &remote)
                })
                .await
                .map_err(|e| Status::internal(format!("enrollment task failed: {e}")))?
                .map_err(|r: Refusal| r.status())?
                .0
            }
            // TokenReview, bound to a pod on this node (crate::kube::enroll).
            Some(Credential::KubernetesToken(token)) => {
                self.kubernetes
                    .enroll(&pki, node, &token, req.csr_der, remote)
                    .await
                    .map_err(|r| r.status())?
                    .0
            }
            None => {
                return Err(Status::invalid_argument(
                    "credential: give a join_token (from `faultctl tokens create`)",
                ))
            }
        };
        Ok(pb::EnrollResponse {
            chain_pem: enrolled.issued.chain_pem,
            ca_bundle_pem: self.pki.ca_bundle_pem.clone(),
            not_after_unix_ms: enrolled.issued.not_after_unix_ms,
            labels: enrolled.labels.into_iter().collect(),
        })
    }
}
