//! The `Fleet` service: the agent list, the fleet-wide halt and resume, the policy, the audit
//! log, and revoking an agent.

use std::sync::Arc;

use faultline_proto::pb::{self, fleet_server::Fleet};
use tonic::{Request, Response, Status};

use crate::authz::Method;
use crate::enroll::Pki;
use crate::experiments::{ops, Trigger};
use crate::metrics;
use crate::state::{now_ms, store_status, State};
use crate::store::HaltRecord;

/// Audit entries returned when the request names no limit.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// The most audit entries one request may ask for.
pub const MAX_AUDIT_LIMIT: u32 = 10_000;

pub struct FleetService {
    pub state: Arc<State>,
    pub pki: Arc<Pki>,
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.state.authorize(&req, Method::ListAgents)?;
        let agents = self
            .state
            .registry
            .list()
            .iter()
            .map(|e| e.to_pb())
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn halt_all(
        &self,
        req: Request<pb::HaltAllRequest>,
    ) -> Result<Response<pb::HaltAllResponse>, Status> {
        let state = &self.state;
        let identity = state.authorize(&req, Method::HaltAll)?;
        let reason = match req.get_ref().reason.trim() {
            "" => "no reason given".to_string(),
            r => r.to_string(),
        };
        let halt = HaltRecord {
            reason: reason.clone(),
            by: identity.to_string(),
            at_unix_ms: now_ms(),
        };
        *state.halt.lock().unwrap_or_else(|p| p.into_inner()) = Some(halt.clone());
        // Signal first: reverting faults matters more than remembering why. Running
        // experiments go first so that they record the reverts as their abort.
        let message = format!("fleet halted by {identity}: {reason}");
        let aborted = ops::abort_all(state, Trigger::Halt, &identity.to_string(), &message).await;
        // Nothing is vouched for while halted, so every renewal from now on makes the agents
        // revert whatever they hold; the RevertAll says so at once and with the reason.
        state.vouches.withdraw_all();
        let mut signalled = 0u32;
        for (_, session) in state.registry.sessions() {
            session.revert_all.order(message.clone());
            signalled += 1;
        }
        metrics::halted(true, &halt.by, &reason, signalled as usize);
        let stored = state.store.set_halt(Some(&halt));
        let _ = state.audit(
            &identity,
            Method::HaltAll.name(),
            format!(
                "halted: {reason}; {signalled} agents signalled, {aborted} experiments aborted"
            ),
            true,
        );
        stored.map_err(|e| {
            Status::internal(format!(
                "{signalled} agents were signalled, but the halt could not be stored: {e}"
            ))
        })?;
        Ok(Response::new(pb::HaltAllResponse {
            agents_signalled: signalled,
            experiments_aborted: aborted,
        }))
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let state = &self.state;
        let identity = state.authorize(&req, Method::Resume)?;
        let was = state.halt.lock().unwrap_or_else(|p| p.into_inner()).take();
        let stored = state.store.set_halt(None);
        let detail = match &was {
            Some(h) => format!("resumed (halted by {}: {})", h.by, h.reason),
            None => "resumed (the fleet was not halted)".to_string(),
        };
        metrics::halted(false, &identity.to_string(), "", 0);
        let _ = state.audit(&identity, Method::Resume.name(), detail, true);
        stored.map_err(store_status)?;
        Ok(Response::new(pb::ResumeResponse {
            was_halted: was.is_some(),
        }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        self.state.authorize(&req, Method::GetPolicy)?;
        Ok(Response::new(self.state.policy_pb()))
    }

    async fn audit_log(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        self.state.authorize(&req, Method::AuditLog)?;
        let limit = match req.get_ref().limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n if n > MAX_AUDIT_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is outside 1..={MAX_AUDIT_LIMIT} (0 means {DEFAULT_AUDIT_LIMIT})"
                )))
            }
            n => n,
        };
        let entries = self
            .state
            .store
            .audit(limit as usize)
            .map_err(store_status)?
            .into_iter()
            .map(|r| pb::AuditEntry {
                at_unix_ms: r.at_unix_ms,
                identity: r.identity,
                action: r.action,
                detail: r.detail,
                allowed: r.allowed,
            })
            .collect();
        Ok(Response::new(pb::AuditLogResponse { entries }))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        let state = &self.state;
        let identity = state.authorize(&req, Method::RevokeAgent)?;
        let node: faultline_core::NodeName = match req.get_ref().node_name.parse() {
            Ok(node) => node,
            Err(e) => {
                let message = format!("node_name: {e}");
                let _ = state.audit(
                    &identity,
                    Method::RevokeAgent.name(),
                    format!("refused: {message}"),
                    false,
                );
                return Err(Status::invalid_argument(message));
            }
        };
        let reason = match req.get_ref().reason.trim() {
            "" => "no reason given".to_string(),
            r => r.to_string(),
        };
        // The record first: from here on the node's certificates are refused in the
        // handshake, so the session closed below cannot come back.
        let (pki, name, by, why) = (
            self.pki.clone(),
            node.to_string(),
            identity.to_string(),
            reason.clone(),
        );
        let revoked = tokio::task::spawn_blocking(move || pki.revoke(&name, &by, &why))
            .await
            .map_err(|e| Status::internal(format!("revocation task failed: {e}")))?
            .map_err(|r| r.status())?;
        let mut closed = false;
        for (name, session) in state.registry.sessions() {
            if name == node.as_str() {
                session.end.cancel();
                closed = true;
            }
        }
        let _ = state.audit(
            &identity,
            Method::RevokeAgent.name(),
            format!(
                "revoked agent/{node}: {reason}; session closed: {closed}; certificates refused \
                 until they expire: {}",
                match revoked.serials.len() {
                    0 => "every one that started by now".to_string(),
                    _ => revoked.serials.join(", "),
                }
            ),
            true,
        );
        Ok(Response::new(pb::RevokeAgentResponse {
            session_closed: closed,
            revoked_serials: revoked.serials,
        }))
    }
}
