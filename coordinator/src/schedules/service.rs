//! The `Schedules` gRPC service: authorized by role like `Experiments` (viewers read,
//! operators and admins write), refusals audited, errors converted to a status once.

use std::sync::Arc;

use faultline_core::Identity;
use faultline_proto::pb::{self, schedules_server::Schedules};
use tonic::{Request, Response, Status};

use super::fire::phase_of;
use super::ops::{self, Entry, ScheduleError};
use crate::authz::Method;
use crate::state::State;

pub struct SchedulesService {
    pub state: Arc<State>,
}

impl SchedulesService {
    fn refused<T>(&self, identity: &Identity, method: Method, r: &Result<T, ScheduleError>) {
        if let Err(e) = r {
            if !e.is_audit() {
                let _ = self
                    .state
                    .audit(identity, method.name(), format!("refused: {e}"), false);
            }
        }
    }

    async fn to_pb(&self, (rec, spec): &Entry) -> pb::Schedule {
        let mut phases = Vec::new();
        for r in &rec.runs {
            phases.push((r.name.clone(), phase_of(&self.state, r).await));
        }
        rec.to_pb(spec, |r| {
            phases
                .iter()
                .find(|(n, _)| *n == r.name)
                .map(|(_, p)| p.clone())
                .unwrap_or_default()
        })
    }

    async fn answer(
        &self,
        identity: &Identity,
        method: Method,
        r: Result<Entry, ScheduleError>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.refused(identity, method, &r);
        let entry = r.map_err(|e| e.status())?;
        Ok(Response::new(self.to_pb(&entry).await))
    }
}

#[tonic::async_trait]
impl Schedules for SchedulesService {
    async fn apply(
        &self,
        req: Request<pb::ApplyScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let identity = self.state.authorize(&req, Method::ScheduleApply)?;
        let r = ops::apply(&self.state, &identity, &req.get_ref().document).await;
        self.answer(&identity, Method::ScheduleApply, r).await
    }

    async fn get(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.state.authorize(&req, Method::ScheduleGet)?;
        let entry = ops::get(&self.state, &req.get_ref().name).map_err(|e| e.status())?;
        Ok(Response::new(self.to_pb(&entry).await))
    }

    async fn list(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        self.state.authorize(&req, Method::ScheduleList)?;
        let mut schedules = Vec::new();
        for entry in self.state.schedules.all() {
            schedules.push(self.to_pb(&entry).await);
        }
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let identity = self.state.authorize(&req, Method::ScheduleDelete)?;
        let name = req.get_ref().name.clone();
        let r = ops::delete(&self.state, &identity, &name).await;
        self.refused(&identity, Method::ScheduleDelete, &r);
        r.map_err(|e| e.status())?;
        Ok(Response::new(pb::DeleteScheduleResponse { name }))
    }

    async fn suspend(
        &self,
        req: Request<pb::SuspendScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let identity = self.state.authorize(&req, Method::ScheduleSuspend)?;
        let r = ops::set_suspended(&self.state, &identity, &req.get_ref().name, true).await;
        self.answer(&identity, Method::ScheduleSuspend, r).await
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let identity = self.state.authorize(&req, Method::ScheduleResume)?;
        let r = ops::set_suspended(&self.state, &identity, &req.get_ref().name, false).await;
        self.answer(&identity, Method::ScheduleResume, r).await
    }

    async fn trigger(
        &self,
        req: Request<pb::TriggerScheduleRequest>,
    ) -> Result<Response<pb::TriggerScheduleResponse>, Status> {
        let identity = self.state.authorize(&req, Method::ScheduleTrigger)?;
        let r = ops::trigger(&self.state, &identity, &req.get_ref().name).await;
        self.refused(&identity, Method::ScheduleTrigger, &r);
        let (entry, run) = r.map_err(|e| e.status())?;
        Ok(Response::new(pb::TriggerScheduleResponse {
            schedule: Some(self.to_pb(&entry).await),
            run: run.unwrap_or_default(),
        }))
    }
}
