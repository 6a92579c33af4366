//! Pure encoders of the `TCA_OPTIONS` payloads Faultline sends for htb (root and classes), tbf
//! and netem, laid out as iproute2's `tc` (6.1) lays them out, rate tables included; the
//! golden tests (`agent/tests/net_tc_golden.rs`) compare them byte for byte with what `tc`
//! sent for the same parameters. One deliberate addition: netem also carries
//! `TCA_NETEM_LATENCY64`/`TCA_NETEM_JITTER64` (nanoseconds, as iproute2 6.9+ sends them).
//!
//! Time in tc's structs is in psched ticks of 64 ns (15.625 per microsecond; fixed since
//! Linux 2.6.31, see /proc/net/psched); rates are bytes per second.

use faultline_core::fault::Netem;

use super::dist;

/// psched ticks per microsecond (`/proc/net/psched`: 1000 ns per us / 64 ns per tick).
pub const TICKS_PER_USEC: f64 = 15.625;
const USEC_PER_SEC: f64 = 1_000_000.0;
/// `TC_LINKLAYER_ETHERNET`.
const LINKLAYER_ETHERNET: u8 = 1;
/// The MTU tc builds htb rate tables for.
const HTB_TABLE_MTU: u32 = 1600;
/// The MTU tc builds tbf rate tables for when none is given.
const TBF_TABLE_MTU: u32 = 2047;

/// Attribute ids inside `TCA_OPTIONS` (linux/pkt_sched.h).
pub mod attr {
    pub const HTB_PARMS: u16 = 1;
    pub const HTB_INIT: u16 = 2;
    pub const HTB_CTAB: u16 = 3;
    pub const HTB_RTAB: u16 = 4;
    pub const HTB_RATE64: u16 = 6;
    pub const HTB_CEIL64: u16 = 7;
    pub const TBF_PARMS: u16 = 1;
    pub const TBF_RTAB: u16 = 2;
    pub const TBF_RATE64: u16 = 4;
    pub const TBF_BURST: u16 = 6;
    pub const NETEM_CORR: u16 = 1;
    pub const NETEM_DELAY_DIST: u16 = 2;
    pub const NETEM_REORDER: u16 = 3;
    pub const NETEM_CORRUPT: u16 = 4;
    pub const NETEM_RATE: u16 = 6;
    pub const NETEM_RATE64: u16 = 8;
    pub const NETEM_LATENCY64: u16 = 10;
    pub const NETEM_JITTER64: u16 = 11;
}

/// Size of `struct tc_netem_qopt`, which netem's options start with (attributes follow it).
pub const NETEM_QOPT_LEN: usize = 24;

/// Whether netem options carry a delay distribution table.
pub fn netem_has_table(options: &[u8]) -> bool {
    options.len() > NETEM_QOPT_LEN
        && attrs(&options[NETEM_QOPT_LEN..])
            .iter()
            .any(|(k, _)| *k == attr::NETEM_DELAY_DIST)
}

/// Appends one netlink attribute (header, payload, padding to 4 bytes).
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Splits a run of attributes into (kind, payload); stops at the first malformed header.
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// `tc_calc_xmittime`: ticks to send `size` bytes at `rate` bytes/s. tc truncates to whole
/// microseconds before converting to ticks; so do we, so the bytes match.
pub fn xmittime(rate: u64, size: u32) -> u32 {
    if rate == 0 {
        return 0;
    }
    let usec = (USEC_PER_SEC * (f64::from(size) / rate as f64)) as u32;
    (f64::from(usec) * TICKS_PER_USEC) as u32
}

/// Microseconds to ticks, as tc's `get_ticks` does.
pub fn usec_to_ticks(usec: u64) -> u32 {
    let usec = u32::try_from(usec).unwrap_or(u32::MAX);
    (f64::from(usec) * TICKS_PER_USEC).min(f64::from(u32::MAX)) as u32
}

/// A percentage (0..=100) as netem's 32-bit probability (`rint(p / 100 * UINT32_MAX)`).
pub fn percent(p: f64) -> u32 {
    (p.clamp(0.0, 100.0) / 100.0 * f64::from(u32::MAX)).round_ties_even() as u32
}

/// A 64-bit rate as the 32-bit field of `tc_ratespec` (saturated: the 64-bit attribute
/// carries the real value).
fn rate32(rate: u64) -> u32 {
    u32::try_from(rate).unwrap_or(u32::MAX)
}

