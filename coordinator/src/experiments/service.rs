//! The `Experiments` gRPC service: every method is authorized by role, every mutation written
//! to the audit log (by [`ops`], before it changes anything; refusals and dry runs here), and
//! every failure converted to a status once.

use std::sync::Arc;

use faultline_core::Identity;
use faultline_proto::pb::{self, experiments_server::Experiments};
use tonic::{Request, Response, Status};

use super::convert::{experiment_to_pb, plan_to_pb};
use super::ops::{self, OpError};
use super::{report, watch};
use crate::authz::Method;
use crate::state::State;

pub struct ExperimentsService {
    pub state: Arc<State>,
}

impl ExperimentsService {
    /// Audits a refused mutation (queued, never waits). Carried-out mutations were audited by
    /// [`ops`] before they changed anything; audit failures are not audited again.
    fn audit_refusal<T>(&self, identity: &Identity, method: Method, r: &Result<T, OpError>) {
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
impl Experiments for ExperimentsService {
    async fn create(
        &self,
        req: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::CreateExperimentResponse>, Status> {
        let identity = self.state.authorize(&req, Method::ExperimentCreate)?;
        let r = req.into_inner();
        let result = ops::create(&self.state, &identity, &r.document, r.dry_run, r.start).await;
        self.audit_refusal(&identity, Method::ExperimentCreate, &result);
        match &result {
            Ok(c) if !c.stored => {
                // A dry run changes nothing: its entry is queued, not waited for.
                let detail = format!(
                    "dry run of {}: {} would be selected",
                    c.record.name,
                    c.record.plan.targets_phrase()
                );
                let _ = self
                    .state
                    .audit(&identity, Method::ExperimentCreate.name(), detail, true);
            }
            _ => {}
        }
        let created = result.map_err(|e| e.status())?;
        let mut experiment = experiment_to_pb(&created.record);
        let plan = experiment.plan.clone();
        if !created.stored {
            // Nothing was created: no phase, no id.
            experiment.phase = pb::ExperimentPhase::Unspecified as i32;
            experiment.id.clear();
        }
        Ok(Response::new(pb::CreateExperimentResponse {
            experiment: Some(experiment),
            plan: plan.or_else(|| Some(plan_to_pb(&created.record.plan, vec![]))),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        self.state.authorize(&req, Method::ExperimentGet)?;
        let rec = ops::get(&self.state, &req.get_ref().name)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(experiment_to_pb(&rec)))
    }

    async fn list(
        &self,
        req: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        self.state.authorize(&req, Method::ExperimentList)?;
        let recs = ops::list(&self.state, &req.get_ref().phase)
            .await
            .map_err(|e| e.status())?;
        // Listing carries each guard's latest sample and the last log lines; Get has all.
        let experiments = recs
            .iter()
            .map(|r| experiment_to_pb(&r.trimmed(5)))
            .collect();
        Ok(Response::new(pb::ListExperimentsResponse { experiments }))
    }

    async fn start(
        &self,
        req: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let identity = self.state.authorize(&req, Method::ExperimentStart)?;
        let name = req.into_inner().name;
        let result = ops::start(&self.state, &identity, &name).await;
        self.audit_refusal(&identity, Method::ExperimentStart, &result);
        Ok(Response::new(experiment_to_pb(
            &result.map_err(|e| e.status())?,
        )))
    }

    async fn abort(
        &self,
        req: Request<pb::AbortExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let identity = self.state.authorize(&req, Method::ExperimentAbort)?;
        let r = req.into_inner();
        let result = ops::abort(&self.state, &identity, &r.name, &r.reason).await;
        self.audit_refusal(&identity, Method::ExperimentAbort, &result);
        Ok(Response::new(experiment_to_pb(
            &result.map_err(|e| e.status())?,
        )))
    }

    type WatchStream = watch::EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchExperimentRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.state.authorize(&req, Method::ExperimentWatch)?;
        let name = req.into_inner().name;
        let stream = watch::watch(self.state.clone(), name)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(stream))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ExperimentReport>, Status> {
        self.state.authorize(&req, Method::ExperimentReport)?;
        let r = req.into_inner();
        let (md, js) = match r.format.trim() {
            "" => (true, true),
            "md" | "markdown" => (true, false),
            "json" => (false, true),
            other => {
                return Err(Status::invalid_argument(format!(
                    "format: {other:?} is not a report format; use md or json (empty: both)"
                )))
            }
        };
        let rec = ops::get(&self.state, &r.name)
            .await
            .map_err(|e| e.status())?;
        let json = if js {
            report::json(&rec).map_err(|e| Status::internal(format!("encoding the report: {e}")))?
        } else {
            String::new()
        };
        Ok(Response::new(pb::ExperimentReport {
            markdown: if md {
                report::markdown(&rec)
            } else {
                String::new()
            },
            json,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteExperimentResponse>, Status> {
        let identity = self.state.authorize(&req, Method::ExperimentDelete)?;
        let name = req.into_inner().name;
        let result = crate::runs::delete_experiment(&self.state, &identity, &name).await;
        self.audit_refusal(&identity, Method::ExperimentDelete, &result);
        result.map_err(|e| e.status())?;
        Ok(Response::new(pb::DeleteExperimentResponse { name }))
    }
}
