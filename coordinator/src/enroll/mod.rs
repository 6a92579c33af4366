//! The coordinator as an issuer of agent identities: enrollment (a credential and a CSR in, a
//! short-lived certificate out), renewal over the agent's session, join tokens, and
//! revocation.
//!
//! - [`Pki`]: the issuer, the revoked set and the enrollment records, with the rules every
//!   path shares. Its methods do store I/O: call them off the async threads.
//! - [`service`]: `Enrollment.Enroll`, served alone on the enrollment listener (server-only
//!   TLS). Credentials: join tokens; Kubernetes ServiceAccount tokens, checked by
//!   [`crate::kube::enroll`].
//! - [`tokens`]: `Tokens.Create/List/Revoke` (admin).
//! - [`revocations`]: the set the handshake consults.
//! - [`ratelimit`]: enrollment attempts per source address.

pub mod ratelimit;
pub mod revocations;
pub mod service;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::NodeName;
use faultline_identity::pki::{AgentIssuer, IssuedAgent, IssuerError};
use faultline_identity::token::JoinToken;

use crate::state::now_ms;
use crate::store::{
    EnrollStore, EnrollmentRecord, IssuedRecord, RevocationRecord, Revoked, StoreError, TokenRecord,
};
use ratelimit::RateLimiter;
pub use revocations::{when, Revocations};

/// Default lifetime of agent certificates.
pub const DEFAULT_AGENT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest `--agent-cert-ttl`.
pub const MIN_AGENT_CERT_TTL: Duration = Duration::from_secs(60);
/// Longest `--agent-cert-ttl`.
pub const MAX_AGENT_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The credential kind of join-token enrollments, as recorded.
pub const JOIN_TOKEN: &str = "join-token";

/// Where the issuing CA is and what it issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The issuing CA's certificate, then its chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Lifetime of agent certificates (`--agent-cert-ttl`). The flag allows 1m..=30d; the
    /// library takes any non-zero value (tests use shorter ones).
    pub agent_cert_ttl: Duration,
}

/// Enrollment settings of a coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentConfig {
    /// No issuer: no enrollment listener, renewals are answered with an error.
    pub issuer: Option<IssuerConfig>,
    /// The enrollment listener (server-only TLS, `Enrollment` alone); `None` serves none.
    pub listen: Option<SocketAddr>,
    /// Enrollment attempts per minute per source address.
    pub attempts_per_minute: u32,
    /// Kubernetes enrollment: the agents' ServiceAccount (`None`: off). See [`crate::kube::enroll`].
    pub kubernetes: Option<crate::kube::enroll::AgentServiceAccount>,
}

impl EnrollmentConfig {
    /// No issuer and no enrollment listener.
    pub fn disabled() -> Self {
        EnrollmentConfig {
            issuer: None,
            listen: None,
            attempts_per_minute: ratelimit::DEFAULT_ATTEMPTS_PER_MINUTE,
            kubernetes: None,
        }
    }
}

/// Why an enrollment, renewal or token operation was refused; the service turns it into a
/// gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The credential is unknown or does not match.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is known but may not be used (expired, used up, revoked; a revoked node).
    #[error("{0}")]
    Denied(String),
    /// This coordinator has no issuer.
    #[error(
        "this coordinator issues no certificates (start it with --issuer-cert and --issuer-key)"
    )]
    NoIssuer,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Issuer(String),
}

impl From<IssuerError> for Refusal {
    fn from(e: IssuerError) -> Self {
        match e {
            IssuerError::Csr(_) => Refusal::Invalid(e.to_string()),
            other => Refusal::Issuer(other.to_string()),
        }
    }
}

impl Refusal {
    /// The one conversion into a gRPC status.
    pub fn status(&self) -> tonic::Status {
        let m = self.to_string();
        match self {
            Refusal::Invalid(_) => tonic::Status::invalid_argument(m),
            Refusal::Unauthenticated(_) => tonic::Status::unauthenticated(m),
            Refusal::Denied(_) => tonic::Status::permission_denied(m),
            Refusal::NoIssuer => tonic::Status::failed_precondition(m),
            Refusal::Store(_) | Refusal::Issuer(_) => tonic::Status::internal(m),
        }
    }
}

/// A certificate handed out.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub issued: IssuedAgent,
    pub labels: BTreeMap<String, String>,
}

