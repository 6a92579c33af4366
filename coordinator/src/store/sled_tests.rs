//! The sled store: every record survives a close and reopen.

use super::*;

fn agent(name: &str, last_seen: i64) -> AgentRecord {
    AgentRecord {
        node_name: name.into(),
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        capabilities: vec!["cpu".into()],
        version: "0.1.0".into(),
        first_seen_unix_ms: 1_000,
        last_seen_unix_ms: last_seen,
        remote_address: "127.0.0.1:5000".into(),
    }
}

fn entry(at: i64, action: &str, allowed: bool) -> AuditRecord {
    AuditRecord {
        at_unix_ms: at,
        identity: "admin/admin".into(),
        action: action.into(),
        detail: format!("at {at}"),
        allowed,
    }
}

#[test]
fn audit_keys_sort_by_time_then_sequence() {
    assert!(audit_key(1, 99) < audit_key(2, 0));
    assert!(audit_key(2, 1) < audit_key(2, 2));
    assert!(
        audit_key(255, 0) < audit_key(256, 0),
        "big-endian, not little"
    );
}

#[test]
fn everything_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.put_agent(&agent("node-b", 5_000)).expect("put");
        store.put_agent(&agent("node-a", 4_000)).expect("put");
        store.put_agent(&agent("node-a", 6_000)).expect("replace");
        // Same millisecond twice: the sequence keeps both, in order.
        store
            .append_audit(&entry(10, "Fleet.HaltAll", false))
            .expect("audit");
        store
            .append_audit(&entry(20, "Fleet.HaltAll", true))
            .expect("audit");
        store
            .append_audit(&entry(20, "Fleet.Resume", true))
            .expect("audit");
        let halt = HaltRecord {
            reason: "game day".into(),
            by: "admin/admin".into(),
            at_unix_ms: 20,
        };
        store.set_halt(Some(&halt)).expect("halt");
        store.close().expect("close");
        assert!(matches!(store.agents(), Err(StoreError::Closed)));
    }
    // Reopening in the same process works because close() released the lock.
    let store = SledStore::open(dir.path()).expect("reopen");
    let agents = store.agents().expect("agents");
    let names: Vec<_> = agents.iter().map(|a| a.node_name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(agents[0], agent("node-a", 6_000));
    assert_eq!(
        store.agent("node-b").expect("get"),
        Some(agent("node-b", 5_000))
    );
    assert_eq!(store.agent("node-z").expect("get"), None);

    let audit = store.audit(10).expect("audit");
    let got: Vec<_> = audit
        .iter()
        .map(|e| (e.at_unix_ms, e.action.as_str(), e.allowed))
        .collect();
    assert_eq!(
        got,
        [
            (20, "Fleet.Resume", true),
            (20, "Fleet.HaltAll", true),
            (10, "Fleet.HaltAll", false)
        ]
    );
    assert_eq!(store.audit(1).expect("limit").len(), 1);
    assert_eq!(
        store.halt().expect("halt").map(|h| h.reason),
        Some("game day".to_string())
    );
    store.set_halt(None).expect("clear");
    assert_eq!(store.halt().expect("halt"), None);
}

#[test]
fn a_missing_data_dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("a/b");
    let store = SledStore::open(&data).expect("open");
    let mode = std::fs::metadata(&data).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(store.path(), data.join("store"));
}

#[test]
fn a_second_open_of_the_same_dir_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = SledStore::open(dir.path()).expect("open");
    let err = SledStore::open(dir.path()).expect_err("locked");
    assert!(
        err.to_string()
            .contains("another coordinator is using this --data-dir"),
        "{err}"
    );
}

#[test]
fn experiment_records_survive_reopen() {
    use crate::experiments::record::{ExperimentRecord, PlanRecord};
    use faultline_core::experiment::Phase;
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = |name: &str, phase: Phase| ExperimentRecord {
        id: name.into(),
        name: name.into(),
        phase,
        document: "apiVersion: faultline.dev/v1\n".into(),
        created_by: "operator/operator".into(),
        created_unix_ms: 5,
        started_unix_ms: 6,
        ended_unix_ms: 0,
        duration_ms: 60_000,
        guard_interval_ms: 1000,
        on_target_failure: "abort".into(),
        verdict_reason: String::new(),
        plan: PlanRecord {
            selection: "mode all".into(),
            ..Default::default()
        },
        guards: vec![],
        targets: vec![],
        guard_timeline: Default::default(),
        abort: None,
        telemetry: Default::default(),
        log: Default::default(),
        gaps: vec![],
        hypothesis: None,
        impact: vec![],
        findings: vec![],
        pod_kills: Vec::new(),
    };
    {
        let store = SledStore::open(dir.path()).expect("open");
        store
            .put_experiment(&rec("b-exp", Phase::Running))
            .expect("put");
        store
            .put_experiment(&rec("a-exp", Phase::Pending))
            .expect("put");
        store
            .put_experiment(&rec("a-exp", Phase::Aborted))
            .expect("replace");
        store.close().expect("close");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    let all = store.experiments().expect("experiments");
    let got: Vec<(&str, Phase)> = all.iter().map(|r| (r.name.as_str(), r.phase)).collect();
    assert_eq!(got, [("a-exp", Phase::Aborted), ("b-exp", Phase::Running)]);
    assert_eq!(
        store.experiment("b-exp").expect("get"),
        Some(rec("b-exp", Phase::Running))
    );
    assert_eq!(store.experiment("nope").expect("get"), None);
}
