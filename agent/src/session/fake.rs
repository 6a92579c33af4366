//! An in-memory coordinator for session tests: every stream the agent opens is handed to the
//! test, which plays the coordinator's side; time is paused, so leases run in virtual time.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_core::Labels;
use faultline_identity::tls::{CertPaths, CoordinatorUrl};
use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::coordinator_message::Msg as In;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::SessionError;
use crate::agent::Agent;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::faults::{FaultManager, RecordingManager, RevertReason};
use crate::transport::{Inbound, Transport};

pub(crate) const LEASE: Duration = Duration::from_secs(5);

/// One session stream as the coordinator sees it. Like the real coordinator, it vouches for
/// every fault it sends ApplyFault for until it sends RevertFault or RevertAll, and every
/// Welcome and renewal names them (shared by every stream of one harness).
pub(crate) struct Conn {
    pub(crate) outbound: mpsc::Receiver<pb::AgentMessage>,
    pub(crate) inbound: mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>,
    pub(crate) vouched: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Conn {
    pub(crate) async fn next(&mut self) -> Out {
        let m = tokio::time::timeout(Duration::from_secs(60), self.outbound.recv())
            .await
            .expect("the agent sent nothing for 60 s")
            .expect("the agent closed its stream");
        m.msg.expect("empty agent message")
    }

    pub(crate) async fn hello(&mut self) -> pb::Hello {
        match self.next().await {
            Out::Hello(h) => h,
            other => panic!("expected Hello first, got {other:?}"),
        }
    }

    /// The next FaultStatus, skipping telemetry.
    pub(crate) async fn fault_status(&mut self) -> pb::FaultStatus {
        loop {
            match self.next().await {
                Out::FaultStatus(s) => return s,
                Out::Telemetry(_) => continue,
                Out::Hello(h) => panic!("unexpected Hello {h:?}"),
                Out::RenewCertificate(_) => panic!("unexpected RenewCertificate"),
            }
        }
    }

    /// The faults the next Welcome or renewal names.
    pub(crate) fn vouched(&self) -> Vec<String> {
        self.vouched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops vouching for `id` without ordering its revert (as a coordinator that forgot it).
    pub(crate) fn forget(&self, id: &str) {
        self.vouched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(crate) async fn send(&self, msg: In) {
        {
            let mut v = self.vouched.lock().unwrap_or_else(|p| p.into_inner());
            match &msg {
                In::Apply(a) => {
                    v.insert(a.fault_id.clone());
                }
                In::Revert(r) => {
                    v.remove(&r.fault_id);
                }
                In::RevertAll(_) => v.clear(),
                _ => {}
            }
        }
        self.inbound
            .send(Ok(pb::CoordinatorMessage { msg: Some(msg) }))
            .await
            .expect("agent dropped the stream");
    }

    pub(crate) async fn welcome(&self, session_id: &str, lease: Duration) {
        self.send(In::Welcome(pb::Welcome {
            session_id: session_id.into(),
            lease_ms: lease.as_millis() as u64,
            telemetry_interval_ms: 1000,
            vouched_fault_ids: self.vouched(),
        }))
        .await;
    }

    /// A renewal that names no telemetry (as an older coordinator): the lease runs from now.
    pub(crate) async fn renew(&self, sequence: u64) {
        self.renew_from(sequence, 0).await;
    }

    /// A renewal made from the telemetry numbered `telemetry` (anchor rule).
    pub(crate) async fn renew_from(&self, sequence: u64, telemetry: u64) {
        self.send(In::Lease(pb::LeaseRenewal {
            lease_ms: LEASE.as_millis() as u64,
            sequence,
            vouched_fault_ids: self.vouched(),
            telemetry_sequence: telemetry,
        }))
        .await;
    }

    /// The sequence number of the latest telemetry the agent has sent, discarding everything
    /// it sent so far; `None` when it sent none.
    pub(crate) fn latest_telemetry(&mut self) -> Option<u64> {
        let mut latest = None;
        while let Ok(m) = self.outbound.try_recv() {
            if let Some(Out::Telemetry(t)) = m.msg {
                latest = Some(t.sequence);
            }
        }
        latest
    }
}

/// Hands every opened stream to the test; scripted refusals come first.
pub(crate) struct FakeTransport {
    pub(crate) conns: mpsc::UnboundedSender<Conn>,
    pub(crate) refusals: Arc<Mutex<VecDeque<tonic::Status>>>,
    pub(crate) vouched: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Transport for FakeTransport {
    fn open(
        &self,
        outbound: mpsc::Receiver<pb::AgentMessage>,
    ) -> BoxFuture<'_, Result<Inbound, SessionError>> {
        let refusal = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        Box::pin(async move {
            if let Some(status) = refusal {
                return Err(SessionError::from_status(status));
            }
            let (tx, rx) = mpsc::channel(64);
            let _ = self.conns.send(Conn {
                outbound,
                inbound: tx,
                vouched: self.vouched.clone(),
            });
            Ok(ReceiverStream::new(rx).boxed())
        })
    }

    fn target(&self) -> String {
        "https://coordinator.test:7443".into()
    }
}

pub(crate) struct Harness {
    pub(crate) agent: Agent,
    /// What every stream's Welcome and renewals vouch for.
    pub(crate) vouched: Arc<Mutex<std::collections::BTreeSet<String>>>,
    pub(crate) conns: mpsc::UnboundedReceiver<Conn>,
    pub(crate) state: tempfile::TempDir,
    /// Refusals the next connection attempts get, in order (scripted at start or later).
    pub(crate) refusals: Arc<Mutex<VecDeque<tonic::Status>>>,
}

impl Harness {
    pub(crate) async fn conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(60), self.conns.recv())
            .await
            .expect("the agent did not connect within 60 s")
            .expect("transport gone")
    }
}

pub(crate) fn config(state: &Path) -> Config {
    Config::new(
        CoordinatorUrl::parse("https://coordinator.test:7443").expect("url"),
        "node-a".parse().expect("node"),
        CertPaths::in_dir(Path::new("/nonexistent"), "agent-node-a"),
        state.to_path_buf(),
    )
}

pub(crate) async fn start_with(
    manager: Arc<dyn FaultManager>,
    refusals: Vec<tonic::Status>,
) -> Harness {
    let state = tempfile::tempdir().expect("tempdir");
    let (tx, conns) = mpsc::unbounded_channel();
    let vouched: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let refusals = Arc::new(Mutex::new(VecDeque::from(refusals)));
    let transport = Arc::new(FakeTransport {
        conns: tx,
        refusals: refusals.clone(),
        vouched: vouched.clone(),
    });
    let mut cfg = config(state.path());
    cfg.labels = Labels::parse("zone=a,role=web").expect("labels");
    let agent = Agent::start_with(
        cfg,
        manager,
        None,
        transport,
        Backoff::seeded(Duration::from_secs(3), 1),
        None,
    )
    .await
    .expect("agent starts");
    Harness {
        agent,
        vouched,
        conns,
        state,
        refusals,
    }
}

pub(crate) async fn start(manager: Arc<RecordingManager>) -> Harness {
    start_with(manager, vec![]).await
}

pub(crate) fn lease_reverts(m: &RecordingManager) -> Vec<Instant> {
    m.revert_alls(RevertReason::Lease)
}
