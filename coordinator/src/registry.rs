//! The in-memory registry of agents: who is connected, since when, their labels, latest
//! telemetry and held faults, and a handle to push messages into each live session.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use faultline_proto::pb;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::store::AgentRecord;

/// How to reach one live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub session_id: String,
    /// Messages pushed here are forwarded to the agent by its session task.
    pub push: mpsc::Sender<pb::CoordinatorMessage>,
    /// Cancelled to end the session from outside (a newer session replaced it).
    pub end: CancellationToken,
    /// A RevertAll for this session to send (the fleet halt): a flag, not a slot in `push`, so
    /// it is never lost to a full queue.
    pub revert_all: Arc<RevertAllOrder>,
}

/// A RevertAll waiting to be sent by one session.
#[derive(Debug, Default)]
pub struct RevertAllOrder {
    message: Mutex<Option<String>>,
    notify: Notify,
}

impl RevertAllOrder {
    /// Orders a RevertAll; a second order before the first went out replaces its message.
    pub fn order(&self, message: String) {
        *self.message.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        self.notify.notify_one();
    }

    /// Completes when an order is waiting (at once if one came before this call).
    pub async fn ordered(&self) {
        self.notify.notified().await;
    }

    /// The waiting order's message, taken.
    pub fn take(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Everything the coordinator knows about one agent.
#[derive(Debug, Clone)]
pub struct AgentEntry {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub version: String,
    pub connected: bool,
    pub connected_since_unix_ms: i64,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    pub remote_address: String,
    pub telemetry: Option<pb::Telemetry>,
    pub held_faults: Vec<pb::HeldFault>,
    /// The latest status report per fault id.
    pub fault_status: BTreeMap<String, pb::FaultStatus>,
    pub session: Option<SessionHandle>,
}

impl AgentEntry {
    fn from_record(rec: AgentRecord) -> Self {
        AgentEntry {
            node_name: rec.node_name,
            labels: rec.labels,
            capabilities: rec.capabilities,
            version: rec.version,
            connected: false,
            connected_since_unix_ms: 0,
            first_seen_unix_ms: rec.first_seen_unix_ms,
            last_seen_unix_ms: rec.last_seen_unix_ms,
            remote_address: rec.remote_address,
            telemetry: None,
            held_faults: Vec::new(),
            fault_status: BTreeMap::new(),
            session: None,
        }
    }

    /// The durable part of this entry.
    pub fn record(&self) -> AgentRecord {
        AgentRecord {
            node_name: self.node_name.clone(),
            labels: self.labels.clone(),
            capabilities: self.capabilities.clone(),
            version: self.version.clone(),
            first_seen_unix_ms: self.first_seen_unix_ms,
            last_seen_unix_ms: self.last_seen_unix_ms,
            remote_address: self.remote_address.clone(),
        }
    }

    /// The wire view for `Fleet.ListAgents`.
    pub fn to_pb(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            node_name: self.node_name.clone(),
            labels: self.labels.clone().into_iter().collect(),
            capabilities: self.capabilities.clone(),
            version: self.version.clone(),
            connected: self.connected,
            last_seen_unix_ms: self.last_seen_unix_ms,
            connected_since_unix_ms: if self.connected {
                self.connected_since_unix_ms
            } else {
                0
            },
            remote_address: self.remote_address.clone(),
            telemetry: self.telemetry.clone(),
            held_faults: self.held_faults.clone(),
        }
    }
}

/// What a new session brings.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub version: String,
    pub held_faults: Vec<pb::HeldFault>,
    pub remote_address: String,
    pub now_unix_ms: i64,
}

/// Agents by node name.
#[derive(Debug, Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, AgentEntry>>,
}

