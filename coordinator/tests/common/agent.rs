//! A small agent for tests that speaks the real protocol over real mutual TLS: Hello, telemetry
//! at a short interval, ApplyFault answered APPLIED (or FAILED, or not at all, as the test
//! wants), RevertFault and RevertAll answered REVERTED. Everything it receives is recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as AgentMsg;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{channel_with, now_ms, AgentConn, Env};

/// How the agent answers ApplyFault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnApply {
    Apply,
    /// FAILED with this text (for example the agent's local limits).
    Fail(String),
    /// No answer at all.
    Silent,
}

/// What the agent received, with the time it arrived.
#[derive(Debug, Clone)]
pub enum Received {
    Apply(Box<pb::ApplyFault>, Instant),
    Revert(pb::RevertFault, Instant),
    RevertAll(pb::RevertAll, Instant),
}

#[derive(Debug)]
struct Shared {
    on_apply: OnApply,
    /// RevertFault is recorded but never answered.
    silent_reverts: bool,
    cpu: f64,
    received: Vec<Received>,
    /// Each lease renewal, with the time it arrived.
    leases: Vec<(pb::LeaseRenewal, Instant)>,
    held: BTreeMap<String, String>,
}

pub struct TestAgent {
    pub name: String,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

pub const TELEMETRY_EVERY: Duration = Duration::from_millis(200);

impl TestAgent {
    /// Connects as `name` (its certificate must be in `env`) with `labels`.
    pub async fn connect(
        env: &Env,
        c: &faultline_coordinator::Coordinator,
        name: &str,
        labels: &[(&str, &str)],
    ) -> TestAgent {
        let ch = channel_with(c, &env.paths(&format!("agent-{name}"))).await;
        TestAgent::over(ch, name, labels).await
    }

    /// Connects as `name`, keeping its lease only while it holds a fault (Hello's
    /// `lease_while_holding`, as the real agent does).
    pub async fn connect_idle_rule(
        env: &Env,
        c: &faultline_coordinator::Coordinator,
        name: &str,
    ) -> TestAgent {
        let ch = channel_with(c, &env.paths(&format!("agent-{name}"))).await;
        TestAgent::open(ch, name, &[], true).await
    }

    /// Connects as `name` over `ch` (a channel with `name`'s agent certificate).
    pub async fn over(
        ch: tonic::transport::Channel,
        name: &str,
        labels: &[(&str, &str)],
    ) -> TestAgent {
        // Renewed every interval, whatever it holds.
        TestAgent::open(ch, name, labels, false).await
    }

