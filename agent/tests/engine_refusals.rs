//! Faults the engine must refuse before anything changes: bad wire specs (the error names the
//! field path and the allowed range) and the agent's local limits (the error names the limit
//! and its value). In every case the drivers were asked nothing and the journal is empty.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use faultline_agent::engine::Limits;
use faultline_agent::FaultManager;
use faultline_core::fault::FaultKind;
use faultline_proto::pb;
use faultline_proto::pb::fault_spec::Kind;

fn wire(id: &str, kind: Option<Kind>) -> pb::ApplyFault {
    pb::ApplyFault {
        fault_id: id.into(),
        experiment_id: "exp-1".into(),
        spec: Some(pb::FaultSpec { target: None, kind }),
        deadline_unix_ms: now_ms() + 60_000,
        remaining_ms: 60_000,
        telemetry_sequence: 0,
    }
}

async fn refused(s: &Setup, req: pb::ApplyFault) -> String {
    let st = s.engine.apply(req).await;
    assert_eq!(state(&st), pb::FaultState::Failed, "{st:?}");
    assert!(
        s.changes().is_empty(),
        "no driver was asked to plan or apply: {:?}",
        s.changes()
    );
    st.error
}

#[tokio::test(start_paused = true)]
async fn bad_specs_name_the_field_and_change_nothing() {
    let s = Setup::new(Limits::default());
    let cases: Vec<(pb::ApplyFault, &str)> = vec![
        (
            wire(
                "f-1",
                Some(Kind::Cpu(pb::CpuFault {
                    load_percent: 150,
                    workers: 1,
                })),
            ),
            "spec.load: 150 is outside 1..=100",
        ),
        (
            wire(
                "f-2",
                Some(Kind::Cpu(pb::CpuFault {
                    load_percent: 0,
                    workers: 1,
                })),
            ),
            "spec.load: 0 is outside 1..=100",
        ),
        (
            wire(
                "f-3",
                Some(Kind::Process(pb::ProcessFault {
                    action: Some(pb::process_fault::Action::KillSignal("SIGFOO".into())),
                    selector: Some(pb::process_fault::Selector::Pid(4242)),
                    count: 0,
                })),
            ),
            "spec.signal: \"SIGFOO\" is not a signal",
        ),
        (
            wire(
                "f-4",
                Some(Kind::Memory(pb::MemoryFault {
                    amount: Some(pb::memory_fault::Amount::Percent(-5.0)),
                })),
            ),
            "spec.percent: -5 is outside",
        ),
        (
            wire(
                "f-5",
                Some(Kind::Memory(pb::MemoryFault {
                    amount: Some(pb::memory_fault::Amount::SizeBytes(0)),
                })),
            ),
            "spec.size: 0 bytes is outside 1B..=1TiB",
        ),
        (
            wire(
                "f-6",
                Some(Kind::Io(pb::IoFault {
                    path: String::new(),
                    workers: 1,
                    size_bytes: 1 << 20,
                    rate_bytes_per_second: 0,
                })),
            ),
            "spec.path: \"\" must be an absolute directory path",
        ),
        (wire("f-7", None), "spec.kind: is required"),
        (
            pb::ApplyFault {
                spec: None,
                ..cpu("f-8", 60)
            },
            "spec: is required",
        ),
        (
            cpu("Bad_Id", 60),
            "fault_id: \"Bad_Id\" must be 1..=64 characters of a-z, 0-9 and '-'",
        ),
        (
            pb::ApplyFault {
                deadline_unix_ms: now_ms() - 1000,
                remaining_ms: 0,
                ..cpu("f-9", 60)
            },
            "remaining_ms: 0 leaves the fault no time",
        ),
    ];
    for (req, want) in cases {
        let id = req.fault_id.clone();
        let err = refused(&s, req).await;
        assert!(err.starts_with(want), "{id}: got {err:?}, want {want:?}");
    }
    assert!(s.engine.faults().is_empty(), "nothing journaled");
    assert!(s.world.artifacts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn local_limits_name_the_limit_and_change_nothing() {
    let limits = Limits {
        allowed_kinds: [FaultKind::Cpu, FaultKind::Io].into_iter().collect(),
        max_concurrent_faults: 2,
        max_duration: Duration::from_secs(3600),
        io_paths: vec!["/var/tmp".into()],
    };
    let s = Setup::new(limits);
    let err = refused(&s, apply("f-1", "{kind: memory, size: 1Mi}", 60)).await;
    assert_eq!(
        err,
        "fault kind memory is not in the agent's allowed_kinds [cpu, io] (agent config)"
    );
    let err = refused(&s, cpu("f-2", 2 * 3600)).await;
    assert_eq!(
        err,
        "duration 2h exceeds the agent's max_duration 1h (agent config)"
    );
    let err = refused(
        &s,
        apply("f-3", "{kind: io, path: /tmp, workers: 1, size: 1Mi}", 60),
    )
    .await;
    assert_eq!(
        err,
        "spec.path: /tmp is not one of the agent's io_paths [/var/tmp] (agent config)"
    );
    assert!(s
        .engine
        .capabilities()
        .iter()
        .all(|k| k == "cpu" || k == "io"));

    // Two faults are allowed; the third is refused without touching anything.
    for id in ["f-4", "f-5"] {
        let st = s.engine.apply(cpu(id, 60)).await;
        assert_eq!(state(&st), pb::FaultState::Applied, "{}", st.error);
    }
    let before = s.world.calls().len();
    let st = s.engine.apply(cpu("f-6", 60)).await;
    assert_eq!(state(&st), pb::FaultState::Failed);
    assert_eq!(
        st.error,
        "2 faults are active, the agent's max_concurrent_faults is 2 (agent config)"
    );
    assert_eq!(
        s.world.calls().len(),
        before,
        "the drivers saw nothing of f-6"
    );
    assert_eq!(s.engine.faults().len(), 2);
    // Re-applying a held fault at the limit is not a new fault.
    let again = s.engine.apply(cpu("f-5", 60)).await;
    assert_eq!(state(&again), pb::FaultState::Applied);
}

#[tokio::test(start_paused = true)]
async fn bad_disk_fault_specs_name_the_field_and_change_nothing() {
    let s = Setup::new(Limits::default());
    let fill = |id: &str, amount, keep: Option<u64>| {
        wire(
            id,
            Some(Kind::DiskFill(pb::DiskFillFault {
                path: "/var/tmp".into(),
                amount,
                keep_free_bytes: keep,
            })),
        )
    };
    let limit = |id: &str, device: &str, write_bps: u64, read_iops: u64| {
        let mut w = wire(
            id,
            Some(Kind::IoLimit(pb::IoLimitFault {
                device: device.into(),
                write_bytes_per_second: write_bps,
                read_iops,
                ..Default::default()
            })),
        );
        if let Some(spec) = w.spec.as_mut() {
            spec.target = Some(pb::Target {
                target: Some(pb::target::Target::CgroupPath("/x".into())),
            });
        }
        w
    };
    use pb::disk_fill_fault::Amount;
    let cases: Vec<(pb::ApplyFault, &str)> = vec![
        (
            fill("d-1", Some(Amount::Percent(0)), None),
            "spec.percent: 0 is outside 1..=99",
        ),
        (
            fill("d-2", Some(Amount::Percent(100)), None),
            "spec.percent: 100 is outside 1..=99",
        ),
        (
            fill("d-3", None, None),
            "spec: disk-fill needs percent (1..=99) or size_bytes",
        ),
        (
            fill("d-4", Some(Amount::SizeBytes(0)), Some(0)),
            "spec.size: 0 bytes is outside 1B..=1PiB",
        ),
        (
            limit("d-5", "/dev/sda", 0, 0),
            "spec: io-limit needs at least one of readBytesPerSecond, writeBytesPerSecond, \
             readIops, writeIops",
        ),
        (
            limit("d-6", "/dev/sda", 100, 0),
            "spec.writeBytesPerSecond: 100 is outside 4Ki..=1Ti bytes per second",
        ),
        (
            limit("d-7", "sda", 0, 5),
            "spec.device: \"sda\" must be an absolute device or file path",
        ),
        (
            wire(
                "d-8",
                Some(Kind::IoLimit(pb::IoLimitFault {
                    device: "/dev/sda".into(),
                    read_iops: 5,
                    ..Default::default()
                })),
            ),
            "spec.target: io-limit throttles a cgroup",
        ),
    ];
    for (req, want) in cases {
        let id = req.fault_id.clone();
        let err = refused(&s, req).await;
        assert!(err.starts_with(want), "{id}: got {err:?}, want {want:?}");
    }
    assert!(s.engine.faults().is_empty(), "nothing journaled");
}

// Kill faults (issue 13).
#[tokio::test(start_paused = true)]
async fn bad_kill_fault_specs_name_the_field_and_change_nothing() {
    let s = Setup::new(Limits::default());
    let aimed = |id: &str, kind: Kind, target: Option<pb::target::Target>| {
        let mut w = wire(id, Some(kind));
        if let Some(spec) = w.spec.as_mut() {
            spec.target = target.map(|t| pb::Target { target: Some(t) });
        }
        w
    };
    let pod = || {
        Some(pb::target::Target::Container(pb::ContainerTarget {
            pod_uid: "1f0e-22".into(),
            ..Default::default()
        }))
    };
    let kill = |containers: &[&str], interval_ms: u64| {
        Kind::ContainerKill(pb::ContainerKillFault {
            containers: containers.iter().map(|c| c.to_string()).collect(),
            interval_ms,
        })
    };
    let pod_kill = Kind::PodKill(pb::PodKillFault {
        grace_period_seconds: Some(0),
        interval_ms: 0,
    });
    let cases: Vec<(pb::ApplyFault, &str)> = vec![
        (
            aimed("k-1", pod_kill.clone(), None),
            "spec.kind: pod-kill is carried out by the coordinator through the Kubernetes API",
        ),
        (
            aimed("k-2", pod_kill, pod()),
            "spec.kind: pod-kill is carried out by the coordinator through the Kubernetes API",
        ),
        (
            aimed("k-3", kill(&[], 0), pod()),
            "spec.containers: is required for a pod target: the names of the containers to kill (1..=16)",
        ),
        (
            aimed("k-4", kill(&["app"], 500), pod()),
            "spec.interval: 500ms is outside 1s..=24h",
        ),
        (
            aimed("k-5", kill(&["app"], 0), None),
            "spec.target: container-kill needs a pod or container target",
        ),
        (
            aimed(
                "k-6",
                kill(&["app"], 0),
                Some(pb::target::Target::CgroupPath("/kubepods".into())),
            ),
            "spec.target: container-kill needs a pod or container target",
        ),
        (
            aimed("k-7", kill(&["App_1"], 0), pod()),
            "spec.containers[0]: \"App_1\" is not a container name",
        ),
    ];
    for (req, want) in cases {
        let id = req.fault_id.clone();
        let err = refused(&s, req).await;
        assert!(err.starts_with(want), "{id}: got {err:?}, want {want:?}");
    }
    assert!(s.engine.faults().is_empty(), "nothing journaled");
}
