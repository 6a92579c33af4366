//! Golden bytes recorded with `strace -xx conntrack -G -p tcp -s 10.209.1.1 -d 10.209.9.9
//! --sport 40001 --dport 443` (conntrack-tools 1.4.7) in a netns whose OUTPUT chain DNATs
//! 10.209.9.9:443 to 10.209.1.2:7443 and whose POSTROUTING MASQUERADEs with `--random-fully`.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CTA_TUPLE_ORIG of 10.209.1.1:40001 -> 10.209.9.9:443, TCP, as conntrack sent it.
const ORIG: &str = "34000180 14000180 08000100 0ad10101 08000200 0ad10909
    1c000280 05000100 06000000 06000200 9c410000 06000300 01bb0000";

fn header(len: u32, kind: u16, flags: u16, seq: u32, pid: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&len.to_ne_bytes());
    h.extend_from_slice(&kind.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&seq.to_ne_bytes());
    h.extend_from_slice(&pid.to_ne_bytes());
    h
}

fn conn(local: &str, remote: &str) -> Conn {
    Conn {
        local: local.parse().expect("local"),
        remote: remote.parse().expect("remote"),
    }
}

#[test]
fn the_request_is_conntracks_get_without_its_protoinfo_mask() {
    let seq = 1_796_598_365;
    let ours = request(seq, &conn("10.209.1.1:40001", "10.209.9.9:443"));
    // conntrack's 96 bytes: header, nfgenmsg (AF_INET, v0), CTA_TUPLE_ORIG, and a
    // CTA_PROTOINFO TCP flag mask (24 bytes) a GET does not need.
    let mut tools = header(96, 0x0101, 0x0005, seq, 0);
    tools.extend_from_slice(&[2, 0, 0, 0]);
    tools.extend_from_slice(&hex(ORIG));
    tools.extend_from_slice(&hex(
        "18000480 14000180 06000400 0a0a0000 06000500 0a0a0000",
    ));
    let mut expected = header(72, 0x0101, 0x0005, seq, 0);
    expected.extend_from_slice(&tools[16..16 + 4 + 52]);
    assert_eq!(ours, expected);
}

#[test]
fn the_answer_gives_the_translated_ends() {
    let mut b = header(212, 0x0100, 0x0002, 1_796_598_365, 5817);
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(&hex(ORIG));
    // CTA_TUPLE_REPLY: 10.209.1.2:7443 -> 10.209.1.1:45743 (DNAT target, MASQUERADE port).
    b.extend_from_slice(&hex("34000280 14000180 08000100 0ad10102 08000200 0ad10101
         1c000280 05000100 06000000 06000200 1d130000 06000300 b2af0000"));
    // CTA_STATUS, CTA_MARK, CTA_ID, CTA_USE, CTA_TIMEOUT, CTA_PROTOINFO.
    b.extend_from_slice(&hex(
        "08000300 000001be 08000800 00000000 08000c00 7ab89f07 08000b00 00000002
         08000700 0006977f
         30000480 2c000180 05000100 03000000 05000200 0a000000 05000300 0a000000
         06000400 23000000 06000500 23000000",
    ));
    assert_eq!(b.len(), 212);
    assert_eq!(
        parse(&b),
        Ok(Answer::OnWire(conn("10.209.1.1:45743", "10.209.1.2:7443")))
    );
}

#[test]
fn no_entry_and_other_errors() {
    let mut b = header(116, NLMSG_ERROR, 0, 1, 5821);
    b.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
    b.extend_from_slice(&[0u8; 96]);
    assert_eq!(parse(&b), Ok(Answer::NoEntry));
    let mut b = header(36, NLMSG_ERROR, 0, 1, 1);
    b.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
    b.extend_from_slice(&[0u8; 16]);
    assert_eq!(parse(&b), Ok(Answer::Error(Errno::EPERM)));
    assert!(parse(&b[..10]).is_err());
    let mut b = header(24, 0x0100, 0, 1, 1);
    b.extend_from_slice(&[2, 0, 0, 0, 0xff, 0x00, 0x01, 0x80]);
    assert!(parse(&b).is_err(), "an attribute longer than the message");
}

#[test]
fn ipv6_tuples_use_the_v6_attributes() {
    let r = request(7, &conn("[2001:db8::1]:40001", "[2001:db8::9]:443"));
    assert_eq!(r[16], libc::AF_INET6 as u8);
    // ORIG (nested) > IP (nested) > V6_SRC (type 3, 20 bytes).
    assert_eq!(&r[24..28], &[0x2c, 0x00, 0x01, 0x80]);
    assert_eq!(&r[28..32], &[0x14, 0x00, 0x03, 0x00]);
    assert_eq!(
        &r[32..48],
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets()
    );
}
