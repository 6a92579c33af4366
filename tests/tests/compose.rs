//! Composition (issue 13, item 6), end to end with the real binaries (needs root, iproute2,
//! dnsmasq, util-linux, python3, cgroup2 and the v1 blkio controller): ONE experiment, created
//! with `faultctl apply`, holds six faults at once on one agent, each with its own duration:
//!
//! | # | fault | own duration | what the test measures |
//! |---|---|---|---|
//! | 0 | cpu 20% x 1 (host) | 8s | the stress worker of that fault exists |
//! | 1 | container-kill `app` every 1s, kubelet-shaped pod | 14s | a restarted `app` is killed within 2 s; the pause process lives |
//! | 2 | network tbf 1mbit on port 5001, in netns B | 20s | 128 KiB B -> A takes > 0.6 s (ms without) |
//! | 3 | dns nxdomain for one name, in netns A | 26s | `getent` fails for it, resolves the other |
//! | 4 | disk-fill 50% of a 64 MiB tmpfs | 32s | `df` shows >= 31 MiB used |
//! | 5 | io-limit 1Mi/s writes, loop device, v1 blkio cgroup | the experiment's 38s | `dd oflag=direct` of 2 MiB from the cgroup takes ~2 s |
//!
//! As each fault's own duration ends, its effect is gone while the later ones still hold; at
//! the end nothing holds, the agent counts no active fault, and after the agent stops its
//! recovery finds nothing in the journal. `faultctl apply --dry-run` describes each fault and
//! its own duration first. Every namespace, veth, mount, loop device, cgroup and process is
//! removed by a Drop guard, even when the test fails.

#[path = "compose/pod.rs"]
mod pod;
#[path = "compose/support.rs"]
mod support;

use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_tests::binary;
use faultline_tests::continuous::{ctl, ctl_ok, write};
use faultline_tests::procs::{http_get, require_root, run};
use faultline_tests::stack::{worker_faults, Stack};
use pod::KubePod;
use support::*;

const KINDS: [&str; 6] = [
    "cpu",
    "container-kill",
    "network",
    "dns",
    "disk-fill",
    "io-limit",
];

/// What the user measures, for each of the six faults: does it hold now?
struct Measured {
    holds: [bool; 6],
    detail: Vec<String>,
}

struct World<'a> {
    lab: &'a Lab,
    fill: &'a Tmpfs,
    disk: &'a Loop,
    cg: &'a Blkio,
    pod: &'a mut KubePod,
    used0: u64,
    agent_pid: u32,
    cpu_fault_id: String,
    /// The agent's log file, shown when an expectation fails.
    agent_log: std::path::PathBuf,
}

impl World<'_> {
    /// Measures every fault's effect; `big` times a 2 MiB dd (to compare with the limit).
    fn measure(&mut self, big: bool) -> Measured {
        let mut detail = Vec::new();
        let cpu = worker_faults(self.agent_pid)
            .iter()
            .any(|(_, f)| *f == self.cpu_fault_id);
        detail.push(format!("cpu worker: {cpu}"));
        // The runtime restarts `app`: the fault (every 1s) kills it again within 2 s.
        let app = self.pod.restart_app();
        let killed = self.pod.app_ends_within(Duration::from_secs(2));
        assert!(
            self.pod.pause_running(),
            "the pause process is never killed"
        );
        detail.push(format!("restarted app {app} killed within 2 s: {killed}"));
        let tx = self.lab.transfer_secs(128 << 10);
        detail.push(format!("128 KiB B->A on port {PORT}: {tx:.3} s"));
        let bad = self.lab.getent(BAD);
        let good = self.lab.getent(GOOD);
        assert!(good.is_some(), "{GOOD} always resolves (bad: {bad:?})");
        detail.push(format!("getent {BAD}: {bad:?}, {GOOD}: {good:?}"));
        let used = self.fill.used();
        detail.push(format!("df used: {} KiB", used >> 10));
        let mib = if big { 2 } else { 1 };
        let dd = self.cg.dd_secs(self.disk, mib);
        let limit = std::fs::read_to_string(self.cg.0.join("blkio.throttle.write_bps_device"))
            .unwrap_or_default();
        detail.push(format!(
            "dd {mib} MiB oflag=direct: {dd:.3} s (blkio.throttle.write_bps_device: {:?})",
            limit.trim()
        ));
        if big && dd > 0.5 {
            let expected = f64::from(mib);
            assert!(
                (expected * 0.8..=expected * 1.3).contains(&dd),
                "under writeBytesPerSecond 1Mi, {mib} MiB take about {expected} s, took {dd:.3} s"
            );
        }
        Measured {
            holds: [
                cpu,
                killed,
                tx > 0.6,
                bad.is_none(),
                used >= self.used0 + (31 << 20),
                dd > 0.7 * f64::from(mib),
            ],
            detail,
        }
    }

    /// Asserts that exactly the faults `from..` hold (and the earlier ones are gone), with a
    /// clear answer if a fast measurement is ambiguous.
    fn expect(&mut self, from: usize, when: &str) {
        let m = self.measure(from == 0);
        println!("{when}: {}", m.detail.join("; "));
        for (i, kind) in KINDS.iter().enumerate() {
            let want = i >= from;
            assert_eq!(
                m.holds[i],
                want,
                "{when}: {kind} should {} (measured: {}); agent log:\n{}",
                if want { "hold" } else { "be gone" },
                m.detail.join("; "),
                std::fs::read_to_string(&self.agent_log).unwrap_or_default()
            );
        }
    }
}

