//! Golden data of agent/tests/golden/ and the netem cases it was recorded for.

use std::path::{Path, PathBuf};

use faultline_core::fault::{Distribution, Netem};

fn netem(f: impl FnOnce(&mut Netem)) -> Netem {
    let mut n = Netem::default();
    f(&mut n);
    n
}

/// The netem cases of agent/tests/golden/cases.txt as Faultline specs (limit 10,000).
pub fn netem_cases() -> Vec<(&'static str, Netem)> {
    let ms = 1000;
    vec![
        ("netem_delay", netem(|n| n.delay_us = 100 * ms)),
        (
            "netem_delay_jitter",
            netem(|n| {
                n.delay_us = 50 * ms;
                n.jitter_us = 10 * ms;
            }),
        ),
        (
            "netem_normal",
            netem(|n| {
                n.delay_us = 50 * ms;
                n.jitter_us = 10 * ms;
                n.correlation_pct = 25.0;
                n.distribution = Some(Distribution::Normal);
            }),
        ),
        (
            "netem_pareto",
            netem(|n| {
                n.delay_us = 20 * ms;
                n.jitter_us = 5 * ms;
                n.distribution = Some(Distribution::Pareto);
            }),
        ),
        (
            "netem_paretonormal",
            netem(|n| {
                n.delay_us = 20 * ms;
                n.jitter_us = 5 * ms;
                n.distribution = Some(Distribution::ParetoNormal);
            }),
        ),
        ("netem_loss", netem(|n| n.loss_pct = 30.0)),
        (
            "netem_loss_corr",
            netem(|n| {
                n.loss_pct = 30.0;
                n.loss_correlation_pct = 25.0;
            }),
        ),
        (
            "netem_dup_corrupt",
            netem(|n| {
                n.duplicate_pct = 5.0;
                n.corrupt_pct = 1.0;
            }),
        ),
        (
            "netem_reorder",
            netem(|n| {
                n.delay_us = 10 * ms;
                n.reorder_pct = 25.0;
                n.reorder_gap = 5;
            }),
        ),
        ("netem_rate", netem(|n| n.rate_bps = 1_000_000)),
        ("netem_rate64", netem(|n| n.rate_bps = 40_000_000_000)),
        (
            "netem_all",
            netem(|n| {
                n.delay_us = 100 * ms;
                n.jitter_us = 10 * ms;
                n.correlation_pct = 25.0;
                n.distribution = Some(Distribution::Normal);
                n.loss_pct = 1.0;
                n.loss_correlation_pct = 10.0;
                n.duplicate_pct = 1.0;
                n.corrupt_pct = 0.5;
                n.reorder_pct = 10.0;
                n.reorder_gap = 3;
                n.rate_bps = 100_000_000;
            }),
        ),
    ]
}

pub struct Golden {
    pub command: String,
    pub kind: String,
    pub sent: Vec<u8>,
    pub dump: Vec<u8>,
}

/// The golden data: `FL_GOLDEN_DIR` when set (the VM test stages a copy where the VM sees it),
/// else `agent/tests/golden` in the source tree.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("FL_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn golden(name: &str) -> Golden {
    let path = golden_dir().join(format!("{name}.golden"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record it with agent/tests/golden/record.sh (as root)",
            path.display()
        )
    });
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{}: no `{key}:` line", path.display()))
            .trim()
            .to_string()
    };
    Golden {
        command: field("command"),
        kind: field("kind"),
        sent: hex(&field("sent")),
        dump: hex(&field("dump")),
    }
}