/// `struct tc_ratespec` for ethernet with tc's defaults (no overhead, mpu 0, cell_align -1).
fn ratespec(cell_log: u8, rate: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = cell_log;
    b[1] = LINKLAYER_ETHERNET;
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    b[8..12].copy_from_slice(&rate.to_ne_bytes());
    b
}

/// `tc_calc_rtable`: (cell_log, 256 transmit times) for packets up to `mtu`. The kernel no
/// longer uses the table when the link layer is set, but tc sends it and so do we.
fn rate_table(rate: u32, mtu: u32) -> (u8, Vec<u32>) {
    let mut cell_log = 0u8;
    while (mtu >> cell_log) > 255 {
        cell_log += 1;
    }
    let table = (0..256u32)
        .map(|i| xmittime(u64::from(rate), (i + 1) << cell_log))
        .collect();
    (cell_log, table)
}

/// `TCA_OPTIONS` of Faultline's htb root: `tc qdisc ... htb default <minor>` (r2q 10).
pub fn htb_root(default_minor: u16) -> Vec<u8> {
    // struct tc_htb_glob: version, rate2quantum, defcls, debug, direct_pkts.
    let glob = u32s(&[3, 10, u32::from(default_minor), 0, 0]);
    let mut out = Vec::new();
    put_attr(&mut out, attr::HTB_INIT, &glob);
    out
}

/// One htb class (rates in bytes per second, bursts in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub rate: u64,
    pub ceil: u64,
    pub burst: u32,
    pub cburst: u32,
    pub quantum: u32,
    pub prio: u32,
}

/// `TCA_OPTIONS` of an htb class: `tc class ... htb rate R ceil C burst B cburst CB quantum Q
/// prio P`.
pub fn htb_class(c: &HtbClass) -> Vec<u8> {
    let (rate_log, rtab) = rate_table(rate32(c.rate), HTB_TABLE_MTU);
    let (ceil_log, ctab) = rate_table(rate32(c.ceil), HTB_TABLE_MTU);
    // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio.
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(rate_log, rate32(c.rate)));
    opt.extend_from_slice(&ratespec(ceil_log, rate32(c.ceil)));
    opt.extend(u32s(&[
        xmittime(c.rate, c.burst),
        xmittime(c.ceil, c.cburst),
        c.quantum,
        0,
        c.prio,
    ]));
    let mut out = Vec::new();
    if c.rate > u64::from(u32::MAX) {
        put_attr(&mut out, attr::HTB_RATE64, &c.rate.to_ne_bytes());
    }
    if c.ceil > u64::from(u32::MAX) {
        put_attr(&mut out, attr::HTB_CEIL64, &c.ceil.to_ne_bytes());
    }
    put_attr(&mut out, attr::HTB_PARMS, &opt);
    put_attr(&mut out, attr::HTB_RTAB, &u32s(&rtab));
    put_attr(&mut out, attr::HTB_CTAB, &u32s(&ctab));
    out
}

/// A token bucket (rate in bytes per second, burst and limit in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfOpts {
    pub rate: u64,
    pub burst: u32,
    pub limit: u32,
}

/// `TCA_OPTIONS` of tbf: `tc qdisc ... tbf rate R burst B limit L`.
pub fn tbf(t: &TbfOpts) -> Vec<u8> {
    let r32 = rate32(t.rate);
    let (cell_log, rtab) = rate_table(r32, TBF_TABLE_MTU);
    // struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu. tc computes the buffer from
    // the 32-bit rate; the kernel uses TCA_TBF_BURST instead.
    let mut opt = Vec::with_capacity(36);
    opt.extend_from_slice(&ratespec(cell_log, r32));
    opt.extend_from_slice(&[0u8; 12]);
    opt.extend(u32s(&[t.limit, xmittime(u64::from(r32), t.burst), 0]));
    let mut out = Vec::new();
    put_attr(&mut out, attr::TBF_PARMS, &opt);
    put_attr(&mut out, attr::TBF_BURST, &t.burst.to_ne_bytes());
    if t.rate > u64::from(u32::MAX) {
        put_attr(&mut out, attr::TBF_RATE64, &t.rate.to_ne_bytes());
    }
    put_attr(&mut out, attr::TBF_RTAB, &u32s(&rtab));
    out
}

/// `TCA_OPTIONS` of netem for `n` with a queue of `limit` packets: `struct tc_netem_qopt`,
/// then LATENCY64/JITTER64, CORR, REORDER, CORRUPT, RATE64, RATE, DELAY_DIST in tc's order,
/// each only when set (as tc sends them).
pub fn netem(n: &Netem, limit: u32) -> Vec<u8> {
    netem_with(n, limit, false)
}

