//! The `Experiments` service for this release: every method is authorized (and mutations
//! audited) as it will be, then answers `UNIMPLEMENTED` until the experiments release.

use std::sync::Arc;

use faultline_proto::pb::{self, experiments_server::Experiments};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::authz::Method;
use crate::state::State;

pub const NOT_YET: &str = "experiments arrive with the experiments release";

pub struct ExperimentsService {
    pub state: Arc<State>,
}

impl ExperimentsService {
    #[allow(clippy::result_large_err)]
    fn unimplemented<T, R>(&self, req: &Request<T>, method: Method) -> Result<R, Status> {
        let identity = self.state.authorize(req, method)?;
        if method.is_mutation() {
            let _ = self.state.audit(
                &identity,
                method.name(),
                format!("not performed: {NOT_YET}"),
                true,
            );
        }
        Err(Status::unimplemented(format!(
            "{}: {NOT_YET}",
            method.name()
        )))
    }
}

#[tonic::async_trait]
impl Experiments for ExperimentsService {
    async fn create(
        &self,
        req: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::CreateExperimentResponse>, Status> {
        self.unimplemented(&req, Method::ExperimentCreate)
    }

    async fn get(
        &self,
        req: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        self.unimplemented(&req, Method::ExperimentGet)
    }

    async fn list(
        &self,
        req: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        self.unimplemented(&req, Method::ExperimentList)
    }

    async fn start(
        &self,
        req: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        self.unimplemented(&req, Method::ExperimentStart)
    }

    async fn abort(
        &self,
        req: Request<pb::AbortExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        self.unimplemented(&req, Method::ExperimentAbort)
    }

    type WatchStream = BoxStream<'static, Result<pb::ExperimentEvent, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchExperimentRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.unimplemented(&req, Method::ExperimentWatch)
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ExperimentReport>, Status> {
        self.unimplemented(&req, Method::ExperimentReport)
    }
}
