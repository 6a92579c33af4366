//! The in-memory registry of agents: who is connected, since when, their labels, latest
//! telemetry and held faults, and a handle to push messages into each live session.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use faultline_proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::store::AgentRecord;

/// Reverted and failed faults' statuses are kept this long after they arrive (10 minutes).
pub const GONE_STATUS_KEPT_MS: i64 = 10 * 60 * 1000;
/// At most this many fault statuses are kept per agent; beyond it the oldest go first, gone
/// faults before held ones.
pub const MAX_FAULT_STATUSES: usize = 256;

/// A fault's latest status and when the coordinator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenStatus {
    pub status: pb::FaultStatus,
    pub received_unix_ms: i64,
}

impl SeenStatus {
    fn gone(&self) -> bool {
        self.status.state == pb::FaultState::Reverted as i32
            || self.status.state == pb::FaultState::Failed as i32
    }
}

/// Drops what [`GONE_STATUS_KEPT_MS`] and [`MAX_FAULT_STATUSES`] no longer keep.
fn prune_statuses(statuses: &mut BTreeMap<String, SeenStatus>, now: i64) {
    statuses.retain(|_, s| !s.gone() || now - s.received_unix_ms < GONE_STATUS_KEPT_MS);
    let excess = statuses.len().saturating_sub(MAX_FAULT_STATUSES);
    if excess == 0 {
        return;
    }
    let mut by_age: Vec<(bool, i64, String)> = statuses
        .iter()
        .map(|(id, s)| (!s.gone(), s.received_unix_ms, id.clone()))
        .collect();
    // Gone ones first (false < true), oldest first.
    by_age.sort();
    for (_, _, id) in by_age.into_iter().take(excess) {
        statuses.remove(&id);
    }
}

/// How to reach one live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub session_id: String,
    /// The session's outbound queue; orders go in with [`Outbox::push`].
    pub outbox: Arc<Outbox>,
    /// Cancelled to end the session from outside (a newer session replaced it).
    pub end: CancellationToken,
    /// A RevertAll for this session to send (the fleet halt): a flag, not a slot in the outbox, so
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
    /// The latest status report per fault id: those of reverted and failed faults for
    /// [`GONE_STATUS_KEPT_MS`], at most [`MAX_FAULT_STATUSES`] in all.
    pub fault_status: BTreeMap<String, SeenStatus>,
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
    /// How many entries are connected, kept beside them under the same lock: every session's
    /// start and end reports it, and counting 10,000 entries each time made a fleet's
    /// connection storm quadratic.
    connected: AtomicUsize,
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
            connected: AtomicUsize::new(0),
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
        if !entry.connected {
            self.connected.fetch_add(1, Ordering::Relaxed);
        }
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

    /// Keeps the latest status per fault (pruned, see [`AgentEntry::fault_status`]); a fault
    /// reported reverted or failed is no longer held.
    pub fn fault_status(&self, node_name: &str, session_id: &str, s: pb::FaultStatus, now: i64) {
        self.update(node_name, session_id, |e| {
            e.last_seen_unix_ms = now;
            let seen = SeenStatus {
                status: s,
                received_unix_ms: now,
            };
            if seen.gone() {
                e.held_faults.retain(|h| h.fault_id != seen.status.fault_id);
            }
            e.fault_status.insert(seen.status.fault_id.clone(), seen);
            prune_statuses(&mut e.fault_status, now);
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
        if e.connected {
            self.connected.fetch_sub(1, Ordering::Relaxed);
        }
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

    /// `f` of every entry, read in place, in no particular order. Planning and other
    /// fleet-wide reads use this rather than [`Registry::list`]: with 10,000 agents and their
    /// fault statuses a full copy is megabytes, made under the lock every session takes for
    /// each message it receives.
    pub fn map_all<R>(&self, f: impl FnMut(&AgentEntry) -> R) -> Vec<R> {
        self.lock().values().map(f).collect()
    }

    pub fn get(&self, node_name: &str) -> Option<AgentEntry> {
        self.lock().get(node_name).cloned()
    }

    /// `f` of the entry of `node_name`, read in place (no copy of the entry).
    pub fn view<R>(&self, node_name: &str, f: impl FnOnce(&AgentEntry) -> R) -> Option<R> {
        self.lock().get(node_name).map(f)
    }

    /// The live session of `node_name`, without copying the rest of its entry.
    pub fn session(&self, node_name: &str) -> Option<SessionHandle> {
        self.lock().get(node_name).and_then(|e| e.session.clone())
    }

    /// The latest telemetry of `node_name`, without copying the rest of its entry.
    pub fn telemetry_of(&self, node_name: &str) -> Option<pb::Telemetry> {
        self.lock().get(node_name).and_then(|e| e.telemetry.clone())
    }

    pub fn is_connected(&self, node_name: &str) -> bool {
        self.lock().get(node_name).is_some_and(|e| e.connected)
    }

    pub fn connected_count(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
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
#[path = "registry_tests.rs"]
mod tests;
