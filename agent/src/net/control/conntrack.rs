//! What a connection looks like on the wire after NAT, from the kernel's connection tracker
//! (ctnetlink, `NETLINK_NETFILTER`): a `IPCTNL_MSG_CT_GET` by the socket's own tuple (the
//! original direction) answers with the reply tuple, whose addresses and ports are the
//! translated ones (the DNAT target, the MASQUERADE source port). The encoder and parser are
//! pure and pinned by golden bytes recorded from conntrack-tools 1.4.7.
//!
//! Only the agent's own netns is asked (the thread's): the session socket lives there, and so
//! does the NAT kube-proxy applies to a host-network agent's traffic.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::Conn;

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("asking conntrack over netlink (NETLINK_NETFILTER) for {conn}: {source}")]
    Netlink {
        conn: Conn,
        #[source]
        source: Errno,
    },
    #[error("conntrack's answer about {conn} is malformed: {why}")]
    Malformed { conn: Conn, why: String },
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFNETLINK_V0: u8 = 0;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const IPPROTO_TCP: u8 = 6;
const NLMSG_HDR: usize = 16;
const NFGENMSG: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The nested `CTA_TUPLE_*` payload of a TCP tuple `src -> dst`.
fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (s, d) = if src.is_ipv4() {
        (CTA_IP_V4_SRC, CTA_IP_V4_DST)
    } else {
        (CTA_IP_V6_SRC, CTA_IP_V6_DST)
    };
    let mut ip = Vec::new();
    attr(&mut ip, s, &ip_bytes(src.ip()));
    attr(&mut ip, d, &ip_bytes(dst.ip()));
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[IPPROTO_TCP]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
    let mut t = Vec::new();
    attr(&mut t, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut t, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    t
}

/// `IPCTNL_MSG_CT_GET` for the TCP connection `conn` (original direction: local -> remote).
pub fn request(seq: u32, conn: &Conn) -> Vec<u8> {
    let mut body = vec![
        if conn.local.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
        NFNETLINK_V0,
        0,
        0,
    ];
    attr(
        &mut body,
        CTA_TUPLE_ORIG | NLA_F_NESTED,
        &tuple(conn.local, conn.remote),
    );
    let mut msg = Vec::with_capacity(NLMSG_HDR + body.len());
    msg.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Attributes of a buffer: (type without flags, payload).
fn attrs(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return Err(format!("attribute {kind} has length {len} of {}", b.len()));
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

fn find<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

fn parse_tuple(payload: &[u8]) -> Result<(SocketAddr, SocketAddr), String> {
    let top = attrs(payload)?;
    let ip = attrs(find(&top, CTA_TUPLE_IP).ok_or("no CTA_TUPLE_IP")?)?;
    let proto = attrs(find(&top, CTA_TUPLE_PROTO).ok_or("no CTA_TUPLE_PROTO")?)?;
    let addr = |v4: u16, v6: u16| -> Result<IpAddr, String> {
        if let Some(a) = find(&ip, v4) {
            let o: [u8; 4] = a.try_into().map_err(|_| "IPv4 address of the wrong size")?;
            return Ok(IpAddr::from(o));
        }
        let a = find(&ip, v6).ok_or("no address")?;
        let o: [u8; 16] = a.try_into().map_err(|_| "IPv6 address of the wrong size")?;
        Ok(IpAddr::from(o))
    };
    let port = |kind: u16| -> Result<u16, String> {
        let p = find(&proto, kind).ok_or("no port")?;
        let b: [u8; 2] = p.try_into().map_err(|_| "port of the wrong size")?;
        Ok(u16::from_be_bytes(b))
    };
    Ok((
        SocketAddr::new(
            addr(CTA_IP_V4_SRC, CTA_IP_V6_SRC)?,
            port(CTA_PROTO_SRC_PORT)?,
        ),
        SocketAddr::new(
            addr(CTA_IP_V4_DST, CTA_IP_V6_DST)?,
            port(CTA_PROTO_DST_PORT)?,
        ),
    ))
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The entry's reply tuple, turned around: the connection as it is on the wire here.
    OnWire(Conn),
    /// No entry (no NAT and no conntrack here, or not yet confirmed).
    NoEntry,
    /// Another netlink error.
    Error(Errno),
}

/// Parses the first message of an answer to [`request`].
pub fn parse(b: &[u8]) -> Result<Answer, String> {
    if b.len() < NLMSG_HDR {
        return Err(format!("{} bytes, shorter than a netlink header", b.len()));
    }
    let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let kind = u16::from_ne_bytes([b[4], b[5]]);
    if len < NLMSG_HDR || len > b.len() {
        return Err(format!("netlink message length {len} of {} bytes", b.len()));
    }
    let body = &b[NLMSG_HDR..len];
    if kind == NLMSG_ERROR {
        let e: [u8; 4] = body
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or("short NLMSG_ERROR")?;
        return Ok(match -i32::from_ne_bytes(e) {
            0 => Answer::NoEntry,
            libc::ENOENT => Answer::NoEntry,
            errno => Answer::Error(Errno::from_raw(errno)),
        });
    }
    if kind != NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW {
        return Err(format!("unexpected message type {kind:#06x}"));
    }
    let list = attrs(body.get(NFGENMSG..).ok_or("short nfgenmsg")?)?;
    let reply = find(&list, CTA_TUPLE_REPLY).ok_or("no CTA_TUPLE_REPLY")?;
    let (src, dst) = parse_tuple(reply)?;
    // The reply direction runs remote -> local.
    Ok(Answer::OnWire(Conn {
        local: dst,
        remote: src,
    }))
}

/// How long to wait for the kernel's answer (it is queued before `sendto` returns).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// The connection `conn` (the socket's own ends) as it is on the wire in this thread's netns:
/// `None` when conntrack has no entry for it (nothing translates it here).
pub fn on_wire(conn: &Conn) -> Result<Option<Conn>, ConntrackError> {
    let netlink = |source: Errno| ConntrackError::Netlink {
        conn: *conn,
        source,
    };
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(netlink)?;
    let timeout = TimeVal::new(0, ANSWER_TIMEOUT.as_micros() as _);
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &timeout).map_err(netlink)?;
    let kernel = NetlinkAddr::new(0, 0);
    let msg = request(1, conn);
    socket::sendto(fd.as_raw_fd(), &msg, &kernel, MsgFlags::empty()).map_err(netlink)?;
    let mut buf = vec![0u8; 8192];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(netlink)?;
    match parse(&buf[..n]) {
        Ok(Answer::OnWire(c)) => Ok(Some(c)),
        Ok(Answer::NoEntry) => Ok(None),
        Ok(Answer::Error(e)) => Err(netlink(e)),
        Err(why) => Err(ConntrackError::Malformed { conn: *conn, why }),
    }
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
