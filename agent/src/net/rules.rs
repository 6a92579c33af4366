//! The one encoding of a traffic match (CIDRs, ports, protocol, peers, auto-exclusions,
//! probability, deadline) into the bytes of the BPF maps that `ebpf/match.h` reads; pure, so
//! the layout is pinned by unit tests. `drop`, `partition` and the qdisc steering program all
//! use it.
//!
//! Layout (mirrors `ebpf/common.h`):
//! - `fl_cfg[0]`: `struct fl_config` = deadline_ns u64, threshold u64, flags u32, protocol u8,
//!   3 pad bytes (24 bytes, native endian).
//! - `fl_cidrs`: LPM trie keyed by `struct fl_cidr_key` = prefixlen u32 (32 + the CIDR's
//!   prefix), then 20 data bytes: set, family (4 or 6), 0, 0, address (network order, IPv4 in
//!   the first four bytes), value `1u8`.
//! - `fl_ports`: hash of `u16` ports (host order) -> `1u8`, matched against either end.

use std::net::IpAddr;

use faultline_core::fault::{Cidr, Direction, TrafficMatch};

/// Size of `struct fl_config`.
pub const CONFIG_SIZE: usize = 24;
/// Size of the data part of `struct fl_cidr_key` (after `prefixlen`).
pub const KEY_DATA_SIZE: usize = 20;
/// Bits of set/family header in front of the address in a trie key.
pub const KEY_HEAD_BITS: u32 = 32;
/// Capacity of `fl_cidrs` and `fl_ports` (`FL_MAX_CIDRS`, `FL_MAX_PORTS`).
pub const MAX_CIDRS: usize = 512;
pub const MAX_PORTS: usize = 128;
/// SSH, never matched unless the spec says `include_protected`.
pub const SSH_PORT: u16 = 22;

/// `fl_config.flags` bits.
pub const HAS_DST: u32 = 1 << 0;
pub const HAS_SRC: u32 = 1 << 1;
pub const HAS_PEER: u32 = 1 << 2;
pub const HAS_PORTS: u32 = 1 << 3;
pub const PROTECT: u32 = 1 << 4;

/// Address sets of the trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Set {
    Dst = 1,
    Src = 2,
    /// The far end: the destination on egress, the source on ingress.
    Peer = 3,
    /// Never matched (the coordinator's addresses) unless `include_protected`.
    Protected = 4,
}

/// `threshold` value for "always act".
pub const ALWAYS: u64 = 1 << 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    #[error("match.ports: port {0} is outside 1..=65535")]
    Port(u16),
    #[error("probability: {0} is outside 0..=1")]
    Probability(f64),
    #[error("{field}: {count} entries exceed the {max} this agent's maps hold")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

/// `struct fl_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// `bpf_ktime_get_ns()` clock; 0 = inert.
    pub deadline_ns: u64,
    /// Act when `(u64)bpf_get_prandom_u32() < threshold`.
    pub threshold: u64,
    pub flags: u32,
    /// IP protocol number, 0 = any.
    pub protocol: u8,
}

impl Config {
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0..8].copy_from_slice(&self.deadline_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.threshold.to_ne_bytes());
        b[16..20].copy_from_slice(&self.flags.to_ne_bytes());
        b[20] = self.protocol;
        b
    }

    pub fn from_bytes(b: &[u8; CONFIG_SIZE]) -> Self {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(a)
        };
        let mut f = [0u8; 4];
        f.copy_from_slice(&b[16..20]);
        Config {
            deadline_ns: u64_at(0),
            threshold: u64_at(8),
            flags: u32::from_ne_bytes(f),
            protocol: b[20],
        }
    }
}

/// One entry of `fl_cidrs`: `prefix_len` (trie bits) and key data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrKey {
    pub prefix_len: u32,
    pub data: [u8; KEY_DATA_SIZE],
}

impl CidrKey {
    pub fn new(set: Set, cidr: &Cidr) -> Self {
        let mut data = [0u8; KEY_DATA_SIZE];
        data[0] = set as u8;
        match cidr.addr {
            IpAddr::V4(a) => {
                data[1] = 4;
                data[4..8].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                data[1] = 6;
                data[4..20].copy_from_slice(&a.octets());
            }
        }
        CidrKey {
            prefix_len: KEY_HEAD_BITS + u32::from(cidr.prefix),
            data,
        }
    }

