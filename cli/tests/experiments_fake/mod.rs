//! A fake Experiments service for faultctl's tests: real mutual TLS on 127.0.0.1, canned
//! experiments, a record of what each call carried, and a way to run faultctl against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

mod pods;
#[path = "../support/mod.rs"]
mod support;

use faultline_core::Role;
use faultline_identity::tls;
use faultline_proto::pb::experiments_server::ExperimentsServer;
use faultline_proto::pb::{self, experiments_server::Experiments};
use tonic::{Request, Response, Status};

pub const BIN: &str = env!("CARGO_BIN_EXE_faultctl");
pub const T0: i64 = 1_700_000_000_000;

/// What the fake saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub creates: Vec<pb::CreateExperimentRequest>,
    pub list_phases: Vec<String>,
    pub aborts: Vec<(String, String)>,
    pub report_formats: Vec<String>,
}

struct Fake {
    seen: Arc<Mutex<Seen>>,
}

/// A finite stream of events for Watch.
type Events =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ExperimentEvent, Status>> + Send>>;

#[allow(clippy::result_large_err)]
fn require(req: &Request<impl Sized>, needs: Role, method: &str) -> Result<(), Status> {
    let who = tls::caller(req)?;
    let ok = match needs {
        Role::Operator => who.role.can_operate(),
        _ => who.role.can_view(),
    };
    if ok {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "identity {who} (role {}) may not call {method}: it requires role {needs}",
            who.role
        )))
    }
}

fn spec_cpu() -> pb::FaultSpec {
    pb::FaultSpec {
        target: None,
        kind: Some(pb::fault_spec::Kind::Cpu(pb::CpuFault {
            load_percent: 80,
            workers: 1,
        })),
    }
}

fn plan() -> pb::Plan {
    pb::Plan {
        selected: vec![pb::PlannedTarget {
            agent: "node-a".into(),
            target: None,
            description: "zone=a".into(),
        }],
        excluded: vec![pb::ExcludedTarget {
            agent: "node-b".into(),
            description: "zone=b".into(),
            reason: "not connected".into(),
            pod: String::new(),
        }],
        faults: vec![spec_cpu()],
        ..Default::default()
    }
}

fn experiment(name: &str, phase: pb::ExperimentPhase, state: pb::FaultState) -> pb::Experiment {
    let reverted = state == pb::FaultState::Reverted;
    pb::Experiment {
        id: format!("id-{name}"),
        name: name.into(),
        phase: phase as i32,
        document: "kind: Experiment\n".into(),
        created_by: "operator/operator".into(),
        created_unix_ms: T0,
        started_unix_ms: if phase == pb::ExperimentPhase::Pending {
            0
        } else {
            T0
        },
        ended_unix_ms: if reverted { T0 + 4_100 } else { 0 },
        duration_ms: 60_000,
        verdict_reason: match phase {
            pb::ExperimentPhase::Aborted => "guard error-rate breached: 0.9 above 0.05".into(),
            pb::ExperimentPhase::Failed => "node-a: agent limit: cpu not allowed".into(),
            _ => String::new(),
        },
        targets: vec![pb::TargetResult {
            agent: "node-a".into(),
            fault_id: format!("{name}-node-a-0"),
            state: state as i32,
            applied_unix_ms: T0 + 100,
            reverted_unix_ms: if reverted { T0 + 4_050 } else { 0 },
            revert_reason: if reverted {
                pb::RevertReason::Abort as i32
            } else {
                0
            },
            ..Default::default()
        }],
        guard_timeline: vec![pb::GuardSample {
            guard: "error-rate".into(),
            at_unix_ms: T0 + 4_000,
            value: if reverted { 0.9 } else { 0.01 },
            breached: reverted,
            error: String::new(),
            ..Default::default()
        }],
        plan: Some(plan()),
        ..Default::default()
    }
}

