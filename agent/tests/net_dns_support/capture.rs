//! A packet capture in the client netns and the checksum check of what it saw: the answers the
//! dns program makes must verify as a receiver without checksum offload would check them.

use std::path::Path;

use super::in_netns;

/// A packet socket in a netns (cooked: frames start at the IP header), to look at answers as
/// they arrive on the wire side of the stack.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    pub fn new(ns: &Path) -> Capture {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
        let fd = in_netns(ns, || {
            socket(
                AddressFamily::Packet,
                SockType::Datagram,
                SockFlag::SOCK_NONBLOCK,
                SockProtocol::EthAll,
            )
        })
        .expect("AF_PACKET socket");
        // Room for every frame of a test (queries, answers, other traffic) until it is read.
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &(64 << 20))
            .expect("SO_RCVBUFFORCE");
        Capture { fd }
    }

    /// Every captured datagram from UDP port 53 (IPv4 or IPv6 packets, from the IP header on).
    pub fn dns_answers(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            let p = &buf[..n];
            let sport = match p.first().map(|b| b >> 4) {
                Some(4) if n >= 28 && p[9] == 17 => {
                    let l4 = usize::from(p[0] & 0x0f) * 4;
                    p.get(l4..l4 + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
                }
                Some(6) if n >= 48 && p[6] == 17 => Some(u16::from_be_bytes([p[40], p[41]])),
                _ => None,
            };
            if sport == Some(53) {
                out.push(p.to_vec());
            }
        }
        out
    }
}

fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether an IPv4 or IPv6 UDP packet's checksums (IPv4 header, UDP with the pseudo-header)
/// verify, as a receiver without checksum offload would check them; and its DNS rcode.
pub fn checksums_ok(p: &[u8]) -> (bool, u8) {
    if p[0] >> 4 == 4 {
        let hl = usize::from(p[0] & 0x0f) * 4;
        let ip_ok = fold(ones_sum(&p[..hl], 0)) == 0xffff;
        let udp = &p[hl..usize::from(u16::from_be_bytes([p[2], p[3]]))];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        let udp_ok = fold(ones_sum(udp, ones_sum(&pseudo, 0))) == 0xffff;
        (ip_ok && udp_ok, udp[11] & 0x0f)
    } else {
        let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
        let udp = &p[40..40 + plen];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        let udp_ok = fold(ones_sum(udp, ones_sum(&pseudo, 0))) == 0xffff;
        (udp_ok, udp[11] & 0x0f)
    }
}
