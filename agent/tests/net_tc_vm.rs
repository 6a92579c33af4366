//! Real netem, in a VM: this machine's kernel has no sch_netem, so `netem_in_a_vm` boots
//! Debian's stock kernel under QEMU (`-accel tcg`, tests/vm/run.sh) with the host root shared
//! read-only over 9p, and runs this very test binary inside it (`inside_the_vm`). Inside, the
//! `network` driver applies netem through rtnetlink on a veth between two namespaces and the
//! test measures: delay 100ms (RTT +100 ms), delay 50ms jitter 10ms, loss 30% over 10,000
//! packets; ingress refused on this kernel (no TCX); the kernel's dump of Faultline-made netem qdiscs equals the golden dump of the same
//! qdisc made by `tc`; revert gives the interface its original root back.

mod net_tc_support;

use std::process::Command;
use std::time::Duration;

use faultline_agent::engine::driver::{Recipe, RevertOutcome};
use faultline_agent::net::tc::encode;
use faultline_agent::net::tc::qdisc::{Rtnl, TcPort, TC_H_ROOT};
use faultline_core::fault::{
    Direction, Fault, FaultSpec, Netem, NetworkFault, Target, TrafficMatch,
};
use net_tc_support::*;

const INSIDE_ENV: &str = "FL_IN_VM";

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// A copy of this test binary and the golden data where the VM sees them. The VM mounts fresh
/// tmpfs over /tmp, /run and /var/tmp, so a checkout under one of those (a CI clone in /tmp)
/// would be invisible inside it; the VM cache directory never is. Removed on drop.
struct Staged(std::path::PathBuf);