fn event(e: pb::Experiment, at: i64, message: &str) -> Result<pb::ExperimentEvent, Status> {
    Ok(pb::ExperimentEvent {
        at_unix_ms: at,
        experiment: Some(e),
        message: message.into(),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl Experiments for Fake {
    async fn delete(
        &self,
        req: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteExperimentResponse>, Status> {
        require(&req, Role::Operator, "Experiments.Delete")?;
        let name = req.into_inner().name;
        if name == "checkout-loss" {
            return Err(Status::failed_precondition(
                "experiment \"checkout-loss\" is running: only an experiment that has ended can be deleted",
            ));
        }
        Err(Status::not_found(format!("no experiment named {name}")))
    }

    async fn create(
        &self,
        req: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::CreateExperimentResponse>, Status> {
        require(&req, Role::Operator, "Experiments.Create")?;
        let r = req.into_inner();
        self.seen.lock().expect("lock").creates.push(r.clone());
        if r.document.contains("load: 150") {
            return Err(Status::invalid_argument(
                "spec.faults[0].load: 150 is outside 1..=100",
            ));
        }
        if r.document.contains("while-halted") {
            return Err(Status::failed_precondition(
                "the fleet is halted (game day over): new experiments are refused until \
                 Fleet.Resume",
            ));
        }
        if r.document.contains("pods:") {
            let plan = pods::plan(spec_cpu());
            let mut e = experiment(
                "checkout-pods",
                pb::ExperimentPhase::Unspecified,
                pb::FaultState::Unspecified,
            );
            e.id.clear();
            e.duration_ms = 30_000;
            e.plan = Some(plan.clone());
            return Ok(Response::new(pb::CreateExperimentResponse {
                experiment: Some(e),
                plan: Some(plan),
            }));
        }
        let phase = if r.start {
            pb::ExperimentPhase::Running
        } else {
            pb::ExperimentPhase::Pending
        };
        Ok(Response::new(pb::CreateExperimentResponse {
            experiment: Some(experiment(
                "checkout-loss",
                phase,
                pb::FaultState::Unspecified,
            )),
            plan: Some(plan()),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        require(&req, Role::Viewer, "Experiments.Get")?;
        let name = req.into_inner().name;
        if name != "checkout-loss" {
            return Err(Status::not_found(format!("no experiment named {name}")));
        }
        Ok(Response::new(experiment(
            &name,
            pb::ExperimentPhase::Aborted,
            pb::FaultState::Reverted,
        )))
    }

    async fn list(
        &self,
        req: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        require(&req, Role::Viewer, "Experiments.List")?;
        let phase = req.into_inner().phase;
        self.seen.lock().expect("lock").list_phases.push(phase);
        let mut old = experiment(
            "old-one",
            pb::ExperimentPhase::Aborted,
            pb::FaultState::Reverted,
        );
        old.created_unix_ms = T0 - 60_000;
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: vec![
                old,
                experiment(
                    "new-one",
                    pb::ExperimentPhase::Running,
                    pb::FaultState::Applied,
                ),
            ],
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        require(&req, Role::Operator, "Experiments.Start")?;
        let name = req.into_inner().name;
        Ok(Response::new(experiment(
            &name,
            pb::ExperimentPhase::Running,
            pb::FaultState::Unspecified,
        )))
    }

    async fn abort(
        &self,
        req: Request<pb::AbortExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        require(&req, Role::Operator, "Experiments.Abort")?;
        let r = req.into_inner();
        self.seen
            .lock()
            .expect("lock")
            .aborts
            .push((r.name.clone(), r.reason));
        Ok(Response::new(experiment(
            &r.name,
            pb::ExperimentPhase::Aborted,
            pb::FaultState::Reverted,
        )))
    }

    type WatchStream = Events;

    async fn watch(
        &self,
        req: Request<pb::WatchExperimentRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        require(&req, Role::Viewer, "Experiments.Watch")?;
        use pb::ExperimentPhase as P;
        use pb::FaultState as S;
        let name = req.into_inner().name;
        let running =
            |at: i64, msg: &str| event(experiment(&name, P::Running, S::Applied), at, msg);
        let events = match name.as_str() {
            "ends-completed" => {
                let mut done = experiment(&name, P::Completed, S::Reverted);
                done.targets[0].revert_reason = pb::RevertReason::Deadline as i32;
                done.guard_timeline[0].breached = false;
                vec![
                    running(T0 + 1_000, "fault applied on node-a"),
                    running(T0 + 2_000, ""),
                    event(done, T0 + 60_100, "completed"),
                ]
            }
            "ends-aborted" => vec![
                running(T0 + 1_000, "fault applied on node-a"),
                event(
                    experiment(&name, P::Aborted, S::Reverted),
                    T0 + 4_100,
                    "aborted: guard error-rate breached",
                ),
            ],
            "ends-failed" => vec![event(
                experiment(&name, P::Failed, S::Failed),
                T0 + 500,
                "failed",
            )],
            other => {
                return Err(Status::not_found(format!("no experiment named {other}")));
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ExperimentReport>, Status> {
        require(&req, Role::Viewer, "Experiments.Report")?;
        let r = req.into_inner();
        self.seen
            .lock()
            .expect("lock")
            .report_formats
            .push(r.format);
        Ok(Response::new(pb::ExperimentReport {
            markdown: format!("# Experiment {}\n\nVerdict: aborted", r.name),
            json: format!("{{\"name\":\"{}\"}}", r.name),
        }))
    }
}

/// A fake coordinator on 127.0.0.1; stops when dropped.
pub struct Server {
    pub url: String,
    pub certs: PathBuf,
    pub seen: Arc<Mutex<Seen>>,
    _server: support::Listening,
}

pub async fn start() -> Server {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service =
        ExperimentsServer::with_interceptor(Fake { seen: seen.clone() }, tls::authenticate);
    let server = support::serve(tonic::service::Routes::new(service)).await;
    Server {
        url: server.url.clone(),
        certs: server.certs.clone(),
        seen,
        _server: server,
    }
}

impl Server {
    pub async fn faultctl(&self, args: &[&str]) -> Output {
        self.faultctl_in(self.certs.as_path(), args).await
    }

    pub async fn faultctl_in(&self, certs: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new(BIN)
            .arg("--coordinator")
            .arg(&self.url)
            .arg("--certs-dir")
            .arg(certs)
            .args(args)
            .env_remove("FAULTLINE_IDENTITY")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
    }

    pub fn document(&self, name: &str, text: &str) -> String {
        let path = self._server.dir().join(name);
        std::fs::write(&path, text).expect("write document");
        path.display().to_string()
    }
}
