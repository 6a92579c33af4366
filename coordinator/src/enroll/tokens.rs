//! `Tokens.Create`, `List`, `Revoke` (admin only, audited): join tokens for hosts outside
//! Kubernetes. The token is in Create's answer only; the store keeps the hash of its secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::Labels;
use faultline_identity::token::JoinToken;
use faultline_proto::pb::{self, tokens_server::Tokens};
use tonic::{Request, Response, Status};

use super::{when, Pki, Refusal};
use crate::authz::Method;
use crate::state::{now_ms, State};
use crate::store::{Revoked, TokenRecord};

/// Lifetime of a token when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most enrollments one token may allow.
pub const MAX_TOKEN_USES: u32 = 10_000;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 256;

/// A validated Create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub ttl: Duration,
    pub uses: u32,
    pub labels: BTreeMap<String, String>,
    pub description: String,
}

impl TryFrom<&pb::CreateTokenRequest> for NewToken {
    type Error = String;
    fn try_from(req: &pb::CreateTokenRequest) -> Result<Self, String> {
        let ttl = match req.ttl_ms {
            0 => DEFAULT_TOKEN_TTL,
            ms => Duration::from_millis(ms),
        };
        faultline_core::duration::check_range("ttl_ms", ttl, Duration::from_secs(1), MAX_TOKEN_TTL)
            .map_err(|e| e.to_string())?;
        let uses = match req.uses {
            0 => 1,
            n if n > MAX_TOKEN_USES => {
                return Err(format!(
                    "uses: {n} is outside 1..={MAX_TOKEN_USES} (0 means 1)"
                ))
            }
            n => n,
        };
        let labels = Labels::from_map(req.labels.clone().into_iter().collect())
            .map_err(|e| format!("labels: {e}"))?;
        let description = req.description.trim().to_string();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(format!(
                "description: {} characters is more than {MAX_DESCRIPTION}",
                description.chars().count()
            ));
        }
        Ok(NewToken {
            ttl,
            uses,
            labels: labels.0,
            description,
        })
    }
}

pub fn to_pb(rec: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: rec.id.clone(),
        description: rec.description.clone(),
        labels: rec.labels.clone().into_iter().collect(),
        created_by: rec.created_by.clone(),
        created_unix_ms: rec.created_unix_ms,
        expires_unix_ms: rec.expires_unix_ms,
        uses: rec.uses,
        used: rec.used,
        revoked: rec.revoked.is_some(),
        nodes: rec.nodes.clone(),
    }
}

pub struct TokensService {
    pub state: Arc<State>,
    pub pki: Arc<Pki>,
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("store task failed: {e}")))?
        .map_err(|r| r.status())
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let identity = self.state.authorize(&req, Method::TokensCreate)?;
        let refuse = |message: String| {
            let _ = self.state.audit(
                &identity,
                Method::TokensCreate.name(),
                format!("refused: {message}"),
                false,
            );
            message
        };
        let new =
            NewToken::try_from(req.get_ref()).map_err(|m| Status::invalid_argument(refuse(m)))?;
        if !self.pki.has_issuer() {
            return Err(Refusal::NoIssuer.status().map_message(refuse));
        }
        let pki = self.pki.clone();
        let by = identity.to_string();
        let (token, rec) = blocking(move || {
            // Ids are short: make another on the rare collision.
            for _ in 0..16 {
                let token = JoinToken::generate().map_err(|e| Refusal::Issuer(e.to_string()))?;
                if pki.store().token(token.id())?.is_some() {
                    continue;
                }
                let now = now_ms();
                let rec = TokenRecord {
                    id: token.id().to_string(),
                    hash: token.hash(),
                    description: new.description.clone(),
                    labels: new.labels.clone(),
                    created_by: by.clone(),
                    created_unix_ms: now,
                    expires_unix_ms: now + new.ttl.as_millis() as i64,
                    uses: new.uses,
                    used: 0,
                    revoked: None,
                    nodes: vec![],
                };
                pki.store().put_token(&rec)?;
                return Ok((token, rec));
            }
            Err(Refusal::Issuer("could not find an unused token id".into()))
        })
        .await?;
        let _ = self.state.audit(
            &identity,
            Method::TokensCreate.name(),
            format!(
                "join token {}: {} use(s), expires at {}, labels {}, description {:?}",
                rec.id,
                rec.uses,
                when(rec.expires_unix_ms),
                Labels(rec.labels.clone()),
                rec.description
            ),
            true,
        );
        Ok(Response::new(pb::CreateTokenResponse {
            token: token.reveal(),
            info: Some(to_pb(&rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.state.authorize(&req, Method::TokensList)?;
        let pki = self.pki.clone();
        let tokens = blocking(move || Ok(pki.store().tokens()?)).await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(to_pb).collect(),
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let identity = self.state.authorize(&req, Method::TokensRevoke)?;
        let id = req.get_ref().id.trim().to_ascii_lowercase();
        let pki = self.pki.clone();
        let by = identity.to_string();
        let lookup = id.clone();
        let result = blocking(move || {
            let mut rec = pki.store().token(&lookup)?.ok_or_else(|| {
                Refusal::Invalid(format!("id: no join token {lookup:?} on this coordinator"))
            })?;
            if rec.revoked.is_none() {
                rec.revoked = Some(Revoked {
                    by,
                    at_unix_ms: now_ms(),
                    reason: String::new(),
                });
                pki.store().put_token(&rec)?;
            }
            Ok(rec)
        })
        .await;
        let detail = match &result {
            Ok(rec) => format!(
                "join token {id} revoked (used {} of {} times)",
                rec.used, rec.uses
            ),
            Err(status) => format!("refused: {}", status.message()),
        };
        let _ = self.state.audit(
            &identity,
            Method::TokensRevoke.name(),
            detail,
            result.is_ok(),
        );
        Ok(Response::new(to_pb(&result?)))
    }
}

/// Rewrites a status's message (keeping its code).
trait MapMessage {
    fn map_message(self, f: impl FnOnce(String) -> String) -> Status;
}

impl MapMessage for Status {
    fn map_message(self, f: impl FnOnce(String) -> String) -> Status {
        Status::new(self.code(), f(self.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ttl_ms: u64, uses: u32, labels: &[(&str, &str)]) -> pb::CreateTokenRequest {
        pb::CreateTokenRequest {
            ttl_ms,
            uses,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            description: String::new(),
        }
    }

    #[test]
    fn defaults_and_ranges() {
        let t = NewToken::try_from(&req(0, 0, &[])).expect("defaults");
        assert_eq!((t.ttl, t.uses), (DEFAULT_TOKEN_TTL, 1));
        let e = NewToken::try_from(&req(8 * 24 * 3600 * 1000, 1, &[])).expect_err("ttl");
        assert_eq!(e, "ttl_ms: 8days is outside the allowed range 1s..=7days");
        let e = NewToken::try_from(&req(500, 1, &[])).expect_err("ttl");
        assert!(e.starts_with("ttl_ms: 500ms is outside"), "{e}");
        let e = NewToken::try_from(&req(0, 10_001, &[])).expect_err("uses");
        assert_eq!(e, "uses: 10001 is outside 1..=10000 (0 means 1)");
        let e = NewToken::try_from(&req(0, 1, &[("Bad Key", "v")])).expect_err("labels");
        assert!(e.starts_with("labels: "), "{e}");
    }
}