impl Staged {
    fn new() -> Staged {
        let cache = std::env::var_os("FL_VM_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/var/cache/faultline-vm".into());
        let dir = cache.join(format!("stage-{}", std::process::id()));
        let golden = dir.join("golden");
        std::fs::create_dir_all(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        let exe = std::env::current_exe().expect("test executable");
        std::fs::copy(&exe, dir.join("test-bin")).expect("stage the test binary");
        let src = repo_root().join("agent/tests/golden");
        for entry in std::fs::read_dir(&src).expect("golden dir").flatten() {
            std::fs::copy(entry.path(), golden.join(entry.file_name())).expect("stage golden data");
        }
        Staged(dir)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn netem_in_a_vm() {
    require_root();
    let staged = Staged::new();
    let cmd = format!(
        "{INSIDE_ENV}=1 FL_GOLDEN_DIR={} {} --ignored --exact inside_the_vm --nocapture --test-threads 1",
        staged.0.join("golden").display(),
        staged.0.join("test-bin").display()
    );
    let run = repo_root().join("tests/vm/run.sh");
    let started = std::time::Instant::now();
    let out = Command::new(&run)
        .arg(&cmd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    let console = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in console.lines().filter(|l| l.contains("FL-VM-RESULT")) {
        println!("{}", l.trim());
    }
    println!("VM run took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "the netem VM test failed (exit {:?}).\n{stderr}\nconsole:\n{console}\n\
         It needs qemu-system-x86, busybox-static, kmod, cpio and Debian's linux-image-amd64 \
         (tests/vm/prepare.sh installs and unpacks them; as root: apt-get install \
         qemu-system-x86 busybox-static kmod cpio)",
        out.status.code()
    );
    assert!(
        console.contains("test result: ok. 1 passed"),
        "the inside test did not run:\n{console}"
    );
}

fn netem_spec(pair: &Pair, netem: Netem) -> FaultSpec {
    FaultSpec {
        target: Target::Netns(pair.path_a()),
        fault: Fault::Network(NetworkFault {
            interface: Some("va".into()),
            matcher: TrafficMatch::default(),
            netem: Some(netem),
            tbf: None,
        }),
    }
}

fn apply(d: &dyn faultline_agent::engine::driver::Driver, id: &str, spec: &FaultSpec) -> Recipe {
    let c = ctx(id);
    let planned = d
        .plan(&c, spec)
        .unwrap_or_else(|e| panic!("plan {id}: {e}"));
    d.apply(&c, spec, &planned)
        .unwrap_or_else(|e| panic!("apply {id}: {e}"))
}

fn result(line: String) {
    println!("FL-VM-RESULT {line}");
}

/// Each golden netem case made through Faultline's encoder dumps exactly as tc's did: made
/// afresh with tc's layout, and changed in place (one case after the other on the same qdisc)
/// with every parameter explicit, as the driver changes a class's netem.
fn dumps_match_golden(pair: &Pair) {
    let cases = netem_cases();
    let path = pair.path_a();
    let mismatches = spawn_in(&path, move || {
        let mut port = Rtnl::open().expect("rtnetlink");
        let ifindex = faultline_agent::net::tc::qdisc::ifindex(&mut port, "va")
            .expect("links")
            .expect("va");
        let handle = 0xfb02_0000;
        let dump = |port: &mut Rtnl| {
            port.qdiscs()
                .expect("dump")
                .into_iter()
                .find(|q| q.ifindex == ifindex && q.handle == handle)
                .expect("our netem")
                .options
        };
        let mut bad = Vec::new();
        for (name, n) in &cases {
            port.qdisc_replace(
                ifindex,
                TC_H_ROOT,
                handle,
                "netem",
                &encode::netem(n, 10_000),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            if dump(&mut port) != golden(name).dump {
                bad.push(format!("{name} (fresh)"));
            }
            port.qdisc_delete(ifindex, TC_H_ROOT, handle)
                .expect("delete");
        }
        for (name, n) in cases.iter().chain(cases.iter().rev()) {
            let opts = encode::netem_explicit(n, 10_000);
            port.qdisc_replace(ifindex, TC_H_ROOT, handle, "netem", &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if dump(&mut port) != golden(name).dump {
                bad.push(format!("{name} (in place)"));
            }
        }
        port.qdisc_delete(ifindex, TC_H_ROOT, handle)
            .expect("delete");
        bad
    })
    .join()
    .expect("dump thread");
    assert!(
        mismatches.is_empty(),
        "kernel dumps differ from tc's for {mismatches:?}"
    );
    result(format!(
        "golden dumps: {} netem cases dump as tc's, made afresh and changed in place",
        netem_cases().len()
    ));
}

/// `delay: 100ms` with `direction: ingress` on va is refused before any change on this kernel
/// (6.1: no TCX links, and its IFB drops what `bpf_redirect` sends it, measured: every
/// redirected packet counted in the IFB's `RX dropped`).
fn ingress_is_refused_without_tcx(pair: &Pair, d: &dyn faultline_agent::engine::driver::Driver) {
    let before = pair.tc_a("qdisc show");
    let mut spec = netem_spec(
        pair,
        Netem {
            delay_us: 100_000,
            ..Netem::default()
        },
    );
    if let Fault::Network(n) = &mut spec.fault {
        n.matcher.direction = Direction::Ingress;
    }
    let e = d
        .plan(&ctx("ingress-delay"), &spec)
        .expect_err("ingress without TCX");
    result(format!("ingress delay on this kernel: refused: {e}"));
    assert!(
        e.to_string()
            .starts_with("match.direction: ingress needs kernel 6.6 or newer"),
        "{e}"
    );
    let links = sh(&format!("ip -n {} -o link show", pair.a));
    assert!(!links.contains("flifb"), "{links}");
    assert_eq!(pair.tc_a("qdisc show"), before, "changed before refusing");
}

#[test]
#[ignore = "runs inside the VM started by netem_in_a_vm"]
fn inside_the_vm() {
    assert!(
        std::env::var(INSIDE_ENV).is_ok(),
        "runs inside the netem VM only (netem_in_a_vm starts it)"
    );
    let pair = Pair::new("vm");
    let d = driver();
    let before = pair.tc_a("qdisc show dev va");
    dumps_match_golden(&pair);

    // delay 100ms: the RTT grows by 100 ms (the reply leaves vb undelayed).
    let echo = Echo::start(&pair, 7000);
    let base_rtts = udp_rtts(&pair, 7000, 30, Duration::from_millis(20));
    let base = median(&base_rtts);
    let base_min = *base_rtts.iter().min().expect("base samples");
    let ms = |m: u64| m * 1000;
    let r = apply(
        d.as_ref(),
        "delay",
        &netem_spec(
            &pair,
            Netem {
                delay_us: ms(100),
                ..Netem::default()
            },
        ),
    );
    let qdiscs = pair.tc_a("qdisc show dev va");
    assert!(
        qdiscs.contains("qdisc netem fb02: parent fa17:2 limit 10000 delay 100ms"),
        "{qdiscs}"
    );
    let rtts = udp_rtts(&pair, 7000, 30, Duration::from_millis(20));
    let to_ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The VM (TCG) only ever adds time: the least RTTs measure netem's delay, the medians
    // what an application sees.
    let added_min = to_ms(*rtts.iter().min().expect("samples")) - to_ms(base_min);
    let added_median = to_ms(median(&rtts)) - to_ms(base);
    result(format!(
        "delay 100ms: {} probes, RTT median {:?} (base {base:?}), added {added_min:.2} ms (least RTTs) / {added_median:.2} ms (medians)",
        rtts.len(),
        median(&rtts)
    ));
    assert_eq!(rtts.len(), 30, "probes lost");
    assert!(
        (95.0..=105.0).contains(&added_min),
        "added {added_min:.2} ms, want 100 +-5"
    );
    assert!(
        (90.0..=110.0).contains(&added_median),
        "median added {added_median:.2} ms, want 100 +-10%"
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    ingress_is_refused_without_tcx(&pair, d.as_ref());

    // delay 50ms jitter 10ms (uniform): mean +50 ms, every sample within 40..60 ms (+ base).
    let r = apply(
        d.as_ref(),
        "jitter",
        &netem_spec(
            &pair,
            Netem {
                delay_us: ms(50),
                jitter_us: ms(10),
                ..Netem::default()
            },
        ),
    );
    let rtts = udp_rtts(&pair, 7000, 100, Duration::from_millis(5));
    // Subtract the VM's mean round trip (its noise is skewed; means cancel it on average).
    let base_mean = mean_ms(&base_rtts);
    let mut added: Vec<f64> = rtts.iter().map(|r| to_ms(*r) - base_mean).collect();
    added.sort_by(f64::total_cmp);
    let pct = |p: usize| added[(added.len() - 1) * p / 100];
    let mean = mean_ms(&rtts) - base_mean;
    // What the VM's timers add to a netem delay, measured above on the fixed 100 ms delay.
    let timer_lag = (added_median - 100.0).max(0.0);
    let min = to_ms(*rtts.iter().min().expect("samples"));
    result(format!(
        "delay 50ms jitter 10ms: {} probes, added delay mean {mean:.2} ms ({:.2} ms less the VM's {timer_lag:.2} ms timer lag), p10 {:.2} ms, p90 {:.2} ms, least RTT {min:.2} ms",
        rtts.len(),
        mean - timer_lag,
        pct(10),
        pct(90)
    ));
    assert!(rtts.len() >= 95, "probes lost: {}", rtts.len());
    assert!(
        (45.0..=55.0).contains(&(mean - timer_lag)),
        "mean added {mean:.2} ms less {timer_lag:.2} ms timer lag, want 50 +-5"
    );
    // netem never delays less than delay - jitter; the VM's own hiccups only add.
    assert!(min >= 39.5, "an RTT of {min:.2} ms is below 50 - 10 ms");
    // Uniform over 40..60 ms: p10..p90 spans 16 ms.
    let spread = pct(90) - pct(10);
    assert!(
        (10.0..=26.0).contains(&spread),
        "p10..p90 spans {spread:.2} ms, want about 16"
    );
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    drop(echo);

    // loss 30% over 10,000 datagrams.
    let r = apply(
        d.as_ref(),
        "loss",
        &netem_spec(
            &pair,
            Netem {
                loss_pct: 30.0,
                ..Netem::default()
            },
        ),
    );
    let sent = 10_000u32;
    let socket_drops = udp_rcvbuf_errors(&pair.b);
    let got = udp_delivered(&pair, 7001, sent);
    assert_eq!(
        udp_rcvbuf_errors(&pair.b),
        socket_drops,
        "the receiver's socket dropped datagrams"
    );
    let loss = 100.0 * f64::from(sent - got) / f64::from(sent);
    result(format!(
        "loss 30%: {got} of {sent} datagrams arrived, measured loss {loss:.2}%"
    ));
    assert!((27.0..=33.0).contains(&loss), "measured loss {loss:.2}%");
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);

    let after = pair.tc_a("qdisc show dev va");
    result(format!("after revert: {}", after.trim()));
    assert_eq!(after, before, "the interface's root qdisc was not restored");
    let all = pair.tc_a("qdisc show");
    assert!(!all.contains("clsact"), "the steering clsact stayed: {all}");
}