/// The issuer, the revoked set and the enrollment records.
pub struct Pki {
    issuer: Option<AgentIssuer>,
    /// What agents should trust for the coordinator: the CA file the coordinator verifies
    /// clients against (sent in every answer).
    pub ca_bundle_pem: String,
    store: Arc<dyn EnrollStore>,
    pub revocations: Arc<Revocations>,
    /// Enrollment records by node (their labels go into every session's Hello).
    enrolled: Mutex<HashMap<String, EnrollmentRecord>>,
    /// Serializes token redemption: a token's use count is read and written under it.
    redeeming: Mutex<()>,
    pub limiter: RateLimiter,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Pki {
    /// Loads the revoked set and enrollment records from `store`.
    pub fn new(
        issuer: Option<AgentIssuer>,
        ca_bundle_pem: String,
        store: Arc<dyn EnrollStore>,
        attempts_per_minute: u32,
    ) -> Result<Self, StoreError> {
        let revocations = Arc::new(Revocations::from_records(store.revocations()?));
        let enrolled = store
            .enrollments()?
            .into_iter()
            .map(|r| (r.node_name.clone(), r))
            .collect();
        Ok(Pki {
            issuer,
            ca_bundle_pem,
            store,
            revocations,
            enrolled: Mutex::new(enrolled),
            redeeming: Mutex::new(()),
            limiter: RateLimiter::new(attempts_per_minute),
        })
    }

    pub fn has_issuer(&self) -> bool {
        self.issuer.is_some()
    }

    fn issuer(&self) -> Result<&AgentIssuer, Refusal> {
        self.issuer.as_ref().ok_or(Refusal::NoIssuer)
    }

    pub fn store(&self) -> &dyn EnrollStore {
        self.store.as_ref()
    }

    /// The labels `node` enrolled with (they win over the labels its Hello carries).
    pub fn enrolled_labels(&self, node: &str) -> Option<BTreeMap<String, String>> {
        let enrolled = self.enrolled.lock().unwrap_or_else(|p| p.into_inner());
        enrolled.get(node).map(|r| r.labels.clone())
    }

    /// A revoked node's new certificates start after the revocation.
    fn not_before_floor(&self, node: &str) -> Option<SystemTime> {
        self.revocations
            .of_node(node)
            .map(|r| UNIX_EPOCH + Duration::from_millis(r.revoked.at_unix_ms.max(0) as u64 + 1000))
    }

    fn record_issued(&self, node: &str, issued: &IssuedAgent, via: &str) -> Result<(), Refusal> {
        let rec = IssuedRecord {
            node_name: node.to_string(),
            serial: issued.serial.clone(),
            not_before_unix_ms: issued.not_before_unix_ms,
            not_after_unix_ms: issued.not_after_unix_ms,
            via: via.to_string(),
        };
        self.store.put_issued(&rec, now_ms())?;
        Ok(())
    }

    /// Enrollment with a join token: checks the token (known, secret matches, not revoked,
    /// not expired, not used up; a revoked node needs a token made after its revocation),
    /// issues the certificate, counts the use and records the enrollment.
    pub fn redeem_join_token(
        &self,
        node: &NodeName,
        token: &str,
        csr_der: &[u8],
        remote: &str,
    ) -> Result<(Enrolled, TokenRecord), Refusal> {
        let issuer = self.issuer()?;
        let token = JoinToken::parse(token)
            .map_err(|e| Refusal::Unauthenticated(format!("join_token: {e}")))?;
        let _one_at_a_time = self.redeeming.lock().unwrap_or_else(|p| p.into_inner());
        let id = token.id();
        let mut rec = self
            .store
            .token(id)?
            .filter(|rec| token.verify(&rec.hash))
            .ok_or_else(|| {
                Refusal::Unauthenticated(format!(
                    "join token {id} is not valid: no token with that id and secret exists on \
                     this coordinator"
                ))
            })?;
        let now = now_ms();
        if let Some(r) = &rec.revoked {
            return Err(Refusal::Denied(format!(
                "join token {id} was revoked by {} at {}",
                r.by,
                when(r.at_unix_ms)
            )));
        }
        if now >= rec.expires_unix_ms {
            return Err(Refusal::Denied(format!(
                "join token {id} expired at {}",
                when(rec.expires_unix_ms)
            )));
        }
        if rec.used >= rec.uses {
            return Err(Refusal::Denied(format!(
                "join token {id} has been used {} of {} times (by {})",
                rec.used,
                rec.uses,
                rec.nodes.join(", ")
            )));
        }
        if let Some(revoked) = self.revocations.of_node(node.as_str()) {
            if rec.created_unix_ms <= revoked.revoked.at_unix_ms {
                return Err(Refusal::Denied(format!(
                    "{}; it may enroll again only with a join token created after that (join \
                     token {id} was created at {})",
                    Revocations::describe(&revoked),
                    when(rec.created_unix_ms)
                )));
            }
        }
        let issued = issuer.issue(node, csr_der, self.not_before_floor(node.as_str()))?;
        rec.used += 1;
        rec.nodes.push(node.to_string());
        self.store.put_token(&rec)?;
        self.record_issued(node.as_str(), &issued, "enroll")?;
        let enrollment = EnrollmentRecord {
            node_name: node.to_string(),
            credential: JOIN_TOKEN.into(),
            token_id: id.to_string(),
            labels: rec.labels.clone(),
            enrolled_unix_ms: now,
            remote_address: remote.to_string(),
        };
        self.store.put_enrollment(&enrollment)?;
        self.enrolled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), enrollment);
        let labels = rec.labels.clone();
        Ok((Enrolled { issued, labels }, rec))
    }

    /// Enrollment with a credential the caller verified (a Kubernetes ServiceAccount token,
    /// [`crate::kube::enroll`], which also checks revocations): issues the certificate and
    /// records the enrollment as `credential` with `credential_id`, without labels.
    pub fn enroll_verified(
        &self,
        node: &NodeName,
        csr_der: &[u8],
        credential: &str,
        credential_id: &str,
        remote: &str,
    ) -> Result<Enrolled, Refusal> {
        let issuer = self.issuer()?;
        let issued = issuer.issue(node, csr_der, self.not_before_floor(node.as_str()))?;
        self.record_issued(node.as_str(), &issued, "enroll")?;
        let enrollment = EnrollmentRecord {
            node_name: node.to_string(),
            credential: credential.to_string(),
            token_id: credential_id.to_string(),
            labels: BTreeMap::new(),
            enrolled_unix_ms: now_ms(),
            remote_address: remote.to_string(),
        };
        self.store.put_enrollment(&enrollment)?;
        self.enrolled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), enrollment);
        Ok(Enrolled {
            issued,
            labels: BTreeMap::new(),
        })
    }

    /// A renewal over the session that opened at `session_opened_ms`: refused when the node
    /// was revoked since (the session's certificate is then revoked too).
    pub fn renew(
        &self,
        node: &NodeName,
        csr_der: &[u8],
        session_opened_ms: i64,
    ) -> Result<IssuedAgent, Refusal> {
        let issuer = self.issuer()?;
        if let Some(revoked) = self.revocations.of_node(node.as_str()) {
            if revoked.revoked.at_unix_ms >= session_opened_ms {
                return Err(Refusal::Denied(format!(
                    "renewal refused: {}",
                    Revocations::describe(&revoked)
                )));
            }
        }
        let issued = issuer.issue(node, csr_der, self.not_before_floor(node.as_str()))?;
        self.record_issued(node.as_str(), &issued, "renew")?;
        Ok(issued)
    }

    /// Revokes `node`: its certificates issued so far (and any agent certificate for it that
    /// started by now) are refused from now on. Returns the record, with the serials it lists.
    pub fn revoke(&self, node: &str, by: &str, reason: &str) -> Result<RevocationRecord, Refusal> {
        let now = now_ms();
        let mut serials: Vec<String> = self
            .store
            .issued(node)?
            .into_iter()
            .filter(|r| r.not_after_unix_ms > now)
            .map(|r| r.serial)
            .collect();
        if let Some(old) = self.revocations.of_node(node) {
            for s in old.serials {
                if !serials.contains(&s) {
                    serials.push(s);
                }
            }
        }
        let rec = RevocationRecord {
            node_name: node.to_string(),
            revoked: Revoked {
                by: by.to_string(),
                at_unix_ms: now,
                reason: reason.to_string(),
            },
            serials,
        };
        self.store.put_revocation(&rec)?;
        self.revocations.insert(rec.clone());
        Ok(rec)
    }

    /// The time an issued certificate ends, for messages.
    pub fn not_after(issued: &IssuedAgent) -> String {
        when(issued.not_after_unix_ms)
    }
}

