//! What a `dns` fault writes into the maps of `ebpf/dns.bpf.c`, as plain bytes and numbers:
//! the name hashes of `fl_dns_names` (the same keyed hash the program computes over every
//! label-aligned suffix of a query's QNAME) and `struct fl_dns_opts`. Pure; no syscalls.

use faultline_core::fault::{DnsAction, DnsName};

/// `fl_dns_names` value bits (`FL_DNS_EXACT`, `FL_DNS_SUFFIX`).
pub const EXACT: u8 = 1;
pub const SUFFIX: u8 = 2;
/// `FL_DNS_MAX_NAMES`.
pub const MAX_NAMES: usize = 64;
/// `FL_DNS_PRIME`.
const PRIME: u64 = 0x0000_0100_0000_01b3;
/// `sizeof(struct fl_dns_opts)`.
pub const OPTS_SIZE: usize = 24;
/// `fl_stats` indexes of `dns.bpf.c`.
pub const STAT_MATCHED: u32 = 0;
pub const STAT_ACTED: u32 = 1;
pub const STAT_QUERIES: u32 = 2;
pub const STAT_ERRORS: u32 = 3;
pub const STATS: u32 = 4;

/// `FL_DNS_NXDOMAIN` ... for `fl_dns_opts.action`.
pub fn action_code(a: DnsAction) -> u8 {
    match a {
        DnsAction::Nxdomain => 1,
        DnsAction::Servfail => 2,
        DnsAction::Timeout => 3,
    }
}

/// The program's hash of a name in wire form without the root label (`\x03www\x07example\x03com`):
/// from `seed`, last byte first, `h = (h ^ b) * P; h ^= h >> 31`.
pub fn hash(seed: u64, wire: &[u8]) -> u64 {
    wire.iter().rev().fold(seed, |h, b| {
        let h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        h ^ (h >> 31)
    })
}

/// `fl_dns_names` entries for the spec's names: one key per distinct name, its bits OR-ed
/// (`example.com` and `*.example.com` share a key with both bits).
pub fn entries(seed: u64, names: &[DnsName]) -> Vec<(u64, u8)> {
    let mut out: Vec<(u64, u8)> = Vec::new();
    for n in names {
        let key = hash(seed, &n.wire());
        let bit = if n.suffix { SUFFIX } else { EXACT };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v |= bit,
            None => out.push((key, bit)),
        }
    }
    out
}

/// `struct fl_dns_opts`: seed u64, cgroup_id u64 (0 = any socket), action u8, 7 bytes pad;
/// native byte order.
pub fn opts_bytes(seed: u64, cgroup_id: u64, action: DnsAction) -> [u8; OPTS_SIZE] {
    let mut b = [0u8; OPTS_SIZE];
    b[0..8].copy_from_slice(&seed.to_ne_bytes());
    b[8..16].copy_from_slice(&cgroup_id.to_ne_bytes());
    b[16] = action_code(action);
    b
}

/// Which of `names` a queried name (text) matches, as the program decides it: the whole name
/// against exact entries, every proper label-aligned suffix against suffix entries.
pub fn program_matches(seed: u64, names: &[DnsName], query: &str) -> bool {
    let table = entries(seed, names);
    let q = query
        .strip_suffix('.')
        .unwrap_or(query)
        .to_ascii_lowercase();
    let labels: Vec<&str> = q.split('.').collect();
    (0..labels.len()).any(|i| {
        let wire = DnsName {
            name: labels[i..].join("."),
            suffix: false,
        }
        .wire();
        let bit = if i == 0 { EXACT } else { SUFFIX };
        let key = hash(seed, &wire);
        table.iter().any(|(k, v)| *k == key && v & bit != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DnsName> {
        list.iter()
            .map(|n| DnsName::parse(n).expect("name"))
            .collect()
    }

    #[test]
    fn the_hash_is_the_programs() {
        // Golden values of h = (h ^ b) * 0x100000001b3; h ^= h >> 31, last byte first.
        // (computed independently, in Python, from the formula in ebpf/dns.bpf.c).
        assert_eq!(hash(0, b""), 0);
        assert_eq!(hash(0x1234, b"\x01a"), 0x5ab2_dd00_d04a_24ea);
        assert_eq!(hash(0, b"\x03www\x07example\x03com"), 0x7fd7_152e_6c77_8b59);
        assert_ne!(
            hash(1, b"\x01a"),
            hash(2, b"\x01a"),
            "the seed keys the hash"
        );
        assert_ne!(hash(7, b"\x02ab"), hash(7, b"\x02ba"), "order matters");
    }

    #[test]
    fn exact_and_suffix_entries_match_like_the_spec_says() {
        let seed = 0x5eed_1234_abcd_0042;
        let n = names(&["api.example.com", "*.svc.local", "svc.local"]);
        let e = entries(seed, &n);
        assert_eq!(e.len(), 2, "svc.local and *.svc.local share a key: {e:?}");
        for (query, want) in [
            ("api.example.com", true),
            ("API.Example.Com.", true),
            ("www.api.example.com", false),
            ("example.com", false),
            ("db.svc.local", true),
            ("a.b.svc.local", true),
            ("svc.local", true),
            ("xsvc.local", false),
            ("other.local", false),
        ] {
            assert_eq!(program_matches(seed, &n, query), want, "{query}");
            let spec_says = n.iter().any(|x| x.matches(query));
            assert_eq!(spec_says, want, "core agrees on {query}");
        }
        let only_suffix = names(&["*.svc.local"]);
        assert!(!program_matches(seed, &only_suffix, "svc.local"));
    }

    #[test]
    fn opts_layout() {
        let b = opts_bytes(0x0102_0304_0506_0708, 77, DnsAction::Servfail);
        assert_eq!(&b[0..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&b[8..16], &77u64.to_ne_bytes());
        assert_eq!(b[16], 2);
        assert_eq!(&b[17..], &[0u8; 7]);
        assert_eq!(action_code(DnsAction::Nxdomain), 1);
        assert_eq!(action_code(DnsAction::Timeout), 3);
    }
}
