//! The registry: sessions connecting, replacing and leaving; fault statuses kept and pruned.

use super::*;
use crate::outbox::{OutMsg, Outbox};
use tokio::sync::mpsc;

fn handle(id: &str) -> (SessionHandle, mpsc::Receiver<Box<OutMsg>>) {
    let (outbox, rx) = Outbox::new(4);
    let h = SessionHandle {
        session_id: id.into(),
        outbox,
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

fn status(id: &str, state: pb::FaultState) -> pb::FaultStatus {
    pb::FaultStatus {
        fault_id: id.into(),
        state: state as i32,
        ..Default::default()
    }
}

#[test]
fn statuses_of_gone_faults_are_pruned_after_a_while() {
    let reg = Registry::default();
    let (h, _rx) = handle("s1");
    reg.connect(arrival("node-a", 0), h);
    reg.fault_status(
        "node-a",
        "s1",
        status("held", pb::FaultState::Applied),
        1_000,
    );
    reg.fault_status(
        "node-a",
        "s1",
        status("gone", pb::FaultState::Reverted),
        1_000,
    );
    reg.fault_status(
        "node-a",
        "s1",
        status("broke", pb::FaultState::Failed),
        2_000,
    );
    let ids = |reg: &Registry| -> Vec<String> {
        reg.get("node-a")
            .expect("a")
            .fault_status
            .into_keys()
            .collect()
    };
    assert_eq!(ids(&reg), ["broke", "gone", "held"]);
    // Just before the limit nothing goes; after it, the reverted and failed ones do.
    reg.fault_status(
        "node-a",
        "s1",
        status("other", pb::FaultState::Applied),
        1_000 + GONE_STATUS_KEPT_MS - 1,
    );
    assert_eq!(ids(&reg), ["broke", "gone", "held", "other"]);
    reg.fault_status(
        "node-a",
        "s1",
        status("other", pb::FaultState::Applied),
        2_000 + GONE_STATUS_KEPT_MS,
    );
    assert_eq!(
        ids(&reg),
        ["held", "other"],
        "held faults are kept however old"
    );
}

#[test]
fn statuses_are_capped_per_agent_dropping_gone_then_oldest() {
    let reg = Registry::default();
    let (h, _rx) = handle("s1");
    reg.connect(arrival("node-a", 0), h);
    // A flood of statuses for faults the agent made up, all at once.
    for i in 0..10_000 {
        reg.fault_status(
            "node-a",
            "s1",
            status(&format!("made-up-{i:05}"), pb::FaultState::Applied),
            10 + i,
        );
    }
    let a = reg.get("node-a").expect("a");
    assert_eq!(a.fault_status.len(), MAX_FAULT_STATUSES);
    assert!(
        a.fault_status.contains_key("made-up-09999"),
        "the newest stay"
    );
    assert!(
        !a.fault_status.contains_key("made-up-09743"),
        "the oldest went"
    );
    // At the cap, a gone fault's status goes before any held one's, even the oldest.
    reg.fault_status(
        "node-a",
        "s1",
        status("gone", pb::FaultState::Reverted),
        20_000,
    );
    let a = reg.get("node-a").expect("a");
    assert_eq!(a.fault_status.len(), MAX_FAULT_STATUSES);
    assert!(!a.fault_status.contains_key("gone"));
    assert!(a.fault_status.contains_key("made-up-09744"));
}

/// HaltAll's RevertAll is a flag beside the session's queue, so a full queue (an agent that
/// stopped reading) cannot drop it; the session sends it as soon as it gets to it.
#[tokio::test]
async fn a_revert_all_order_is_not_lost_to_a_full_queue() {
    let (h, _rx) = handle("s1");
    while h
        .outbox
        .sender()
        .try_send(Box::new(Ok(Default::default())))
        .is_ok()
    {}
    assert!(
        matches!(
            h.outbox.sender().try_send(Box::new(Ok(Default::default()))),
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
