//! Golden-byte tests of the qdisc encoders: for each case of agent/tests/golden/cases.txt, the
//! `TCA_OPTIONS` bytes Faultline encodes equal, byte for byte, the bytes iproute2's `tc` sent
//! for the same parameters (recorded by agent/tests/golden/record.sh; netem inside the VM).
//! netem's only difference is deliberate and checked separately: Faultline adds
//! `TCA_NETEM_LATENCY64`/`TCA_NETEM_JITTER64` (nanoseconds), which tc 6.1 does not send.

mod net_tc_support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use faultline_agent::net::tc::encode::{self, attr, HtbClass, NETEM_QOPT_LEN};
use faultline_agent::net::tc::tree::tbf_options;
use faultline_agent::net::tc::{class_options, dist};
use faultline_core::fault::{Distribution, Tbf};
use net_tc_support::{golden, netem_cases, Golden};

/// Faultline's netem bytes without the 64-bit delay attributes, and those attributes.
fn split_netem_64(bytes: &[u8]) -> (Vec<u8>, BTreeMap<u16, i64>) {
    let mut rest = bytes[..NETEM_QOPT_LEN].to_vec();
    let mut wide = BTreeMap::new();
    for (kind, payload) in encode::attrs(&bytes[NETEM_QOPT_LEN..]) {
        if kind == attr::NETEM_LATENCY64 || kind == attr::NETEM_JITTER64 {
            let v = i64::from_ne_bytes(payload.try_into().expect("8-byte attribute"));
            wide.insert(kind, v);
        } else {
            encode::put_attr(&mut rest, kind, payload);
        }
    }
    (rest, wide)
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i}: {:#04x} vs {:#04x}",
            a[i], b[i]
        ),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

fn assert_same(name: &str, g: &Golden, ours: &[u8]) {
    assert!(
        ours == g.sent.as_slice(),
        "{name} ({}): Faultline's bytes differ from tc's; {}",
        g.command,
        first_difference(ours, &g.sent)
    );
}

#[test]
fn htb_and_tbf_encoders_match_tc_byte_for_byte() {
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("htb_root", "htb", encode::htb_root(1)),
        (
            "htb_class_default",
            "htb",
            encode::htb_class(&class_options()),
        ),
        (
            "htb_class_10mbit",
            "htb",
            encode::htb_class(&HtbClass {
                rate: 1_250_000,
                ceil: 2_500_000,
                burst: 15_000,
                cburst: 30_000,
                quantum: 3_000,
                prio: 1,
            }),
        ),
        (
            "tbf_10mbit",
            "tbf",
            encode::tbf(&tbf_options(&Tbf {
                rate_bps: 10_000_000,
                ..Tbf::default()
            })),
        ),
        (
            "tbf_40gbit",
            "tbf",
            encode::tbf(&tbf_options(&Tbf {
                rate_bps: 40_000_000_000,
                ..Tbf::default()
            })),
        ),
    ];
    for (name, kind, ours) in cases {
        let g = golden(name);
        assert_eq!(g.kind, kind, "{name}");
        assert!(
            !g.dump.is_empty(),
            "{name}: the kernel's dump was recorded too"
        );
        assert_same(name, &g, &ours);
    }
}

#[test]
fn netem_encoder_matches_tc_byte_for_byte() {
    let cases = netem_cases();
    for (name, n) in cases {
        let g = golden(name);
        assert_eq!(g.kind, "netem", "{name}");
        let ours = encode::netem(&n, 10_000);
        let (rest, wide) = split_netem_64(&ours);
        assert_same(name, &g, &rest);
        let mut want = BTreeMap::new();
        if n.delay_us > 0 {
            want.insert(attr::NETEM_LATENCY64, n.delay_us as i64 * 1000);
        }
        if n.jitter_us > 0 {
            want.insert(attr::NETEM_JITTER64, n.jitter_us as i64 * 1000);
        }
        assert_eq!(wide, want, "{name}: 64-bit delay attributes (ns)");
        // The kernel's dump carries the same 64-bit values.
        let dumped: BTreeMap<u16, i64> = encode::attrs(&g.dump[NETEM_QOPT_LEN..])
            .into_iter()
            .filter(|(k, _)| want.contains_key(k))
            .map(|(k, p)| (k, i64::from_ne_bytes(p.try_into().expect("8 bytes"))))
            .collect();
        assert_eq!(dumped, want, "{name}: the VM kernel dumped these delays");
    }
}

/// iproute2's directory of `*.dist` files on this machine.
fn tc_lib_dir() -> PathBuf {
    let candidates = [
        std::env::var("TC_LIB_DIR").unwrap_or_default(),
        "/usr/lib/x86_64-linux-gnu/tc".into(),
        "/usr/lib/aarch64-linux-gnu/tc".into(),
        "/usr/lib64/tc".into(),
        "/usr/lib/tc".into(),
    ];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.join("normal.dist").exists())
        .unwrap_or_else(|| {
            panic!("iproute2's netem distribution tables (normal.dist) are missing; apt-get install iproute2")
        })
}

#[test]
fn generated_distribution_tables_equal_iproute2s_files() {
    let dir = tc_lib_dir();
    for d in [
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::ParetoNormal,
    ] {
        let path = dir.join(format!("{}.dist", d.as_str()));
        let text = std::fs::read_to_string(&path).expect("dist file");
        let file: Vec<i16> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split_whitespace())
            .map(|v| v.parse().expect("number"))
            .collect();
        let ours = dist::table(d).expect("table");
        assert_eq!(ours.len(), file.len(), "{}", path.display());
        let diff = ours.iter().zip(&file).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{}: {diff} values differ", path.display());
    }
}
