//! The fault manager of this release: it injects nothing and refuses every fault clearly.

use faultline_proto::pb;
use futures::future::BoxFuture;

use super::{kind_of, status, FaultManager, RevertReason};

/// Capabilities are empty; every ApplyFault fails with "fault kind X is not supported by this
/// agent yet"; reverts have nothing to do. The fault engine replaces it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unsupported;

impl FaultManager for Unsupported {
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }

    fn held(&self) -> Vec<pb::HeldFault> {
        Vec::new()
    }

    fn apply(&self, req: pb::ApplyFault) -> BoxFuture<'_, pb::FaultStatus> {
        let kind = kind_of(req.spec.as_ref());
        Box::pin(async move {
            status(
                req.fault_id,
                req.experiment_id,
                pb::FaultState::Failed,
                RevertReason::Unspecified,
                format!("fault kind {kind} is not supported by this agent yet"),
            )
        })
    }

    fn revert(&self, fault_id: String, reason: RevertReason) -> BoxFuture<'_, pb::FaultStatus> {
        // Nothing was ever applied, so the fault is already gone: a successful revert.
        Box::pin(async move {
            status(
                fault_id,
                String::new(),
                pb::FaultState::Reverted,
                reason,
                String::new(),
            )
        })
    }

    fn revert_all(&self, _reason: RevertReason) -> BoxFuture<'_, Vec<pb::FaultStatus>> {
        Box::pin(async { Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_every_fault_by_kind() {
        let m = Unsupported;
        assert!(m.capabilities().is_empty());
        assert!(m.held().is_empty());
        let req = pb::ApplyFault {
            fault_id: "f1".into(),
            experiment_id: "e1".into(),
            spec: Some(pb::FaultSpec {
                target: None,
                kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
                    load_percent: 50,
                    workers: 1,
                })),
            }),
            deadline_unix_ms: 0,
        };
        let s = m.apply(req).await;
        assert_eq!(s.fault_id, "f1");
        assert_eq!(s.experiment_id, "e1");
        assert_eq!(s.state, pb::FaultState::Failed as i32);
        assert_eq!(s.error, "fault kind cpu is not supported by this agent yet");
        let empty = m
            .apply(pb::ApplyFault {
                fault_id: "f2".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(
            empty.error,
            "fault kind unspecified is not supported by this agent yet"
        );
    }

    #[tokio::test]
    async fn reverts_have_nothing_to_do() {
        let m = Unsupported;
        let s = m.revert("f1".into(), RevertReason::Abort).await;
        assert_eq!(s.state, pb::FaultState::Reverted as i32);
        assert_eq!(s.reason, RevertReason::Abort as i32);
        assert!(s.error.is_empty());
        assert!(m.revert_all(RevertReason::Shutdown).await.is_empty());
    }
}
