//! Test rig for in-crate tests: a [`State`] over the real sled store behind the
//! [`failing`](crate::store::failing) switches, and in-process agents that answer over the
//! same paths a session uses (the session's outbound queue, as the registry's push, in; `Table::route` out).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::{Identity, Role};
use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Policy;
use crate::registry::{Arrival, Registry, SessionHandle};
use crate::state::{now_ms, State};
use crate::store::failing::{Failing, Faults};
use crate::store::StoreHandle;

pub struct Rig {
    pub state: Arc<State>,
    pub faults: Faults,
    _dir: TempDir,
    _sessions_done: mpsc::Receiver<()>,
}

impl Rig {
    pub async fn new() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Faults::default();
        let store = Failing::open(dir.path(), faults.clone());
        let store = StoreHandle::spawn(Box::new(store)).await.expect("store");
        let (guard, sessions_done) = mpsc::channel(1);
        let policy = Policy {
            max_fleet_percent_under_fault: 100.0,
            ..Policy::default()
        };
        let state = State::new(
            policy,
            Duration::from_secs(5),
            Duration::from_secs(1),
            Arc::new(store),
            Registry::default(),
            None,
            guard,
        );
        Rig {
            state: Arc::new(state),
            faults,
            _dir: dir,
            _sessions_done: sessions_done,
        }
    }
}

pub fn identity(role: Role) -> Identity {
    Identity::new(role, role.as_str())
}

/// A document for one cpu fault on every agent, for `duration`.
pub fn document(name: &str, duration: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {duration}\n  targets: {{mode: all}}\n  faults: [{{kind: cpu, load: 20}}]\n"
    )
}

/// What a session for `node` brings: label zone=a, capability cpu, no held faults.
pub fn arrival(node: &str) -> Arrival {
    Arrival {
        node_name: node.into(),
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        capabilities: vec!["cpu".into()],
        version: faultline_core::VERSION.into(),
        held_faults: vec![],
        remote_address: "127.0.0.1:1".into(),
        now_unix_ms: now_ms(),
    }
}

/// An agent connected to the registry, answering ApplyFault with APPLIED and RevertFault with
/// REVERTED through [`crate::experiments::Table::route`], as its session would.
pub struct Agent {
    stop: CancellationToken,
    task: JoinHandle<Vec<CoordMsg>>,
}

impl Agent {
    pub fn connect(state: &Arc<State>, node: &str) -> Agent {
        let (outbox, mut pushed) = crate::outbox::Outbox::new(64);
        outbox.welcomed();
        let session = SessionHandle {
            session_id: format!("{node}-session"),
            outbox,
            end: CancellationToken::new(),
            revert_all: Arc::default(),
        };
        state.registry.connect(arrival(node), session);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (state, node, stop) = (state.clone(), node.to_string(), stop.clone());
            async move {
                let mut seen = Vec::new();
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return seen,
                        m = pushed.recv() => match m.and_then(|m| m.ok()?.msg) {
                            Some(m) => m,
                            None => return seen,
                        },
                    };
                    let answer = match &msg {
                        CoordMsg::Apply(a) => Some((
                            a.fault_id.clone(),
                            a.experiment_id.clone(),
                            pb::FaultState::Applied,
                            pb::RevertReason::Unspecified,
                        )),
                        CoordMsg::Revert(r) => Some((
                            r.fault_id.clone(),
                            String::new(),
                            pb::FaultState::Reverted,
                            pb::RevertReason::try_from(r.reason)
                                .unwrap_or(pb::RevertReason::Unspecified),
                        )),
                        _ => None,
                    };
                    seen.push(msg);
                    if let Some((fault_id, experiment_id, state_, reason)) = answer {
                        let status = pb::FaultStatus {
                            fault_id,
                            experiment_id,
                            state: state_ as i32,
                            at_unix_ms: now_ms(),
                            reason: reason as i32,
                            ..Default::default()
                        };
                        state.experiments.route(&state.store, &node, status);
                    }
                }
            }
        });
        Agent { stop, task }
    }

    /// Stops answering; what it received.
    pub async fn stop(self) -> Vec<CoordMsg> {
        self.stop.cancel();
        self.task.await.expect("agent task")
    }
}

/// Polls `check` every 10 ms until it holds, or panics naming `what` after 10 s.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