fn document(lab: &Lab, fill: &Tmpfs, disk: &Loop, cg: &Blkio, pod: &KubePod) -> String {
    format!(
        r#"apiVersion: faultline.dev/v1
kind: Experiment
metadata: {{name: compose}}
spec:
  duration: 38s
  targets: {{agents: {{names: [node-a]}}, mode: all}}
  faults:
    - {{kind: cpu, load: 20, workers: 1, duration: 8s}}
    - {{kind: container-kill, containers: [app], interval: 1s, target: {{pod: {uid}, podNamespace: {ns}, podName: {name}}}, duration: 14s}}
    - {{kind: network, interface: {if_b}, rate: 1mbit, match: {{ports: [{PORT}]}}, target: {{netns: {ns_b}}}, duration: 20s}}
    - {{kind: dns, names: [{BAD}], action: nxdomain, target: {{netns: {ns_a}}}, duration: 26s}}
    - {{kind: disk-fill, path: {fill}, percent: 50, keepFree: 1Mi, duration: 32s}}
    - {{kind: io-limit, device: {disk}, writeBytesPerSecond: 1Mi, target: {{cgroup: {cg}}}}}
"#,
        uid = pod.uid,
        ns = pod::NAMESPACE,
        name = pod::POD,
        if_b = lab.if_b,
        ns_b = lab.b.path().display(),
        ns_a = lab.a.path().display(),
        fill = fill.0.display(),
        disk = disk.0.display(),
        cg = cg.target(),
    )
}