/// Like [`netem`], but CORR, REORDER, CORRUPT and RATE are always present (zero when unset).
/// netem keeps the previous value of an attribute a change leaves out, so a qdisc replaced in
/// place needs them all to end up exactly as if made afresh. (The delay table is the one
/// thing a change cannot clear: a netem that loses its table is recreated instead.)
pub fn netem_explicit(n: &Netem, limit: u32) -> Vec<u8> {
    netem_with(n, limit, true)
}

fn netem_with(n: &Netem, limit: u32, explicit: bool) -> Vec<u8> {
    let reorder = percent(n.reorder_pct);
    // tc: a reorder without a gap reorders with gap 1.
    let gap = if reorder > 0 && n.reorder_gap == 0 {
        1
    } else {
        n.reorder_gap
    };
    // struct tc_netem_qopt: latency, limit, loss, gap, duplicate, jitter.
    let mut out = u32s(&[
        usec_to_ticks(n.delay_us),
        limit,
        percent(n.loss_pct),
        gap,
        percent(n.duplicate_pct),
        usec_to_ticks(n.jitter_us),
    ]);
    if n.delay_us > 0 {
        put_attr(
            &mut out,
            attr::NETEM_LATENCY64,
            &(n.delay_us.saturating_mul(1000) as i64).to_ne_bytes(),
        );
    }
    if n.jitter_us > 0 {
        put_attr(
            &mut out,
            attr::NETEM_JITTER64,
            &(n.jitter_us.saturating_mul(1000) as i64).to_ne_bytes(),
        );
    }
    if explicit || n.correlation_pct > 0.0 || n.loss_correlation_pct > 0.0 {
        // struct tc_netem_corr: delay_corr, loss_corr, dup_corr.
        let corr = u32s(&[
            percent(n.correlation_pct),
            percent(n.loss_correlation_pct),
            0,
        ]);
        put_attr(&mut out, attr::NETEM_CORR, &corr);
    }
    if explicit || reorder > 0 {
        put_attr(&mut out, attr::NETEM_REORDER, &u32s(&[reorder, 0]));
    }
    if explicit || n.corrupt_pct > 0.0 {
        put_attr(
            &mut out,
            attr::NETEM_CORRUPT,
            &u32s(&[percent(n.corrupt_pct), 0]),
        );
    }
    if explicit || n.rate_bps > 0 {
        let rate = n.rate_bps / 8;
        if rate > u64::from(u32::MAX) {
            put_attr(&mut out, attr::NETEM_RATE64, &rate.to_ne_bytes());
        }
        // struct tc_netem_rate: rate, packet_overhead, cell_size, cell_overhead.
        put_attr(&mut out, attr::NETEM_RATE, &u32s(&[rate32(rate), 0, 0, 0]));
    }
    if let Some(table) = n.distribution.and_then(dist::table) {
        let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_ne_bytes()).collect();
        put_attr(&mut out, attr::NETEM_DELAY_DIST, &bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_split_back() {
        let mut b = Vec::new();
        put_attr(&mut b, 7, &[1, 2, 3]);
        put_attr(&mut b, 9, &[4; 4]);
        assert_eq!(b, [7, 0, 7, 0, 1, 2, 3, 0, 8, 0, 9, 0, 4, 4, 4, 4]);
        assert_eq!(
            attrs(&b),
            vec![(7u16, &[1u8, 2, 3][..]), (9u16, &[4u8; 4][..])]
        );
    }

    #[test]
    fn time_and_percent_scales() {
        assert_eq!(usec_to_ticks(100_000), 1_562_500);
        assert_eq!(xmittime(1_250_000, 16_384), 204_796);
        assert_eq!(percent(30.0), 1_288_490_188);
        assert_eq!(percent(100.0), u32::MAX);
        assert_eq!(percent(0.5), 21_474_836);
    }

    #[test]
    fn netem_without_extras_is_only_the_qopt() {
        let n = Netem {
            loss_pct: 30.0,
            ..Netem::default()
        };
        let b = netem(&n, 1000);
        assert_eq!(b.len(), NETEM_QOPT_LEN);
        assert_eq!(&b[4..8], &1000u32.to_ne_bytes());
        assert_eq!(&b[8..12], &percent(30.0).to_ne_bytes());
    }
}
