//! Who may call what: the authentication interceptor every service is wrapped with, and the
//! per-method role check whose refusals say which identity was refused for what.

use faultline_core::{Identity, Role};
use faultline_identity::tls;
use tonic::{Request, Status};

use crate::metrics::{self, RefusalReason};

/// Every RPC the coordinator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ListAgents,
    HaltAll,
    Resume,
    GetPolicy,
    AuditLog,
    ExperimentCreate,
    ExperimentGet,
    ExperimentList,
    ExperimentStart,
    ExperimentAbort,
    ExperimentWatch,
    ExperimentReport,
    Connect,
    RevokeAgent,
    TokensCreate,
    TokensList,
    TokensRevoke,
    ExperimentDelete,
    ScheduleApply,
    ScheduleGet,
    ScheduleList,
    ScheduleDelete,
    ScheduleSuspend,
    ScheduleResume,
    ScheduleTrigger,
    WorkflowCreate,
    WorkflowGet,
    WorkflowList,
    WorkflowApprove,
    WorkflowAbort,
    WorkflowDelete,
}

/// The roles a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    View,
    Operate,
    Administer,
    Agent,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::ListAgents => "Fleet.ListAgents",
            Method::HaltAll => "Fleet.HaltAll",
            Method::Resume => "Fleet.Resume",
            Method::GetPolicy => "Fleet.GetPolicy",
            Method::AuditLog => "Fleet.AuditLog",
            Method::ExperimentCreate => "Experiments.Create",
            Method::ExperimentGet => "Experiments.Get",
            Method::ExperimentList => "Experiments.List",
            Method::ExperimentStart => "Experiments.Start",
            Method::ExperimentAbort => "Experiments.Abort",
            Method::ExperimentWatch => "Experiments.Watch",
            Method::ExperimentReport => "Experiments.Report",
            Method::Connect => "AgentSession.Connect",
            Method::RevokeAgent => "Fleet.RevokeAgent",
            Method::TokensCreate => "Tokens.Create",
            Method::TokensList => "Tokens.List",
            Method::TokensRevoke => "Tokens.Revoke",
            Method::ExperimentDelete => "Experiments.Delete",
            Method::ScheduleApply => "Schedules.Apply",
            Method::ScheduleGet => "Schedules.Get",
            Method::ScheduleList => "Schedules.List",
            Method::ScheduleDelete => "Schedules.Delete",
            Method::ScheduleSuspend => "Schedules.Suspend",
            Method::ScheduleResume => "Schedules.Resume",
            Method::ScheduleTrigger => "Schedules.Trigger",
            Method::WorkflowCreate => "Workflows.Create",
            Method::WorkflowGet => "Workflows.Get",
            Method::WorkflowList => "Workflows.List",
            Method::WorkflowApprove => "Workflows.Approve",
            Method::WorkflowAbort => "Workflows.Abort",
            Method::WorkflowDelete => "Workflows.Delete",
        }
    }

    pub fn need(self) -> Need {
        match self {
            Method::ListAgents
            | Method::GetPolicy
            | Method::AuditLog
            | Method::ExperimentGet
            | Method::ExperimentList
            | Method::ExperimentWatch
            | Method::ExperimentReport
            | Method::ScheduleGet
            | Method::ScheduleList
            | Method::WorkflowGet
            | Method::WorkflowList => Need::View,
            Method::ExperimentCreate | Method::ExperimentStart | Method::ExperimentAbort => {
                Need::Operate
            }
            Method::ExperimentDelete
            | Method::ScheduleApply
            | Method::ScheduleDelete
            | Method::ScheduleSuspend
            | Method::ScheduleResume
            | Method::ScheduleTrigger
            | Method::WorkflowCreate
            | Method::WorkflowApprove
            | Method::WorkflowAbort
            | Method::WorkflowDelete => Need::Operate,
            Method::HaltAll
            | Method::Resume
            | Method::RevokeAgent
            | Method::TokensCreate
            | Method::TokensList
            | Method::TokensRevoke => Need::Administer,
            Method::Connect => Need::Agent,
        }
    }

    /// Mutations are written to the audit log, refused or not.
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Method::HaltAll
                | Method::Resume
                | Method::RevokeAgent
                | Method::TokensCreate
                | Method::TokensRevoke
                | Method::ExperimentCreate
                | Method::ExperimentStart
                | Method::ExperimentAbort
                | Method::ExperimentDelete
                | Method::ScheduleApply
                | Method::ScheduleDelete
                | Method::ScheduleSuspend
                | Method::ScheduleResume
                | Method::ScheduleTrigger
                | Method::WorkflowCreate
                | Method::WorkflowApprove
                | Method::WorkflowAbort
                | Method::WorkflowDelete
        )
    }
}

impl Need {
    fn allows(self, role: Role) -> bool {
        match self {
            Need::View => role.can_view(),
            Need::Operate => role.can_operate(),
            Need::Administer => role.can_administer(),
            Need::Agent => role == Role::Agent,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Need::View => "role viewer, operator or admin",
            Need::Operate => "role operator or admin",
            Need::Administer => "role admin",
            Need::Agent => "role agent",
        }
    }
}

/// Why `identity` may not call `method`, or `None` when it may.
pub fn refusal(identity: &Identity, method: Method) -> Option<String> {
    let need = method.need();
    if need.allows(identity.role) {
        return None;
    }
    let why = if identity.role == Role::Agent {
        "agent certificates may only open an AgentSession".to_string()
    } else {
        format!("it requires {}", need.describe())
    };
    Some(format!(
        "identity {identity} (role {}) may not call {}: {why}",
        identity.role,
        method.name()
    ))
}

