//! container-kill on the real kernel (root), in kubelet-shaped pods (systemd and cgroupfs
//! drivers; cgroup2 and v1 `pids`, `cpu`): the named container's init process is SIGKILLed
//! and gone, while the pod's other container and its pause process keep running; the sandbox
//! is refused; `interval` kills each restart of the container again (the test plays the
//! runtime) until the revert or the deadline, after which a restarted container lives; and a
//! SIGKILL of the agent in the middle of an interval fault leaves nothing that keeps killing.

mod host_support;
mod kube_kill_support;
mod kube_pod_support;
mod net_ebpf_support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_agent::engine::driver::{Driver, DriverError, FaultCtx, Health, RevertOutcome};
use faultline_agent::host::{self, Host};
use host_support::standalone::AgentRun;
use host_support::{counter, require_root, unique};
use kube_kill_support::*;
use kube_pod_support::CgroupDriver;

const SIGKILL: i32 = 9;

fn driver(pod: &KillPod) -> Arc<dyn Driver> {
    let cfg = pod.host_config();
    host::kill::driver(Arc::new(Host::new(&cfg)), cfg.container_logs_dir.clone())
}

fn ctx(secs: f64) -> FaultCtx {
    FaultCtx {
        fault_id: unique("ck"),
        deadline: SystemTime::now() + Duration::from_secs_f64(secs),
    }
}

