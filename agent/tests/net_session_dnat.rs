//! The control channel is never cut by the agent's own faults, even when the coordinator is
//! reached through a Service VIP (root, real kernel, the real binaries from target/debug).
//!
//! A kube-proxy-like node: the agent runs in netns "node" and dials
//! `https://coordinator.test:443`, which the node's private /etc/hosts resolves to the VIP
//! 10.202.9.9; the node's OUTPUT chain DNATs VIP:443 to the coordinator "pod" 10.202.1.2:7443
//! in another netns, and POSTROUTING MASQUERADEs with random source ports (as kube-proxy does
//! for host-network clients). On the wire the session is pod address <-> a port nobody chose.
//!
//! Through the real agent, an experiment partitions the node from the pod (both directions)
//! and drops 100% of the packets to and from the pod (with `includeProtected`). For 60 s the
//! session and its lease hold: no lease lapse, no reconnect on either side, renewals keep
//! arriving, while new TCP connections to the pod, and an already established connection
//! through the same DNAT'd VIP that is not the session, are cut (the address exemption alone,
//! the VIP, does not save it). Then the test removes the session's tuples from the agent's
//! programs: the same faults now cut the session and its lease lapses, so the test fails
//! without the exemption.

mod net_ebpf_support;
mod net_session_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHash, Map, MapData};
use faultline_agent::net::control::KEY_SIZE;
use faultline_agent::net::ebpf;
use faultline_identity::pki;
use net_ebpf_support::{require_root, Ns};
use net_session_support::*;

const HOLD: Duration = Duration::from_secs(60);
const AGENT_METRICS: &str = "127.0.0.1:9464";
const COORDINATOR_METRICS: &str = "127.0.0.1:9466";

const EXPERIMENT: &str = "apiVersion: faultline.dev/v1
kind: Experiment
metadata: {name: cut-the-pod}
spec:
  duration: 5m
  targets: {mode: all}
  faults:
    - {kind: partition, peers: [10.202.1.2/32]}
    - {kind: drop, probability: 1.0, match: {destinations: [10.202.1.2/32], includeProtected: true}}
    - {kind: drop, probability: 1.0, match: {sources: [10.202.1.2/32], direction: ingress, includeProtected: true}}
";

/// What the agent and the coordinator say about the session now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Session {
    connected: f64,
    reconnects: f64,
    lapses: f64,
    renewals: f64,
    faults: f64,
    coordinator_connected: f64,
    coordinator_opened: f64,
}