/// `Ok` when `identity` may call `method`; otherwise `PERMISSION_DENIED` naming the identity,
/// the method and the role it needs. Refusals are counted and logged here; auditing refused
/// mutations is the caller's job.
#[allow(clippy::result_large_err)]
pub fn check(identity: &Identity, method: Method) -> Result<(), Status> {
    match refusal(identity, method) {
        None => Ok(()),
        Some(message) => {
            metrics::auth_refused(RefusalReason::Role, &message);
            Err(Status::permission_denied(message))
        }
    }
}

/// The interceptor on every service: [`tls::authenticate`], plus counting its refusals. Client
/// certificates are verified (and refusals counted) in the TLS handshake, so this refuses only
/// a connection that did not come through the mutual-TLS listener.
#[allow(clippy::result_large_err)]
pub fn authenticate(req: Request<()>) -> Result<Request<()>, Status> {
    tls::authenticate(req).inspect_err(|status| {
        metrics::auth_refused(RefusalReason::NoCertificate, status.message());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role, name: &str) -> Identity {
        Identity::new(role, name)
    }

    #[test]
    fn refusal_messages_name_identity_method_and_role() {
        assert_eq!(
            refusal(&id(Role::Viewer, "viewer"), Method::HaltAll).as_deref(),
            Some("identity viewer/viewer (role viewer) may not call Fleet.HaltAll: it requires role admin")
        );
        assert_eq!(
            refusal(&id(Role::Agent, "node-a"), Method::ListAgents).as_deref(),
            Some("identity agent/node-a (role agent) may not call Fleet.ListAgents: agent certificates may only open an AgentSession")
        );
        assert_eq!(
            refusal(&id(Role::Viewer, "v"), Method::ExperimentCreate).as_deref(),
            Some("identity viewer/v (role viewer) may not call Experiments.Create: it requires role operator or admin")
        );
        assert_eq!(
            refusal(&id(Role::Admin, "admin"), Method::Connect).as_deref(),
            Some("identity admin/admin (role admin) may not call AgentSession.Connect: it requires role agent")
        );
        assert_eq!(
            refusal(&id(Role::Coordinator, "coordinator"), Method::ListAgents).as_deref(),
            Some("identity coordinator/coordinator (role coordinator) may not call Fleet.ListAgents: it requires role viewer, operator or admin")
        );
    }

    #[test]
    fn role_table() {
        use Method::*;
        let all = [
            ListAgents,
            HaltAll,
            Resume,
            GetPolicy,
            AuditLog,
            ExperimentCreate,
            ExperimentGet,
            ExperimentList,
            ExperimentStart,
            ExperimentAbort,
            ExperimentWatch,
            ExperimentReport,
            Connect,
            RevokeAgent,
            TokensCreate,
            TokensList,
            TokensRevoke,
        ];
        let allowed = |role: Role| -> Vec<&str> {
            all.iter()
                .filter(|m| refusal(&id(role, "x"), **m).is_none())
                .map(|m| m.name())
                .collect()
        };
        assert_eq!(allowed(Role::Agent), ["AgentSession.Connect"]);
        assert_eq!(
            allowed(Role::Viewer),
            [
                "Fleet.ListAgents",
                "Fleet.GetPolicy",
                "Fleet.AuditLog",
                "Experiments.Get",
                "Experiments.List",
                "Experiments.Watch",
                "Experiments.Report"
            ]
        );
        let operator = allowed(Role::Operator);
        assert_eq!(operator.len(), 10);
        assert!(!operator.contains(&"Fleet.HaltAll") && !operator.contains(&"Fleet.Resume"));
        assert_eq!(allowed(Role::Admin).len(), 16);
        for admin_only in [
            "Fleet.RevokeAgent",
            "Tokens.Create",
            "Tokens.List",
            "Tokens.Revoke",
        ] {
            assert!(allowed(Role::Admin).contains(&admin_only));
            assert!(!operator.contains(&admin_only), "{admin_only}");
        }
        assert!(allowed(Role::Coordinator).is_empty());
    }

    #[test]
    fn schedules_and_workflows_like_experiments() {
        use Method::*;
        let reads = [ScheduleGet, ScheduleList, WorkflowGet, WorkflowList];
        let writes = [
            ExperimentDelete,
            ScheduleApply,
            ScheduleDelete,
            ScheduleSuspend,
            ScheduleResume,
            ScheduleTrigger,
            WorkflowCreate,
            WorkflowApprove,
            WorkflowAbort,
            WorkflowDelete,
        ];
        for m in reads {
            for r in [Role::Viewer, Role::Operator, Role::Admin] {
                assert!(refusal(&id(r, "x"), m).is_none(), "{} {r}", m.name());
            }
            assert!(refusal(&id(Role::Agent, "x"), m).is_some());
            assert!(!m.is_mutation());
        }
        for m in writes {
            assert!(refusal(&id(Role::Viewer, "x"), m).is_some(), "{}", m.name());
            assert!(refusal(&id(Role::Operator, "x"), m).is_none());
            assert!(refusal(&id(Role::Admin, "x"), m).is_none());
            assert!(m.is_mutation(), "{} is audited", m.name());
        }
    }
}
