//! The sweep against the real kernel (root): a stray `fl_drop_` program that no live process
//! holds (simulated with a link pinned to a private bpffs, which the agent itself never does)
//! is found by name and disarmed, and traffic flows again.

mod net_ebpf_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use faultline_agent::engine::driver::Driver;
use faultline_agent::net::rules::{self, ProtectedTraffic, RuleSpec};
use faultline_agent::net::{ebpf, netns, KernelLease};
use faultline_core::fault::{Protocol, TrafficMatch};
use net_ebpf_support::*;

/// A private bpffs mount, unmounted (with the pins in it) on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn new() -> Bpffs {
        let dir = std::env::temp_dir().join(format!("fl-t-bpffs-{:06x}", rand::random::<u32>()));
        std::fs::create_dir(&dir).expect("mkdir bpffs");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            panic!("cannot mount a bpf filesystem (needs root and a kernel with bpffs)");
        }
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn sweep_disarms_a_stray_program_nobody_holds() {
    require_root();
    let p = Pair::new();
    let fs = Bpffs::new();
    let rx = udp_in(&p.b.path(), &format!("{B}:5020"));
    let tx = udp_in(&p.a.path(), &format!("{A}:0"));

    // A stray: a 100% drop attached to a's interface, its link pinned, nothing else kept.
    let m = TrafficMatch {
        ports: vec![5020],
        protocol: Protocol::Udp,
        ..TrafficMatch::default()
    };
    let r = rules::encode(
        &RuleSpec {
            matcher: &m,
            peers: &[],
            probability: 1.0,
        },
        &ProtectedTraffic::default(),
    )
    .expect("encode");
    let pin = fs.0.join("stray");
    let iface = p.if_a.clone();
    let pin2 = pin.clone();
    let stray_id = netns::run_in(Some(&p.a.path()), move || {
        let mut obj = ebpf::load(ebpf::DROP_OBJECT).expect("load");
        let deadline =
            ebpf::monotonic_ns(SystemTime::now() + Duration::from_secs(120)).expect("clock");
        ebpf::write_rules(&mut obj, &r, deadline).expect("rules");
        let prog: &mut SchedClassifier = obj
            .program_mut("fl_drop_tc_eg")
            .expect("program")
            .try_into()
            .expect("classifier");
        prog.load().expect("load program");
        let id = prog
            .attach_with_options(
                &iface,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .expect("attach");
        let link: FdLink = prog
            .take_link(id)
            .expect("take link")
            .try_into()
            .expect("fd link");
        link.pin(&pin2).expect("pin link");
        prog.info().expect("info").id()
    })
    .expect("netns");
    assert_eq!(
        measure(&tx, &rx, &format!("{B}:5020"), 500).received,
        0,
        "the stray drops while nobody holds it"
    );

    let d = driver(&[], &KernelLease::new());
    let lines = d.sweep(&[]);
    println!("sweep: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("disarmed stray eBPF program fl_drop_tc_eg")
                && l.contains(&format!("(id {stray_id})"))),
        "sweep lines: {lines:?}"
    );
    assert_eq!(
        measure(&tx, &rx, &format!("{B}:5020"), 1_000).received,
        1_000,
        "the disarmed stray passes everything"
    );
    std::fs::remove_file(&pin).expect("unpin");
}