fn session(node: &str, pod: &str) -> Session {
    let a = metrics(node, sa(AGENT_METRICS)).expect("the agent's /metrics answers");
    let c = metrics(pod, sa(COORDINATOR_METRICS)).expect("the coordinator's /metrics answers");
    Session {
        connected: metric(&a, "faultline_agent_session_connected", &[]),
        reconnects: metric(&a, "faultline_agent_reconnects_total", &[]),
        lapses: metric(&a, "faultline_agent_lease_lapses_total", &[]),
        renewals: metric(&a, "faultline_agent_lease_renewals_total", &[]),
        faults: metric(&a, "faultline_agent_faults_active", &[]),
        coordinator_connected: metric(&c, "faultline_coordinator_agents_connected", &[]),
        coordinator_opened: metric(&c, "faultline_coordinator_sessions_opened_total", &[]),
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, logs: &[&Daemon]) {
    let until = Instant::now() + within;
    while !ok() {
        if Instant::now() >= until {
            let logs: Vec<String> = logs
                .iter()
                .map(|d| format!("--- {} ---\n{}", d.name, d.log()))
                .collect();
            panic!("{what} within {within:?}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

type SessionMap = BpfHash<MapData, [u8; KEY_SIZE], u8>;

/// The `fl_session` maps of the attached Faultline programs process `pid` holds, one per
/// fault object (the programs of one object share it): (program, map). The agent's spare
/// objects (`net::warm`: loaded ahead of need, never attached) are left out.
fn session_maps(pid: u32) -> Vec<(String, SessionMap)> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    // Running: attached, or in a kept TCX link's dispatcher slot.
    let attached = faultline_agent::net::keep::running_program_ids();
    for p in ebpf::programs_named("fl_") {
        if !attached.contains(&p.id) || !ebpf::holders(Path::new("/proc"), p.id).contains(&pid) {
            continue;
        }
        for id in &p.map_ids {
            if seen.contains(id) {
                continue;
            }
            seen.push(*id);
            let Ok(data) = MapData::from_id(*id) else {
                continue;
            };
            let named = data
                .info()
                .ok()
                .is_some_and(|i| i.name_as_str() == Some(ebpf::SESSION_MAP));
            if named {
                let map = Map::from_map_data(data).expect("fl_session map");
                out.push((
                    p.name.clone(),
                    BpfHash::try_from(map).expect("fl_session is a hash"),
                ));
            }
        }
    }
    out
}

/// A key's (source, destination) as text (IPv4 keys).
fn describe_key(k: &[u8; KEY_SIZE]) -> String {
    let port = |i: usize| u16::from_ne_bytes([k[i], k[i + 1]]);
    let v4 = |i: usize| format!("{}.{}.{}.{}", k[i], k[i + 1], k[i + 2], k[i + 3]);
    format!("{}:{} -> {}:{}", v4(8), port(4), v4(24), port(6))
}

#[test]
fn the_session_outlives_a_partition_and_drop_of_the_coordinator_pod_behind_a_service_vip() {
    require_root();
    let _iptables = require_iptables();
    let coordinator_bin = workspace_binary("faultline-coordinator");
    let faultctl = workspace_binary("faultctl");
    let agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_faultline-agent"));

    // Guards drop in reverse order: daemons first, then the hosts file, then the namespaces.
    let node = Ns::new();
    let pod = Ns::new();
    kube_proxy_like(&node, &pod);
    let _hosts = Hosts::new(&node.name, &format!("{VIP} coordinator.test"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    pki::init_dir(
        &certs,
        &pki::InitOptions {
            sans: vec!["coordinator.test".into(), POD_IP.into()],
            agents: vec!["node-dnat".into()],
            days: 1,
            force: false,
        },
    )
    .expect("certificates");
    let config = tmp.path().join("coordinator.toml");
    std::fs::write(
        &config,
        "[policy]\nmax_fleet_percent_under_fault = 100\nmax_concurrent_experiments = 10\n",
    )
    .expect("coordinator config");
    let s = |p: &Path| p.display().to_string();
    let mut coordinator = Daemon::spawn(
        "coordinator",
        &pod.name,
        &coordinator_bin,
        &[
            "--listen".into(),
            format!("{POD_IP}:7443"),
            "--metrics-listen".into(),
            COORDINATOR_METRICS.into(),
            "--data-dir".into(),
            s(&tmp.path().join("coordinator-data")),
            "--certs-dir".into(),
            s(&certs),
            "--config".into(),
            s(&config),
        ],
        tmp.path(),
    );
    let _echo = Echo::start(&pod.name, sa(&format!("{POD_IP}:9000")));
    let mut agent = Daemon::spawn(
        "agent",
        &node.name,
        &agent_bin,
        &[
            "--coordinator".into(),
            "https://coordinator.test:443".into(),
            "--node-name".into(),
            "node-dnat".into(),
            "--certs-dir".into(),
            s(&certs),
            "--state-dir".into(),
            s(&tmp.path().join("agent-state")),
            "--metrics-listen".into(),
            AGENT_METRICS.into(),
        ],
        tmp.path(),
    );
    let (n, p) = (node.name.clone(), pod.name.clone());
    let started = Instant::now();
    wait_for(
        "the agent did not connect through the VIP",
        Duration::from_secs(20),
        || {
            metrics(&n, sa(AGENT_METRICS)).is_some()
                && metrics(&p, sa(COORDINATOR_METRICS)).is_some()
                && {
                    let now = session(&n, &p);
                    now.connected == 1.0 && now.coordinator_connected == 1.0
                }
        },
        &[&agent, &coordinator],
    );
    eprintln!("agent connected through the VIP in {:?}", started.elapsed());
    let line = agent
        .log()
        .lines()
        .find(|l| l.contains("control connection"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the agent logs its control connection:\n{}", agent.log()));
    eprintln!("{line}");
    assert!(
        line.contains(":443") && line.contains(&format!("{POD_IP}:7443")),
        "the agent read the NAT translation (VIP:443 on the socket, pod:7443 on the wire): {line}"
    );

    // Before the faults: the pod answers directly and through the echo Service.
    let echo_direct = sa(&format!("{POD_IP}:9000"));
    let echo_service = sa(&format!("{VIP}:8443"));
    let mut direct = tcp_from(&n, echo_direct, Duration::from_secs(2)).expect("pod reachable");
    assert!(echoes(&mut direct, Duration::from_secs(2)), "direct echo");
    let mut through_vip =
        tcp_from(&n, echo_service, Duration::from_secs(2)).expect("echo Service reachable");
    assert!(
        echoes(&mut through_vip, Duration::from_secs(2)),
        "echo through the VIP"
    );

    // The faults, through the real agent.
    let doc = tmp.path().join("experiment.yaml");
    std::fs::write(&doc, EXPERIMENT).expect("experiment document");
    let applied = Instant::now();
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &p,
            faultctl.to_str().expect("utf-8 path"),
            "--coordinator",
            &format!("https://{POD_IP}:7443"),
            "--certs-dir",
            &s(&certs),
            "--identity",
            "operator",
            "apply",
            "-f",
            &s(&doc),
        ],
    );
    eprintln!("faultctl apply: {}", out.trim());
    wait_for(
        "the agent did not apply its three faults",
        Duration::from_secs(10),
        || session(&n, &p).faults == 3.0,
        &[&agent, &coordinator],
    );
    eprintln!("three faults applied in {:?}", applied.elapsed());

    // The faults work: nothing new reaches the pod, directly or through a VIP, and an
    // established connection through the same DNAT as the session is cut.
    let probe = Duration::from_millis(1500);
    assert!(
        tcp_from(&n, echo_direct, probe).is_none(),
        "a new connection to the pod got through the partition"
    );
    assert!(
        tcp_from(&n, echo_service, probe).is_none(),
        "a new connection through the VIP got through the partition"
    );
    assert!(
        !echoes(&mut through_vip, Duration::from_secs(2)),
        "an established connection through the VIP (not the session) still echoes: the faults \
         do not act on DNAT'd traffic"
    );
    assert!(!echoes(&mut direct, Duration::from_secs(1)), "direct echo");

    // The session and its lease hold for a minute.
    let base = session(&n, &p);
    eprintln!("holding: {base:?}");
    let hold = Instant::now();
    while hold.elapsed() < HOLD {
        std::thread::sleep(Duration::from_secs(1));
        agent.assert_running();
        coordinator.assert_running();
        let now = session(&n, &p);
        let same = now.connected == 1.0
            && now.reconnects == base.reconnects
            && now.lapses == base.lapses
            && now.faults == 3.0
            && now.coordinator_connected == 1.0
            && now.coordinator_opened == base.coordinator_opened;
        assert!(
            same,
            "after {:?} of the hold the session did not hold: {now:?} (at the start {base:?})\nagent log:\n{}",
            hold.elapsed(),
            agent.log()
        );
    }
    let end = session(&n, &p);
    let renewals = end.renewals - base.renewals;
    eprintln!(
        "held {:?}: {renewals} lease renewals, 0 lapses, 0 reconnects",
        hold.elapsed()
    );
    assert!(renewals >= 50.0, "only {renewals} renewals in {HOLD:?}");
    let a = metrics(&n, sa(AGENT_METRICS)).expect("agent metrics");
    let count = |kind: &str, verdict: &str| {
        metric(
            &a,
            "faultline_agent_ebpf_packets_total",
            &[
                &format!("fault_kind=\"{kind}\""),
                &format!("verdict=\"{verdict}\""),
            ],
        )
    };
    // Every program met the session's packets and spared them; the programs attached last run
    // first and drop the probes, so those that run later may see nothing left to drop.
    let mut dropped = 0.0;
    for kind in ["partition", "drop"] {
        let spared = count(kind, "spared");
        dropped += count(kind, "dropped");
        eprintln!(
            "{kind}: {} packets dropped, {spared} session packets spared",
            count(kind, "dropped")
        );
        assert!(
            spared > 0.0,
            "{kind} spared no session packet: the session's packets did not meet its programs"
        );
    }
    assert!(dropped > 0.0, "the faults dropped nothing");
    assert!(
        tcp_from(&n, echo_direct, probe).is_none(),
        "the partition no longer holds at the end"
    );

    // Without the exemption the same faults cut the session: take the session's tuples out of
    // every program the agent holds (its SYN-time mark still covers what it sends, nothing
    // covers what it receives), and its lease lapses.
    let mut maps = session_maps(agent.pid());
    assert_eq!(maps.len(), 3, "one fl_session map per fault object");
    let mut removed = 0;
    for (prog, map) in maps.iter_mut() {
        let keys: Vec<[u8; KEY_SIZE]> = map
            .keys()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{prog}: reading fl_session: {e}"));
        assert_eq!(
            keys.len(),
            4,
            "{prog}: the socket's and the wire's tuple, both directions: {:?}",
            keys.iter().map(describe_key).collect::<Vec<_>>()
        );
        assert!(
            keys.iter()
                .any(|k| describe_key(k).contains(&format!("{POD_IP}:7443 -> {NODE_IP}:"))),
            "{prog}: the translated tuple from the pod is registered: {:?}",
            keys.iter().map(describe_key).collect::<Vec<_>>()
        );
        for k in &keys {
            map.remove(k).expect("remove a session key");
            removed += 1;
        }
    }
    let cut = Instant::now();
    eprintln!("removed {removed} session keys from {} maps", maps.len());
    wait_for(
        "without the exemption the session was not cut (no lease lapse)",
        Duration::from_secs(20),
        || session(&n, &p).lapses > base.lapses,
        &[&agent, &coordinator],
    );
    eprintln!(
        "without the exemption: lease lapsed {:?} after the cut",
        cut.elapsed()
    );
    wait_for(
        "the lapse did not revert the faults",
        Duration::from_secs(10),
        || session(&n, &p).faults == 0.0,
        &[&agent, &coordinator],
    );
    assert!(
        tcp_from(&n, echo_direct, Duration::from_secs(2)).is_some(),
        "the pod is reachable again once the faults are reverted"
    );
    assert!(
        agent.terminate(Duration::from_secs(15)),
        "the agent did not stop on SIGTERM"
    );
}
