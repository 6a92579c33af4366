//! Measurement (root, `--ignored`): the two ways of changing what runs on a kept TCX link,
//! timed on a veth in a netns. `BPF_LINK_UPDATE` (swap the link's program) against a program
//! array update (the dispatcher's slot, what `net::keep` does). Run with
//! `cargo test --workspace --test net_ebpf_keep_measure -- --ignored --nocapture`.

mod net_ebpf_support;

use std::time::{Duration, Instant};

use aya::maps::ProgramArray;
use aya::programs::{SchedClassifier, TcAttachType};
use faultline_agent::net::{ebpf, keep, netns};
use net_ebpf_support::*;

fn dispatcher(o: &mut aya::Ebpf) -> &mut SchedClassifier {
    o.program_mut(keep::PROGRAM)
        .expect("the dispatcher program")
        .try_into()
        .expect("a classifier")
}

fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn link_update_against_program_array_update() {
    require_root();
    let p = Pair::new();
    let iface = p.if_a.clone();
    let out = netns::run_in(Some(&p.a.path()), move || {
        let mut a = ebpf::load(keep::KEEP_OBJECT).expect("object a");
        let mut b = ebpf::load(keep::KEEP_OBJECT).expect("object b");
        for o in [&mut a, &mut b] {
            dispatcher(o).load().expect("load");
        }
        let n = 50;
        // BPF_LINK_UPDATE: the link moves between a's and b's program each time.
        let mut update = Vec::new();
        let pa = dispatcher(&mut a);
        let id = pa.attach(&iface, TcAttachType::Egress).expect("attach");
        let mut link = pa.take_link(id).expect("link");
        for i in 0..n {
            let to = if i % 2 == 0 { &mut b } else { &mut a };
            let prog = dispatcher(to);
            let t = Instant::now();
            let id = prog.attach_to_link(link).expect("link update");
            update.push(t.elapsed());
            link = prog.take_link(id).expect("link back");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(link);
        // Program array: b's program in and out of a's slot (a attached again).
        let pa = dispatcher(&mut a);
        let id = pa.attach(&iface, TcAttachType::Egress).expect("attach");
        let _link = pa.take_link(id).expect("link");
        let fd = {
            let pb = dispatcher(&mut b);
            pb.fd().expect("fd").try_clone().expect("dup")
        };
        let mut set = Vec::new();
        let mut clear = Vec::new();
        let mut slot: ProgramArray<_> =
            ProgramArray::try_from(a.map_mut("fl_keep_slot").expect("slot")).expect("array");
        for _ in 0..n {
            let t = Instant::now();
            slot.set(0, &fd, 0).expect("set");
            set.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(10));
            let t = Instant::now();
            slot.clear_index(&0).expect("clear");
            clear.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        (p50_p99(update), p50_p99(set), p50_p99(clear))
    })
    .expect("netns thread");
    println!(
        "BPF_LINK_UPDATE p50/p99 ms: {:.3} / {:.3}",
        out.0 .0, out.0 .1
    );
    println!(
        "program array set p50/p99 ms: {:.3} / {:.3}",
        out.1 .0, out.1 .1
    );
    println!(
        "program array clear p50/p99 ms: {:.3} / {:.3}",
        out.2 .0, out.2 .1
    );
}