impl Registry {
    /// A registry holding the agents remembered by the store, all disconnected.
    pub fn from_records(records: Vec<AgentRecord>) -> Self {
        let agents = records
            .into_iter()
            .map(|r| (r.node_name.clone(), AgentEntry::from_record(r)))
            .collect();
        Registry {
            agents: Mutex::new(agents),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the agent connected with a new session. Returns the record to persist and the
    /// session this one replaces, if any (the caller ends it).
    pub fn connect(
        &self,
        arrival: Arrival,
        session: SessionHandle,
    ) -> (AgentRecord, Option<SessionHandle>) {
        let mut agents = self.lock();
        let now = arrival.now_unix_ms;
        let entry = agents
            .entry(arrival.node_name.clone())
            .or_insert_with(|| AgentEntry {
                node_name: arrival.node_name.clone(),
                labels: BTreeMap::new(),
                capabilities: Vec::new(),
                version: String::new(),
                connected: false,
                connected_since_unix_ms: 0,
                first_seen_unix_ms: now,
                last_seen_unix_ms: now,
                remote_address: String::new(),
                telemetry: None,
                held_faults: Vec::new(),
                fault_status: BTreeMap::new(),
                session: None,
            });
        entry.labels = arrival.labels;
        entry.capabilities = arrival.capabilities;
        entry.version = arrival.version;
        entry.held_faults = arrival.held_faults;
        entry.remote_address = arrival.remote_address;
        entry.connected = true;
        entry.connected_since_unix_ms = now;
        entry.last_seen_unix_ms = now;
        let replaced = entry.session.replace(session);
        (entry.record(), replaced)
    }

    /// Records that the session heard from its agent.
    pub fn seen(&self, node_name: &str, session_id: &str, now_unix_ms: i64) {
        self.update(node_name, session_id, |e| e.last_seen_unix_ms = now_unix_ms);
    }

    pub fn telemetry(&self, node_name: &str, session_id: &str, t: pb::Telemetry, now: i64) {
        self.update(node_name, session_id, |e| {
            e.last_seen_unix_ms = now;
            e.telemetry = Some(t);
        });
    }

    /// Keeps the latest status per fault; a fault reported reverted or failed is no longer held.
    pub fn fault_status(&self, node_name: &str, session_id: &str, s: pb::FaultStatus, now: i64) {
        self.update(node_name, session_id, |e| {
            e.last_seen_unix_ms = now;
            let gone = s.state == pb::FaultState::Reverted as i32
                || s.state == pb::FaultState::Failed as i32;
            if gone {
                e.held_faults.retain(|h| h.fault_id != s.fault_id);
            }
            e.fault_status.insert(s.fault_id.clone(), s);
        });
    }

    fn update(&self, node_name: &str, session_id: &str, f: impl FnOnce(&mut AgentEntry)) {
        let mut agents = self.lock();
        if let Some(e) = agents.get_mut(node_name) {
            if e.session
                .as_ref()
                .is_some_and(|s| s.session_id == session_id)
            {
                f(e);
            }
        }
    }

    /// Marks the agent disconnected, unless a newer session has taken over. Returns the record
    /// to persist when this session was the current one.
    pub fn disconnect(&self, node_name: &str, session_id: &str, now: i64) -> Option<AgentRecord> {
        let mut agents = self.lock();
        let e = agents.get_mut(node_name)?;
        if e.session
            .as_ref()
            .is_none_or(|s| s.session_id != session_id)
        {
            return None;
        }
        e.session = None;
        e.connected = false;
        e.last_seen_unix_ms = e.last_seen_unix_ms.max(now);
        Some(e.record())
    }

    /// Every agent ever seen, sorted by name.
    pub fn list(&self) -> Vec<AgentEntry> {
        let mut out: Vec<AgentEntry> = self.lock().values().cloned().collect();
        out.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        out
    }

    pub fn get(&self, node_name: &str) -> Option<AgentEntry> {
        self.lock().get(node_name).cloned()
    }

    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|e| e.connected).count()
    }

