//! In-process coordinator and agents over real mutual TLS on loopback: registration with labels,
//! telemetry, lease renewals, disconnects, reconnect after a coordinator restart, and the agent
//! reverting everything when its lease lapses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::faults::{FaultManager, RecordingManager};
use faultline_proto::pb;
use faultline_proto::pb::RevertReason;
use faultline_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_with_labels_and_send_telemetry() {
    let certs = Certs::new(&["node-a", "node-b"]);
    let data = tempfile::tempdir().expect("data dir");
    let coord = start_coordinator(&certs, data.path(), 0, Duration::from_secs(5)).await;
    let addr = coord.grpc_addr();

    let sa = tempfile::tempdir().expect("state a");
    let sb = tempfile::tempdir().expect("state b");
    let started = Instant::now();
    let a = start_agent(
        &certs,
        "node-a",
        "zone=a,role=web",
        addr,
        sa.path(),
        Arc::new(RecordingFaults::default()),
    )
    .await;
    let b = start_agent(
        &certs,
        "node-b",
        "zone=b",
        addr,
        sb.path(),
        Arc::new(RecordingFaults::default()),
    )
    .await;

    let agents = wait_for("both agents connected", Duration::from_secs(5), || async {
        let agents = list_agents(&certs, addr).await;
        let both = ["node-a", "node-b"]
            .iter()
            .all(|n| agents.get(*n).is_some_and(|a| a.connected));
        both.then_some(agents)
    })
    .await;
    eprintln!(
        "both agents connected {} ms after start",
        started.elapsed().as_millis()
    );

    let node_a = &agents["node-a"];
    assert_eq!(node_a.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(node_a.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(node_a.capabilities, vec!["test".to_string()]);
    assert_eq!(node_a.version, faultline_core::VERSION);
    assert_eq!(agents["node-b"].labels.len(), 1);

    // Telemetry from procfs arrives and is plausible for this machine.
    let tel = wait_for("telemetry from node-a", Duration::from_secs(5), || async {
        list_agents(&certs, addr).await["node-a"].telemetry.clone()
    })
    .await;
    assert!(
        tel.memory_total_bytes > 64 << 20,
        "memory total {}",
        tel.memory_total_bytes
    );
    assert!(tel.memory_available_bytes <= tel.memory_total_bytes);
    assert!(
        (0.0..=1.0).contains(&tel.cpu_busy_ratio),
        "cpu ratio {}",
        tel.cpu_busy_ratio
    );
    assert!(
        tel.interfaces.iter().any(|i| i.name == "lo"),
        "lo in {:?}",
        tel.interfaces
    );
    assert!(tel.timestamp_unix_ms > 0);

    // Telemetry keeps flowing: last_seen moves forward.
    let seen1 = list_agents(&certs, addr).await["node-a"].last_seen_unix_ms;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen2 = list_agents(&certs, addr).await["node-a"].last_seen_unix_ms;
    assert!(
        seen2 > seen1,
        "last_seen did not advance: {seen1} -> {seen2}"
    );

    // An agent holding nothing is not renewed (Hello's lease_while_holding): its lease guards
    // nothing, and the session stays up all the same, past the 5 s lease.
    let r0 = a.status().borrow().lease_renewals;
    let connects = a.status().borrow().connects;
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let now = a.status().borrow().clone();
    assert_eq!(now.lease_renewals, r0, "no renewals while idle");
    assert!(now.connected && now.connects == connects, "{now:?}");

    // An agent that stops shows as disconnected, with its last-seen time kept.
    b.shutdown().await;
    let gone = wait_for("node-b disconnected", Duration::from_secs(5), || async {
        let b = list_agents(&certs, addr).await.remove("node-b")?;
        (!b.connected).then_some(b)
    })
    .await;
    assert!(gone.last_seen_unix_ms > 0);
    assert!(list_agents(&certs, addr).await["node-a"].connected);

    a.shutdown().await;
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reconnect_after_coordinator_restart_and_registry_survives() {
    let certs = Certs::new(&["node-a"]);
    let data = tempfile::tempdir().expect("data dir");
    let coord = start_coordinator(&certs, data.path(), 0, Duration::from_secs(5)).await;
    let addr = coord.grpc_addr();
    let state = tempfile::tempdir().expect("state");
    let faults = Arc::new(RecordingFaults::default());
    let agent = start_agent(
        &certs,
        "node-a",
        "zone=a",
        addr,
        state.path(),
        faults.clone(),
    )
    .await;
    wait_for("node-a connected", Duration::from_secs(5), || async {
        list_agents(&certs, addr)
            .await
            .get("node-a")
            .filter(|a| a.connected)
            .cloned()
    })
    .await;
    let connects_before = agent.status().borrow().connects;

    coord.shutdown().await;
    wait_for(
        "agent notices the coordinator is gone",
        Duration::from_secs(5),
        || async { (!agent.status().borrow().connected).then_some(()) },
    )
    .await;

    // Same data dir, same port: the agent comes back on its own, within its backoff cap.
    let restarted_at = Instant::now();
    let coord = start_coordinator(&certs, data.path(), addr.port(), Duration::from_secs(5)).await;
    let agents = wait_for("node-a reconnected", Duration::from_secs(5), || async {
        let agents = list_agents(&certs, addr).await;
        agents
            .get("node-a")
            .is_some_and(|a| a.connected)
            .then_some(agents)
    })
    .await;
    eprintln!(
        "reconnected {} ms after the coordinator restarted",
        restarted_at.elapsed().as_millis()
    );
    assert_eq!(
        agents["node-a"].labels.get("zone").map(String::as_str),
        Some("a")
    );
    // The coordinator lists the agent on Hello; the agent counts the session on Welcome.
    wait_for(
        "the agent's own session count to move",
        Duration::from_secs(2),
        || async { (agent.status().borrow().connects > connects_before).then_some(()) },
    )
    .await;
    // The restart happened well inside the 5 s lease: nothing was reverted for it.
    assert!(
        !faults.reasons().contains(&RevertReason::Lease),
        "reverts: {:?}",
        faults.reasons()
    );

    agent.shutdown().await;
    assert_eq!(
        faults.reasons(),
        vec![RevertReason::Recovery, RevertReason::Shutdown]
    );
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reverts_everything_when_its_lease_lapses() {
    let certs = Certs::new(&["node-a"]);
    let data = tempfile::tempdir().expect("data dir");
    let lease = Duration::from_secs(2);
    let mut config = coordinator_config(&certs, data.path(), 0, lease);
    // One agent: the whole fleet under fault.
    config.policy.max_fleet_percent_under_fault = 100.0;
    let coord = faultline_coordinator::Coordinator::start(config, None)
        .await
        .expect("coordinator starts");
    let addr = coord.grpc_addr();
    let state = tempfile::tempdir().expect("state");
    let faults = Arc::new(RecordingManager::new(&["cpu"]));
    let agent = start_agent(&certs, "node-a", "", addr, state.path(), faults.clone()).await;
    let status = agent.status();
    wait_for("node-a connected", Duration::from_secs(5), || async {
        status.borrow().connected.then_some(())
    })
    .await;
    // An experiment holds a fault on the agent: the lease guards it from now on.
    let doc = "apiVersion: faultline.dev/v1\nkind: Experiment\nmetadata: {name: held}\nspec:\n  duration: 10m\n  targets: {mode: all}\n  faults: [{kind: cpu, load: 10, workers: 1}]\n";
    pb::experiments_client::ExperimentsClient::new(channel(&certs, "operator", addr).await)
        .create(pb::CreateExperimentRequest {
            document: doc.into(),
            dry_run: false,
            start: true,
        })
        .await
        .expect("experiment created");
    wait_for("the fault held", Duration::from_secs(10), || async {
        (!faults.held().is_empty()).then_some(())
    })
    .await;
    // Let a few renewals pass: they must keep the lease alive.
    let renewed = status.borrow().lease_renewals;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        status.borrow().lease_renewals >= renewed + 2,
        "renewed while holding"
    );
    assert!(
        faults.revert_alls(RevertReason::Lease).is_empty(),
        "lapsed while renewed"
    );

    // The coordinator vanishes: no renewals any more. The last renewal was at most 1 s ago,
    // so the lease lapses within `lease`, and revert-all must follow within lease + 1 s.
    let cut = tokio::time::Instant::now();
    coord.shutdown().await;
    let at = wait_for(
        "revert-all for the lapsed lease",
        lease + Duration::from_secs(2),
        || async { faults.revert_alls(RevertReason::Lease).first().copied() },
    )
    .await;
    let after = at.duration_since(cut);
    eprintln!(
        "lease lapse revert {} ms after the coordinator stopped (lease {} ms)",
        after.as_millis(),
        lease.as_millis()
    );
    assert!(
        after <= lease + Duration::from_secs(1),
        "revert-all after {after:?}"
    );
    assert!(faults.held().is_empty(), "the fault is gone");
    // One revert-all per lapse, however long the coordinator stays away.
    tokio::time::sleep(lease * 2).await;
    assert_eq!(faults.revert_alls(RevertReason::Lease).len(), 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_picks_up_rotated_certificates_without_restart() {
    let certs = Certs::new(&[]);
    let data = tempfile::tempdir().expect("data dir");
    let coord = start_coordinator(&certs, data.path(), 0, Duration::from_secs(5)).await;
    let addr = coord.grpc_addr();
    assert!(list_agents(&certs, addr).await.is_empty());

    // Keep the old admin identity, then rotate everything (new CA, new server certificate)
    // in place, as an operator re-running `faultctl certs init --force` would.
    let old = tempfile::tempdir().expect("old certs");
    for f in ["ca.pem", "admin.pem", "admin-key.pem"] {
        std::fs::copy(certs.path().join(f), old.path().join(f)).expect("copy old cert");
    }
    faultline_identity::pki::init_dir(
        certs.path(),
        &faultline_identity::pki::InitOptions {
            sans: vec![],
            agents: vec![],
            days: 1,
            force: true,
        },
    )
    .expect("rotate");

    // New connections use the new files: the new admin is served...
    assert!(list_agents(&certs, addr).await.is_empty());
    // ...a client that still trusts the old CA refuses the new server certificate...
    let old_paths = faultline_identity::tls::CertPaths::in_dir(old.path(), "admin");
    match faultline_identity::tls::connect(&url(addr), &old_paths, Duration::from_secs(3)).await {
        Err(faultline_identity::tls::TlsError::ServerCertificate { reason, .. }) => assert!(
            reason.contains("signature does not verify against the CA this client trusts"),
            "{reason}"
        ),
        other => panic!(
            "an old-CA client must refuse the rotated server certificate, got {:?}",
            other.map(|_| ())
        ),
    }
    // ...and the old admin certificate, presented to a client that trusts the new CA, is
    // refused by the coordinator in the handshake: it verifies clients against the new CA.
    let stale = faultline_identity::tls::CertPaths {
        ca: certs.path().join("ca.pem"),
        ..old_paths
    };
    match faultline_identity::tls::connect(&url(addr), &stale, Duration::from_secs(3)).await {
        Err(faultline_identity::tls::TlsError::Refused { reason, .. }) => {
            assert!(reason.ends_with("(TLS alert decrypt_error)"), "{reason}")
        }
        other => panic!(
            "an old-CA certificate must be refused after the rotation, got {:?}",
            other.map(|_| ())
        ),
    }
    coord.shutdown().await;
}
