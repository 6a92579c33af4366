//! The `Workflows` gRPC service: authorized by role like `Experiments` (viewers read,
//! operators and admins write), refusals audited, errors converted to a status once.

use std::sync::Arc;

use faultline_core::Identity;
use faultline_proto::pb::{self, workflows_server::Workflows};
use tonic::{Request, Response, Status};

use super::ops::{self, WorkflowError};
use crate::authz::Method;
use crate::state::State;

pub struct WorkflowsService {
    pub state: Arc<State>,
}

impl WorkflowsService {
    fn refused<T>(&self, identity: &Identity, method: Method, r: &Result<T, WorkflowError>) {
        if let Err(e) = r {
            if !e.is_audit() {
                let _ = self
                    .state
                    .audit(identity, method.name(), format!("refused: {e}"), false);
            }
        }
    }
}

#[tonic::async_trait]
impl Workflows for WorkflowsService {
    async fn create(
        &self,
        req: Request<pb::CreateWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let identity = self.state.authorize(&req, Method::WorkflowCreate)?;
        let r = ops::create(&self.state, &identity, &req.get_ref().document).await;
        self.refused(&identity, Method::WorkflowCreate, &r);
        Ok(Response::new(r.map_err(|e| e.status())?.to_pb()))
    }

    async fn get(
        &self,
        req: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        self.state.authorize(&req, Method::WorkflowGet)?;
        let rec = ops::get(&self.state, &req.get_ref().name)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(rec.to_pb()))
    }

    async fn list(
        &self,
        req: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        self.state.authorize(&req, Method::WorkflowList)?;
        let recs = ops::list(&self.state).await.map_err(|e| e.status())?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: recs.iter().map(|r| r.to_pb()).collect(),
        }))
    }

    async fn approve(
        &self,
        req: Request<pb::ApproveStepRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let identity = self.state.authorize(&req, Method::WorkflowApprove)?;
        let r = req.get_ref();
        let result = ops::approve(&self.state, &identity, &r.name, &r.step).await;
        self.refused(&identity, Method::WorkflowApprove, &result);
        Ok(Response::new(result.map_err(|e| e.status())?.to_pb()))
    }

    async fn abort(
        &self,
        req: Request<pb::AbortWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        let identity = self.state.authorize(&req, Method::WorkflowAbort)?;
        let r = req.get_ref();
        let result = ops::abort(&self.state, &identity, &r.name, &r.reason).await;
        self.refused(&identity, Method::WorkflowAbort, &result);
        Ok(Response::new(result.map_err(|e| e.status())?.to_pb()))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteWorkflowRequest>,
    ) -> Result<Response<pb::DeleteWorkflowResponse>, Status> {
        let identity = self.state.authorize(&req, Method::WorkflowDelete)?;
        let name = req.get_ref().name.clone();
        let result = ops::delete(&self.state, &identity, &name).await;
        self.refused(&identity, Method::WorkflowDelete, &result);
        result.map_err(|e| e.status())?;
        Ok(Response::new(pb::DeleteWorkflowResponse { name }))
    }
}
