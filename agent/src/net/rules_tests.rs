//! Byte-level tests of the map encoding (little-endian hosts: x86_64, aarch64).

use super::*;
use faultline_core::fault::Protocol;

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn no_protection() -> ProtectedTraffic {
    ProtectedTraffic::default()
}

#[test]
fn thresholds_cover_zero_to_always() {
    assert_eq!(threshold(0.0), 0);
    assert_eq!(threshold(1.0), 1 << 32);
    assert_eq!(threshold(0.3), 1_288_490_189); // round(0.3 * 2^32)
    assert_eq!(threshold(0.5), 1 << 31);
}

#[cfg(target_endian = "little")]
#[test]
fn config_bytes() {
    let c = Config {
        deadline_ns: 0x0102_0304_0506_0708,
        threshold: 1 << 32,
        flags: HAS_DST | HAS_PORTS | PROTECT,
        protocol: 17,
    };
    assert_eq!(
        c.to_bytes(),
        [
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // deadline_ns
            0, 0, 0, 0, 1, 0, 0, 0, // threshold = 2^32
            0x19, 0, 0, 0, // flags = 1 | 8 | 16
            17, 0, 0, 0, // protocol udp, pad
        ]
    );
    assert_eq!(Config::from_bytes(&c.to_bytes()), c);
}

#[cfg(target_endian = "little")]
#[test]
fn cidr_key_bytes_v4_and_v6() {
    let k = CidrKey::new(Set::Dst, &cidr("10.200.1.0/24"));
    assert_eq!(
        k.to_bytes(),
        [
            56, 0, 0, 0, // prefixlen 32 + 24
            1, 4, 0, 0, // set dst, family 4
            10, 200, 1, 0, // address
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]
    );
    let k = CidrKey::new(Set::Peer, &cidr("2001:db8::/32"));
    assert_eq!(
        k.to_bytes(),
        [
            64, 0, 0, 0, // 32 + 32
            3, 6, 0, 0, // set peer, family 6
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]
    );
}

#[test]
fn drop_match_encodes_sets_ports_protocol_and_protection() {
    let m = TrafficMatch {
        destinations: vec![cidr("10.200.1.2"), cidr("10.200.1.0/24")],
        sources: vec![],
        ports: vec![5001, 53, 5001],
        protocol: Protocol::Udp,
        direction: Direction::Egress,
        include_protected: false,
    };
    let protected = ProtectedTraffic {
        addresses: vec!["192.0.2.10".parse().expect("ip")],
    };
    let r = encode(
        &RuleSpec {
            matcher: &m,
            peers: &[],
            probability: 0.3,
        },
        &protected,
    )
    .expect("encode");
    assert_eq!(r.config.flags, HAS_DST | HAS_PORTS | PROTECT);
    assert_eq!(r.config.protocol, 17);
    assert_eq!(r.config.threshold, threshold(0.3));
    assert_eq!(r.config.deadline_ns, 0, "the caller arms the deadline");
    assert_eq!(r.ports, vec![53, 5001]);
    let keys: Vec<(u32, u8, u8, [u8; 4])> = r
        .cidrs
        .iter()
        .map(|k| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&k.data[4..8]);
            (k.prefix_len, k.data[0], k.data[1], a)
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (56, 1, 4, [10, 200, 1, 0]),
            (64, 1, 4, [10, 200, 1, 2]),
            (64, 4, 4, [192, 0, 2, 10]),
        ]
    );
}

#[test]
fn partition_peers_and_include_protected() {
    let m = TrafficMatch {
        direction: Direction::Both,
        include_protected: true,
        ..Default::default()
    };
    let peers = [cidr("10.200.2.0/24"), cidr("fd00::1/64")];
    let protected = ProtectedTraffic {
        addresses: vec!["192.0.2.10".parse().expect("ip")],
    };
    let r = encode(
        &RuleSpec {
            matcher: &m,
            peers: &peers,
            probability: 1.0,
        },
        &protected,
    )
    .expect("encode");
    assert_eq!(
        r.config.flags, HAS_PEER,
        "no PROTECT with include_protected"
    );
    assert_eq!(r.config.threshold, ALWAYS);
    assert_eq!(r.config.protocol, 0);
    assert_eq!(r.cidrs.len(), 2, "no protected entries: {:?}", r.cidrs);
    let v6 = r.cidrs.iter().find(|k| k.data[1] == 6).expect("v6 key");
    // host bits cleared: fd00::1/64 -> fd00::/64
    assert_eq!(v6.prefix_len, 32 + 64);
    assert_eq!(&v6.data[4..6], &[0xfd, 0x00]);
    assert!(v6.data[6..].iter().all(|b| *b == 0));
}

#[test]
fn empty_match_matches_everything_but_protected() {
    let r = encode(
        &RuleSpec {
            matcher: &TrafficMatch::default(),
            peers: &[],
            probability: 0.0,
        },
        &no_protection(),
    )
    .expect("encode");
    assert_eq!(r.config.flags, PROTECT);
    assert_eq!(r.config.threshold, 0);
    assert!(r.cidrs.is_empty() && r.ports.is_empty());
}

#[test]
fn refusals_name_the_field_and_range() {
    let m = TrafficMatch {
        ports: vec![80, 0],
        ..Default::default()
    };
    let e = encode(
        &RuleSpec {
            matcher: &m,
            peers: &[],
            probability: 0.5,
        },
        &no_protection(),
    )
    .expect_err("port 0");
    assert_eq!(e.to_string(), "match.ports: port 0 is outside 1..=65535");
    let e = encode(
        &RuleSpec {
            matcher: &TrafficMatch::default(),
            peers: &[],
            probability: 1.5,
        },
        &no_protection(),
    )
    .expect_err("probability");
    assert_eq!(e.to_string(), "probability: 1.5 is outside 0..=1");
}

#[test]
fn coordinator_protection_from_an_address() {
    let p = ProtectedTraffic::for_coordinator("192.0.2.10", 7443);
    assert_eq!(
        p.addresses,
        vec!["192.0.2.10".parse::<IpAddr>().expect("ip")]
    );
    let p = ProtectedTraffic::for_coordinator("[2001:db8::7]", 7443);
    assert_eq!(
        p.addresses,
        vec!["2001:db8::7".parse::<IpAddr>().expect("ip")]
    );
    let p = ProtectedTraffic::for_coordinator("localhost", 7443);
    assert!(
        p.addresses.iter().all(|a| a.is_loopback()) && !p.addresses.is_empty(),
        "{:?}",
        p.addresses
    );
}

#[test]
fn hooks_per_direction() {
    assert_eq!(hooks(Direction::Egress), &[Hook::Egress]);
    assert_eq!(hooks(Direction::Ingress), &[Hook::Ingress]);
    assert_eq!(hooks(Direction::Both), &[Hook::Ingress, Hook::Egress]);
}