/// `SystemTime` to unix ms (for tests and messages).
pub fn unix_ms(t: SystemTime) -> i64 {
    ms(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use faultline_identity::pki::csr::NewKey;

    fn pki(dir: &std::path::Path) -> Pki {
        faultline_identity::pki::init_dir(
            &dir.join("certs"),
            &faultline_identity::pki::InitOptions {
                sans: vec![],
                agents: vec![],
                days: 1,
                force: false,
            },
        )
        .expect("dev CA");
        let issuer = AgentIssuer::load(
            &dir.join("certs/ca.pem"),
            &dir.join("certs/ca-key.pem"),
            Duration::from_secs(3600),
        )
        .expect("issuer");
        let store = Arc::new(SledStore::open(&dir.join("data")).expect("store"));
        Pki::new(Some(issuer), String::new(), store, 30).expect("pki")
    }

    #[test]
    fn renewal_is_refused_for_a_session_opened_before_the_revocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki(dir.path());
        let node: NodeName = "node-a".parse().expect("node");
        let csr = || NewKey::generate(&node).expect("key").csr_der().to_vec();
        let opened = now_ms() - 1;
        let first = pki
            .renew(&node, &csr(), opened)
            .expect("renewal before revocation");
        let rec = pki.revoke("node-a", "admin/admin", "lost").expect("revoke");
        assert_eq!(rec.serials, vec![first.serial.clone()]);
        let e = pki.renew(&node, &csr(), opened).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("renewal refused: node node-a was revoked by admin/admin at "),
            "{e}"
        );
        assert!(e.to_string().ends_with(": lost"), "{e}");
        assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
        // A session that opened after the revocation (its certificate passed the handshake
        // check, so it is a new one) renews, and the new certificate starts after it.
        std::thread::sleep(Duration::from_millis(5));
        let later = pki
            .renew(&node, &csr(), now_ms())
            .expect("new session renews");
        assert!(later.not_before_unix_ms > rec.revoked.at_unix_ms);
        // A CSR whose signature does not verify is refused naming the field.
        let mut bad = csr();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let e = pki.renew(&node, &bad, now_ms()).expect_err("bad csr");
        assert!(e.to_string().starts_with("csr_der: "), "{e}");
    }
}