    /// Handles of every live session, for fleet-wide messages.
    pub fn sessions(&self) -> Vec<(String, SessionHandle)> {
        let mut out: Vec<_> = self
            .lock()
            .values()
            .filter_map(|e| e.session.clone().map(|s| (e.node_name.clone(), s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: &str) -> (SessionHandle, mpsc::Receiver<pb::CoordinatorMessage>) {
        let (tx, rx) = mpsc::channel(4);
        let h = SessionHandle {
            session_id: id.into(),
            push: tx,
            end: CancellationToken::new(),
            revert_all: Arc::default(),
        };
        (h, rx)
    }

    fn arrival(name: &str, now: i64) -> Arrival {
        Arrival {
            node_name: name.into(),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            capabilities: vec![],
            version: "0.1.0".into(),
            held_faults: vec![],
            remote_address: "127.0.0.1:1".into(),
            now_unix_ms: now,
        }
    }

    #[test]
    fn connect_replace_and_disconnect() {
        let stored = AgentRecord {
            node_name: "old-node".into(),
            labels: BTreeMap::new(),
            capabilities: vec![],
            version: "0.0.9".into(),
            first_seen_unix_ms: 1,
            last_seen_unix_ms: 2,
            remote_address: String::new(),
        };
        let reg = Registry::from_records(vec![stored]);
        let (h1, _rx1) = handle("s1");
        let (rec, replaced) = reg.connect(arrival("node-a", 100), h1);
        assert!(replaced.is_none());
        assert_eq!((rec.first_seen_unix_ms, rec.last_seen_unix_ms), (100, 100));
        assert_eq!(reg.connected_count(), 1);

        reg.telemetry("node-a", "s1", pb::Telemetry::default(), 150);
        let (h2, _rx2) = handle("s2");
        let (rec, replaced) = reg.connect(arrival("node-a", 200), h2);
        assert_eq!(replaced.map(|h| h.session_id), Some("s1".to_string()));
        assert_eq!(rec.first_seen_unix_ms, 100, "first seen is kept");

        // The replaced session ending does not disconnect the new one, nor update it.
        reg.seen("node-a", "s1", 999);
        assert_eq!(reg.disconnect("node-a", "s1", 250), None);
        let a = reg.get("node-a").expect("entry");
        assert!(a.connected);
        assert_eq!(a.last_seen_unix_ms, 200);

        let rec = reg
            .disconnect("node-a", "s2", 300)
            .expect("current session");
        assert_eq!(rec.last_seen_unix_ms, 300);
        let names: Vec<_> = reg
            .list()
            .into_iter()
            .map(|e| (e.node_name, e.connected))
            .collect();
        assert_eq!(
            names,
            [
                ("node-a".to_string(), false),
                ("old-node".to_string(), false)
            ]
        );
        assert_eq!(reg.connected_count(), 0);
        assert!(reg.sessions().is_empty());
    }

    /// HaltAll's RevertAll is a flag beside the session's queue, so a full queue (an agent that
    /// stopped reading) cannot drop it; the session sends it as soon as it gets to it.
    #[tokio::test]
    async fn a_revert_all_order_is_not_lost_to_a_full_queue() {
        let (h, _rx) = handle("s1");
        while h.push.try_send(pb::CoordinatorMessage::default()).is_ok() {}
        assert!(
            matches!(
                h.push.try_send(pb::CoordinatorMessage::default()),
                Err(mpsc::error::TrySendError::Full(_))
            ),
            "the queue is full"
        );
        h.revert_all.order("fleet halted by admin/a: first".into());
        h.revert_all.order("fleet halted by admin/a: again".into());
        // Ordered before anyone waited: the wait still completes at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), h.revert_all.ordered())
            .await
            .expect("the order is seen");
        assert_eq!(
            h.revert_all.take().as_deref(),
            Some("fleet halted by admin/a: again"),
            "the latest order's message"
        );
        assert_eq!(h.revert_all.take(), None, "sent once");
    }

    #[test]
    fn reverted_faults_are_no_longer_held() {
        let reg = Registry::default();
        let (h, _rx) = handle("s1");
        let mut a = arrival("node-a", 1);
        a.held_faults = vec![pb::HeldFault {
            fault_id: "f1".into(),
            ..Default::default()
        }];
        reg.connect(a, h);
        assert_eq!(reg.get("node-a").expect("a").to_pb().held_faults.len(), 1);
        let status = pb::FaultStatus {
            fault_id: "f1".into(),
            state: pb::FaultState::Reverted as i32,
            ..Default::default()
        };
        reg.fault_status("node-a", "s1", status, 2);
        let a = reg.get("node-a").expect("a");
        assert!(a.held_faults.is_empty());
        assert!(a.fault_status.contains_key("f1"));
    }
}