/// Waits until target `index` (by fault index) is reverted; returns the record.
async fn wait_reverted(stack: &Stack, index: usize, timeout: Duration) -> pb::Experiment {
    let until = Instant::now() + timeout;
    loop {
        let e = stack.get("compose").await;
        let t = e
            .targets
            .iter()
            .find(|t| t.fault_id.ends_with(&format!("-{index}")));
        if let Some(t) = t {
            assert_ne!(
                t.state,
                pb::FaultState::Failed as i32,
                "{} failed: {}",
                KINDS[index],
                t.error
            );
            if t.state == pb::FaultState::Reverted as i32 {
                return e;
            }
        }
        assert!(
            Instant::now() < until,
            "{} not reverted: {:?}",
            KINDS[index],
            e.targets
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_faults_in_one_experiment_each_reverted_at_its_own_end() {
    require_root("the composition test");
    require_tools();
    let lab = Lab::new();
    let mut stack = Stack::start(&["node-a"], Duration::from_secs(5));
    let fill = Tmpfs::over(&stack.dir.path().join("fill"));
    let mut pod = KubePod::new();
    let limits = format!(
        "io_paths = [\"{}\"]\npod_logs_dir = \"{}\"\ncontainer_logs_dir = \"{}\"\n",
        fill.0.display(),
        pod.pods_dir().display(),
        pod.links_dir().display()
    );
    stack.spawn_agent_limits("node-a", "zone=a", &limits);
    let agent_pid = stack.agents[0].proc.pid();
    let disk = Loop::new();
    let cg = Blkio::new();
    let used0 = fill.used();
    let (tx0, dd0) = (lab.transfer_secs(128 << 10), cg.dd_secs(&disk, 2));
    println!("before: 128 KiB B->A {tx0:.3} s, dd 2 MiB {dd0:.3} s, df used {used0} B");
    assert!(tx0 < 0.3 && dd0 < 0.5, "the lab is slow without faults");
    let file = write(
        &stack,
        "compose.yaml",
        &document(&lab, &fill, &disk, &cg, &pod),
    );

    // The dry run describes each fault and its own duration; nothing is created.
    let (ok, dry) = ctl(&stack, "operator", &["apply", "-f", &file, "--dry-run"]);
    println!("{dry}");
    assert!(ok, "dry run failed: {dry}");
    for want in [
        "dry run: experiment compose would run for 38s",
        "Faults on each selected agent (6):",
        "(for its own 8s, then reverted while the others go on)",
        "(for its own 14s, then reverted while the others go on)",
        "(for its own 20s, then reverted while the others go on)",
        "(for its own 26s, then reverted while the others go on)",
        "(for its own 32s, then reverted while the others go on)",
        "nothing was created",
    ] {
        assert!(dry.contains(want), "the dry run lacks {want:?}:\n{dry}");
    }
    let lines: Vec<&str> = dry
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    for (i, kind) in KINDS.iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{}. ", i + 1)))
            .unwrap_or_else(|| panic!("no line for fault {}:\n{dry}", i + 1));
        assert!(
            line.contains(kind.split('-').next().unwrap_or(kind)),
            "fault {}: {line}",
            i + 1
        );
    }
    assert!(
        !lines[5].contains("its own"),
        "io-limit runs for the experiment: {}",
        lines[5]
    );

    ctl_ok(&stack, &["apply", "-f", &file]);
    let started = Instant::now();
    let e = wait_for_applied(&stack).await;
    let cpu_fault_id = e
        .targets
        .iter()
        .find(|t| t.fault_id.ends_with("-0"))
        .map(|t| t.fault_id.clone())
        .expect("the cpu fault's target");
    assert!(
        pod.app_ends_within(Duration::from_secs(3)),
        "container-kill killed the running app at apply"
    );
    let mut world = World {
        lab: &lab,
        fill: &fill,
        disk: &disk,
        cg: &cg,
        pod: &mut pod,
        used0,
        agent_pid,
        cpu_fault_id,
        agent_log: stack.agents[0].proc.log.clone(),
    };
    println!(
        "all six applied {} ms after apply",
        started.elapsed().as_millis()
    );
    world.expect(0, "all six hold");
    // Every fault but the last ends on its own, in this order.
    for (i, kind) in KINDS.iter().enumerate().take(KINDS.len() - 1) {
        wait_reverted(&stack, i, Duration::from_secs(40)).await;
        println!(
            "{kind} reverted {:.1} s after apply",
            started.elapsed().as_secs_f64()
        );
        world.expect(i + 1, &format!("after {kind}'s own end"));
    }
    let e = stack
        .wait_phase(
            "compose",
            pb::ExperimentPhase::Completed,
            Duration::from_secs(40),
        )
        .await;
    stack
        .wait_all_reverted("compose", Duration::from_secs(10))
        .await;
    println!(
        "completed {:.1} s after apply: {}",
        started.elapsed().as_secs_f64(),
        e.verdict_reason
    );
    world.expect(6, "after the experiment's end");
    let reasons: Vec<&str> = stack
        .get("compose")
        .await
        .targets
        .iter()
        .map(|t| faultline_proto::convert::revert_reason_name(t.revert_reason))
        .collect();
    assert!(
        reasons.iter().all(|r| *r == "deadline"),
        "each ended at its deadline: {reasons:?}"
    );

    // Nothing active on the agent; after it stops, its journal holds nothing.
    let (_, metrics) = http_get(stack.agents[0].metrics, "/metrics").expect("agent /metrics");
    let active: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("faultline_agent_faults_active"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(active, 0.0, "active faults on the agent:\n{metrics}");
    let state = stack.agents[0].state.clone();
    let config = stack.dir.path().join("agent-node-a.toml");
    stack.agents[0]
        .proc
        .signal_and_wait("TERM", Duration::from_secs(10));
    let (ok, out) = run(
        &binary("faultline-agent"),
        &[
            "recover",
            "--state-dir",
            &state.display().to_string(),
            "--config",
            &config.display().to_string(),
        ],
    );
    assert!(ok, "recover failed: {out}");
    println!("recover after the run: {out}");
    // The sweep is host-wide (other tests' namespaces may show); the journal lines are not.
    let journal: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("sweep:") && !l.contains("nothing found"))
        .collect();
    assert!(
        journal.is_empty(),
        "the journal is empty after the run: {journal:?}"
    );
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(&lab.a.0) || l.contains(&lab.b.0) || l.contains("faultline-compose"))
        .collect();
    assert!(
        ours.is_empty(),
        "the sweep found nothing of this test: {ours:?}"
    );
}

/// Waits until every target answered ApplyFault with APPLIED.
async fn wait_for_applied(stack: &Stack) -> pb::Experiment {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let e = stack.get("compose").await;
        if e.targets.len() == 6
            && e.targets
                .iter()
                .all(|t| t.state == pb::FaultState::Applied as i32)
        {
            return e;
        }
        assert!(
            Instant::now() < until
                && e.targets
                    .iter()
                    .all(|t| t.state != pb::FaultState::Failed as i32),
            "not every fault applied: {:?}",
            e.targets
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