    /// The whole `struct fl_cidr_key` (prefixlen native endian, then data).
    pub fn to_bytes(&self) -> [u8; 4 + KEY_DATA_SIZE] {
        let mut b = [0u8; 4 + KEY_DATA_SIZE];
        b[0..4].copy_from_slice(&self.prefix_len.to_ne_bytes());
        b[4..].copy_from_slice(&self.data);
        b
    }
}

/// Everything a program's maps hold for one fault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub config: Config,
    pub cidrs: Vec<CidrKey>,
    /// Host order, sorted, no duplicates.
    pub ports: Vec<u16>,
}

/// Traffic that is never matched unless a spec says `include_protected`: SSH (port 22, always)
/// and these addresses (the coordinator's, from the agent config).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtectedTraffic {
    pub addresses: Vec<IpAddr>,
}

impl ProtectedTraffic {
    /// The coordinator's addresses: `host` itself when it is an IP address, else what it
    /// resolves to now (an unresolvable name gives none; SSH stays protected).
    pub fn for_coordinator(host: &str, port: u16) -> Self {
        use std::net::ToSocketAddrs;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, port)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        addresses.sort();
        addresses.dedup();
        ProtectedTraffic { addresses }
    }
}

/// What one eBPF fault asks for, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec<'a> {
    pub matcher: &'a TrafficMatch,
    /// Far-end CIDRs (partition peers); empty = any.
    pub peers: &'a [Cidr],
    /// 0..=1.
    pub probability: f64,
}

/// The `threshold` for a probability: `p * 2^32`, so 0 never acts and 1 always does.
pub fn threshold(probability: f64) -> u64 {
    let t = (probability.clamp(0.0, 1.0) * ALWAYS as f64).round();
    (t as u64).min(ALWAYS)
}

/// Encodes a spec; `deadline_ns` is left 0 (inert) for the caller to set.
pub fn encode(spec: &RuleSpec<'_>, protected: &ProtectedTraffic) -> Result<Rules, RulesError> {
    let m = spec.matcher;
    if !(0.0..=1.0).contains(&spec.probability) {
        return Err(RulesError::Probability(spec.probability));
    }
    if let Some(p) = m.ports.iter().find(|p| **p == 0) {
        return Err(RulesError::Port(*p));
    }
    let mut flags = 0;
    let mut cidrs = Vec::new();
    for (set, list, bit) in [
        (Set::Dst, &m.destinations[..], HAS_DST),
        (Set::Src, &m.sources[..], HAS_SRC),
        (Set::Peer, spec.peers, HAS_PEER),
    ] {
        if !list.is_empty() {
            flags |= bit;
            cidrs.extend(list.iter().map(|c| CidrKey::new(set, &canonical(c))));
        }
    }
    if !m.include_protected {
        flags |= PROTECT;
        cidrs.extend(protected.addresses.iter().map(|a| {
            let cidr = Cidr {
                addr: *a,
                prefix: Cidr::max_prefix(a),
            };
            CidrKey::new(Set::Protected, &cidr)
        }));
    }
    cidrs.sort_by_key(|k| (k.data, k.prefix_len));
    cidrs.dedup();
    if cidrs.len() > MAX_CIDRS {
        return Err(RulesError::TooMany {
            field: "match (CIDRs and peers)",
            count: cidrs.len(),
            max: MAX_CIDRS,
        });
    }
    let mut ports = m.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > MAX_PORTS {
        return Err(RulesError::TooMany {
            field: "match.ports",
            count: ports.len(),
            max: MAX_PORTS,
        });
    }
    if !ports.is_empty() {
        flags |= HAS_PORTS;
    }
    Ok(Rules {
        config: Config {
            deadline_ns: 0,
            threshold: threshold(spec.probability),
            flags,
            protocol: m.protocol.number(),
        },
        cidrs,
        ports,
    })
}

/// The CIDR with host bits cleared (`10.1.2.3/8` -> `10.0.0.0/8`), as the trie stores it.
pub fn canonical(c: &Cidr) -> Cidr {
    let addr = match c.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(c.prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Cidr {
        addr,
        prefix: c.prefix,
    }
}

/// The hooks a direction needs: ingress, egress or both.
pub fn hooks(d: Direction) -> &'static [Hook] {
    match d {
        Direction::Ingress => &[Hook::Ingress],
        Direction::Egress => &[Hook::Egress],
        Direction::Both => &[Hook::Ingress, Hook::Egress],
    }
}

/// Where a program runs relative to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