    async fn open(
        ch: tonic::transport::Channel,
        name: &str,
        labels: &[(&str, &str)],
        lease_while_holding: bool,
    ) -> TestAgent {
        let hello = pb::AgentMessage {
            msg: Some(AgentMsg::Hello(pb::Hello {
                node_name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
                capabilities: vec!["cpu".into(), "memory".into()],
                version: faultline_core::VERSION.into(),
                held_faults: vec![],
                lease_while_holding,
                // Unnumbered: renewals and orders name its telemetry once heard.
                sequence: 0,
            })),
        };
        let mut conn = AgentConn::open(ch, hello)
            .await
            .unwrap_or_else(|s| panic!("session for {name} refused: {s:?}"));
        conn.welcome().await;
        let shared = Arc::new(Mutex::new(Shared {
            on_apply: OnApply::Apply,
            silent_reverts: false,
            cpu: 0.1,
            received: Vec::new(),
            leases: Vec::new(),
            held: BTreeMap::new(),
        }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(conn, shared.clone(), stop.clone()));
        TestAgent {
            name: name.into(),
            shared,
            stop,
            task: Some(task),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("test agent state")
    }

    /// Every lease renewal so far, and when it arrived.
    pub fn leases(&self) -> Vec<(pb::LeaseRenewal, Instant)> {
        self.lock().leases.clone()
    }

    /// From now on RevertFault gets no answer (a wedged agent).
    pub fn ignore_reverts(&self) {
        self.shared.lock().expect("state").silent_reverts = true;
    }

    pub fn on_apply(&self, a: OnApply) {
        self.lock().on_apply = a;
    }

    /// The CPU busy ratio the next telemetry samples report.
    pub fn set_cpu(&self, cpu: f64) {
        self.lock().cpu = cpu;
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn applies(&self) -> Vec<pb::ApplyFault> {
        self.received()
            .into_iter()
            .filter_map(|r| match r {
                Received::Apply(a, _) => Some(*a),
                _ => None,
            })
            .collect()
    }

    pub fn reverts(&self) -> Vec<pb::RevertFault> {
        self.received()
            .into_iter()
            .filter_map(|r| match r {
                Received::Revert(a, _) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Fault ids it holds now.
    pub fn held(&self) -> Vec<String> {
        self.lock().held.keys().cloned().collect()
    }

    /// Ends the session (the coordinator sees a disconnect).
    pub async fn disconnect(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn status(
    fault_id: &str,
    experiment_id: &str,
    state: pb::FaultState,
    reason: pb::RevertReason,
    error: &str,
) -> pb::AgentMessage {
    let mut counters = HashMap::new();
    if state == pb::FaultState::Reverted {
        counters.insert("test_ticks".to_string(), 3u64);
    }
    pb::AgentMessage {
        msg: Some(AgentMsg::FaultStatus(pb::FaultStatus {
            fault_id: fault_id.into(),
            experiment_id: experiment_id.into(),
            state: state as i32,
            at_unix_ms: now_ms(),
            reason: reason as i32,
            error: error.into(),
            counters,
        })),
    }
}

async fn serve(mut conn: AgentConn, shared: Arc<Mutex<Shared>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TELEMETRY_EVERY);
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let (cpu, held) = {
                    let s = shared.lock().expect("state");
                    (s.cpu, s.held.len())
                };
                sequence += 1;
                let t = pb::Telemetry {
                    // Numbered, and counting what it holds, as the real agent does.
                    sequence,
                    active_faults: held as u32,
                    timestamp_unix_ms: now_ms(),
                    cpu_busy_ratio: cpu,
                    memory_total_bytes: 8 << 30,
                    memory_used_bytes: 2 << 30,
                    memory_available_bytes: 6 << 30,
                    load1: 0.5,
                    ..Default::default()
                };
                if conn.tx.send(pb::AgentMessage { msg: Some(AgentMsg::Telemetry(t)) }).await.is_err() {
                    return;
                }
            }
            msg = conn.rx.message() => {
                let Ok(Some(msg)) = msg else { return };
                let replies = {
                    let mut s = shared.lock().expect("state");
                    handle(&mut s, msg.msg)
                };
                for r in replies {
                    if conn.tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn handle(s: &mut Shared, msg: Option<CoordMsg>) -> Vec<pb::AgentMessage> {
    let now = Instant::now();
    match msg {
        Some(CoordMsg::Apply(a)) => {
            s.received.push(Received::Apply(Box::new(a.clone()), now));
            match s.on_apply.clone() {
                OnApply::Apply => {
                    s.held.insert(a.fault_id.clone(), a.experiment_id.clone());
                    vec![status(
                        &a.fault_id,
                        &a.experiment_id,
                        pb::FaultState::Applied,
                        pb::RevertReason::Unspecified,
                        "",
                    )]
                }
                OnApply::Fail(e) => {
                    vec![status(
                        &a.fault_id,
                        &a.experiment_id,
                        pb::FaultState::Failed,
                        pb::RevertReason::Unspecified,
                        &e,
                    )]
                }
                OnApply::Silent => vec![],
            }
        }
        Some(CoordMsg::Revert(r)) => {
            s.received.push(Received::Revert(r.clone(), now));
            if s.silent_reverts {
                return vec![];
            }
            let exp = s.held.remove(&r.fault_id).unwrap_or_default();
            let reason =
                pb::RevertReason::try_from(r.reason).unwrap_or(pb::RevertReason::Unspecified);
            // Idempotent: a fault never applied is reverted too.
            vec![status(
                &r.fault_id,
                &exp,
                pb::FaultState::Reverted,
                reason,
                "",
            )]
        }
        Some(CoordMsg::RevertAll(r)) => {
            s.received.push(Received::RevertAll(r.clone(), now));
            let reason =
                pb::RevertReason::try_from(r.reason).unwrap_or(pb::RevertReason::Unspecified);
            std::mem::take(&mut s.held)
                .into_iter()
                .map(|(id, exp)| status(&id, &exp, pb::FaultState::Reverted, reason, ""))
                .collect()
        }
        Some(CoordMsg::Lease(l)) => {
            s.leases.push((l, now));
            vec![]
        }
        _ => vec![],
    }
}