fn refusal(d: &dyn Driver, spec: &faultline_core::fault::FaultSpec) -> String {
    match d.plan(&ctx(30.0), spec) {
        Err(DriverError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn health(d: &dyn Driver, r: &faultline_agent::engine::driver::Recipe) -> Health {
    d.health(r)
}

/// Once: the app's init process is SIGKILLed and gone; sidecar and pause untouched.
fn once(driver_kind: CgroupDriver) {
    require_root();
    let mut pod = KillPod::new(driver_kind);
    let d = driver(&pod);
    let app = pod.container("app").pid();
    let app_path = pod.container("app").path.clone();
    let sidecar = pod.container("sidecar").pid();
    println!(
        "{driver_kind:?}: pod {} with pause {}, app {app} in {app_path}, sidecar {sidecar}",
        pod.uid,
        pod.pause.pid(),
    );
    let c = ctx(30.0);
    let spec = container_kill(pod.pod_target(), &["app"], None);
    let planned = d.plan(&c, &spec).expect("plan");
    assert_eq!(
        planned.data["planned"][0]["init"]["pid"], app,
        "{}",
        planned.data
    );
    let applied = d.apply(&c, &spec, &planned).expect("apply");
    assert_eq!(
        pod.container("app").ended_by(Duration::from_secs(2)),
        Some(SIGKILL),
        "the app container's init process is SIGKILLed"
    );
    assert!(
        pod.container("sidecar").running(),
        "the neighbour container keeps running"
    );
    assert!(pod.pause.running(), "the pause process keeps running");
    let gone = applied.data["killed"][0]["gone_after_us"]
        .as_u64()
        .expect("the kill's latency was measured");
    println!("{driver_kind:?}: SIGKILL to gone: {gone} us");
    assert!(gone < 1_000_000, "gone within a second: {gone} us");
    assert_eq!(counter(&health(d.as_ref(), &applied), "kills"), Some(1));
    // Applying again is the same fault: no second kill (the sidecar is not touched either).
    d.apply(&c, &spec, &applied).expect("apply again");
    assert!(pod.container("sidecar").running());
    assert_eq!(
        d.revert(&applied).expect("revert"),
        RevertOutcome::AlreadyGone,
        "a one-shot kill has nothing to revert"
    );
    assert_eq!(
        d.revert(&applied).expect("revert again"),
        RevertOutcome::AlreadyGone
    );

    // The container by its ID: the sidecar this time.
    let sidecar_id = pod.container("sidecar").id.clone();
    let by_id = container_kill(pod.container_target(&sidecar_id), &[], None);
    let c = ctx(30.0);
    let r = d.plan(&c, &by_id).expect("plan by id");
    d.apply(&c, &by_id, &r).expect("apply by id");
    assert_eq!(
        pod.container("sidecar").ended_by(Duration::from_secs(2)),
        Some(SIGKILL)
    );
    assert!(pod.pause.running(), "the pause process keeps running");
}

#[test]
fn systemd_driver_kill_once_takes_only_the_named_container() {
    once(CgroupDriver::Systemd);
}

#[test]
fn cgroupfs_driver_kill_once_takes_only_the_named_container() {
    once(CgroupDriver::Cgroupfs);
}

#[test]
fn the_sandbox_and_unknown_containers_are_refused() {
    require_root();
    let mut pod = KillPod::new(CgroupDriver::Systemd);
    let d = driver(&pod);
    let pause = pod.pause_id();
    let m = refusal(
        d.as_ref(),
        &container_kill(pod.container_target(&pause), &[], None),
    );
    assert!(
        m.starts_with(&format!(
            "target.container: container {pause} of pod shop/checkout-1"
        )),
        "{m}"
    );
    assert!(
        m.contains("it is the pod's sandbox (pause) container"),
        "{m}"
    );
    let m = refusal(
        d.as_ref(),
        &container_kill(pod.pod_target(), &["app", "db"], None),
    );
    assert!(
        m.starts_with("containers[1]: pod shop/checkout-1")
            && m.contains("has no running container db"),
        "{m}"
    );
    // A pod of a protected namespace is refused by the agent's own rule.
    let mut cfg = pod.host_config();
    cfg.protected.namespaces = vec![NAMESPACE.to_string()];
    let guarded = host::kill::driver(Arc::new(Host::new(&cfg)), cfg.container_logs_dir.clone());
    let m = refusal(
        guarded.as_ref(),
        &container_kill(pod.pod_target(), &["app"], None),
    );
    assert!(
        m.contains(
            "its pod namespace shop is protected (agent config limits.protected_namespaces)"
        ),
        "{m}"
    );
    // Nothing was killed by the refused plans.
    assert!(pod.pause.running() && pod.container("app").running());
    assert!(pod.container("sidecar").running());
}

/// Waits for the app to be SIGKILLed (up to `limit`), then restarts it as a runtime would;
/// returns when the kill was seen.
fn killed_then_restarted(pod: &mut KillPod, limit: Duration) -> Instant {
    let sig = pod.container("app").ended_by(limit);
    let at = Instant::now();
    assert_eq!(sig, Some(SIGKILL), "the app was SIGKILLed within {limit:?}");
    pod.start("app");
    at
}

/// A restarted app that nobody kills for `quiet`.
fn stays_alive(pod: &mut KillPod, quiet: Duration, what: &str) {
    pod.start("app");
    assert_eq!(
        pod.container("app").ended_by(quiet),
        None,
        "{what}: the restarted app stays alive for {quiet:?}"
    );
}

#[test]
fn interval_kills_every_restart_until_revert_and_deadline() {
    require_root();
    let mut pod = KillPod::new(CgroupDriver::Cgroupfs);
    let d = driver(&pod);
    let interval = Duration::from_secs(1);
    let c = ctx(60.0);
    let spec = container_kill(pod.pod_target(), &["app"], Some(interval));
    let r = d.plan(&c, &spec).expect("plan");
    let applied = d.apply(&c, &spec, &r).expect("apply");
    let mut kills = vec![killed_then_restarted(&mut pod, Duration::from_secs(2))];
    for _ in 0..3 {
        kills.push(killed_then_restarted(&mut pod, Duration::from_secs(3)));
    }
    let gaps: Vec<u128> = kills
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!(
        "interval 1s: gaps between kills {gaps:?} ms; {} dead apps",
        pod.dead.len()
    );
    for g in &gaps {
        assert!((700..=1600).contains(g), "kills about 1 s apart: {gaps:?}");
    }
    assert!(pod.container("sidecar").running() && pod.pause.running());
    let h = health(d.as_ref(), &applied);
    assert!(counter(&h, "kills").unwrap_or(0) >= 4, "{h:?}");
    assert_eq!(d.revert(&applied).expect("revert"), RevertOutcome::Reverted);
    stays_alive(&mut pod, Duration::from_millis(2500), "after the revert");

    // The deadline stops it by itself, without a revert.
    let c = ctx(2.5);
    let r = d.plan(&c, &spec).expect("plan");
    let started = Instant::now();
    let applied = d.apply(&c, &spec, &r).expect("apply");
    killed_then_restarted(&mut pod, Duration::from_secs(2));
    while started.elapsed() < Duration::from_millis(2600) {
        if pod
            .container("app")
            .ended_by(Duration::from_millis(50))
            .is_some()
        {
            pod.start("app");
        }
    }
    stays_alive(&mut pod, Duration::from_millis(2500), "after the deadline");
    assert_eq!(d.revert(&applied).expect("revert"), RevertOutcome::Reverted);
    assert!(pod.container("sidecar").running() && pod.pause.running());
}

#[test]
fn an_agent_sigkill_mid_fault_leaves_nothing_that_keeps_killing() {
    require_root();
    let mut pod = KillPod::new(CgroupDriver::Systemd);
    let work = tempfile::tempdir().expect("tempdir");
    let config = pod.agent_config(work.path());
    let faults = work.path().join("faults.yaml");
    std::fs::write(
        &faults,
        format!(
            "kind: container-kill\ncontainers: [app]\ninterval: 1s\ntarget: {{pod: {}, podNamespace: {NAMESPACE}, podName: {POD}}}\n",
            pod.uid
        ),
    )
    .expect("write the fault file");
    let state = work.path().join("state");
    let config_arg = config.display().to_string();
    let mut agent = AgentRun::start(&faults, "60s", &state, &["--config", &config_arg], None);
    agent.applied("container-kill");
    killed_then_restarted(&mut pod, Duration::from_secs(2));
    killed_then_restarted(&mut pod, Duration::from_secs(3));
    agent.child.kill().expect("SIGKILL the agent");
    let _ = agent.child.wait();
    let dead = Instant::now();
    stays_alive(
        &mut pod,
        Duration::from_secs(3),
        "after the agent's SIGKILL",
    );
    println!(
        "agent SIGKILLed; the app restarted after it lived {:?} unharmed",
        dead.elapsed()
    );
    let (code, out) = host_support::standalone::recover(&state, &["--config", &config_arg]);
    println!("recover: exit {code:?}: {out}");
    assert_eq!(code, Some(0), "{out}");
    stays_alive(&mut pod, Duration::from_millis(1500), "after recover");
    assert!(pod.container("sidecar").running() && pod.pause.running());
}
