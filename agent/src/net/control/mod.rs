//! The agent's own control channel: its session connections to the coordinator are never
//! matched by its own network faults, whatever address they reach the coordinator by.
//!
//! An address resolved once cannot say which packets are the session's: on Kubernetes
//! `--coordinator` names a Service, and after kube-proxy's DNAT (and MASQUERADE, with a random
//! source port) the packets on the wire carry the coordinator pod's address and ports nobody
//! configured. So the exemption is by the socket:
//!
//! - every session socket carries [`SESSION_MARK`] (`SO_MARK`), so every packet it sends does
//!   too, from the first SYN, through any NAT (egress hooks; cgroup ingress reads the receiving
//!   socket's mark);
//! - an arriving packet has no socket and no mark yet when TC ingress sees it, so each
//!   connection is also registered here by its TCP 4-tuple as it is on the wire (the socket's own
//!   and the translated one from conntrack, [`conntrack`]), and every loaded program's
//!   `fl_session` map holds the registered tuples, both directions ([`ConnKey`]).
//!
//! [`dial`] opens such a connection and returns it with its [`Registration`]; dropping the
//! registration (the connection closed) takes its tuples out of every map again. Holders of
//! loaded programs subscribe ([`ChannelHolder`]) and rewrite their maps at every change.

pub mod conntrack;
pub mod dial;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// `SO_MARK` of the session sockets (`FL_SESSION_MARK` in `ebpf/common.h`). Its bits avoid the
/// marks kube-proxy (0x4000, 0x8000), Cilium (0x0f00 and the upper half), Calico and Weave (the
/// upper half) and the AWS VPC CNI (0x80) use; a node with an `ip rule ... fwmark` matching it
/// would route the session by that rule.
pub const SESSION_MARK: u32 = 0x3017;

/// Size of `struct fl_conn_key`.
pub const KEY_SIZE: usize = 40;
/// Capacity of `fl_session` (`FL_MAX_SESSION`).
pub const MAX_KEYS: usize = 64;

/// One direction of a TCP connection as it is on the wire: `struct fl_conn_key` = family u8
/// (4 or 6), 3 pad bytes, source port u16, destination port u16 (host order), source address,
/// destination address (16 bytes each, network order, IPv4 in the first four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl ConnKey {
    pub fn to_bytes(&self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0] = if self.src.is_ipv4() { 4 } else { 6 };
        b[4..6].copy_from_slice(&self.src.port().to_ne_bytes());
        b[6..8].copy_from_slice(&self.dst.port().to_ne_bytes());
        put_addr(&mut b[8..24], self.src);
        put_addr(&mut b[24..40], self.dst);
        b
    }
}

fn put_addr(to: &mut [u8], a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => to[..4].copy_from_slice(&v4.ip().octets()),
        SocketAddr::V6(v6) => to.copy_from_slice(&v6.ip().octets()),
    }
}

/// A connection's two ends as seen at one place (the socket, or the wire after NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Conn {
    /// Both directions: what the agent sends (local -> remote) and what it receives.
    pub fn keys(&self) -> [ConnKey; 2] {
        [
            ConnKey {
                src: self.local,
                dst: self.remote,
            },
            ConnKey {
                src: self.remote,
                dst: self.local,
            },
        ]
    }
}

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Something holding loaded programs whose `fl_session` maps follow the channel.
pub trait ChannelHolder: Send + Sync {
    /// The registered connections are now `keys`: make every held map hold exactly these.
    /// Called with the channel's notification lock held (so calls never overtake each other);
    /// a few bpf syscalls per held program.
    fn channel_changed(&self, keys: &[ConnKey]);
}

#[derive(Default)]
struct Inner {
    /// Serialises changes and their notifications: the last notification is the latest state.
    notify: Mutex<()>,
    conns: Mutex<BTreeMap<u64, Vec<ConnKey>>>,
    next_id: AtomicU64,
    holders: Mutex<Vec<Weak<dyn ChannelHolder>>>,
}

/// The registry of this process's control connections. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ControlChannel(Arc<Inner>);

impl std::fmt::Debug for ControlChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlChannel")
            .field("keys", &self.keys())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ControlChannel {
    /// A registry of its own (tests; the daemon uses [`ControlChannel::process`]).
    pub fn new() -> Self {
        ControlChannel::default()
    }

    /// This process's registry: the session transport registers into it, the network drivers
    /// of the daemon follow it. The mark is per process too.
    pub fn process() -> ControlChannel {
        static PROCESS: OnceLock<ControlChannel> = OnceLock::new();
        PROCESS.get_or_init(ControlChannel::new).clone()
    }

    /// Every registered key, sorted, without duplicates.
    pub fn keys(&self) -> Vec<ConnKey> {
        let mut keys: Vec<ConnKey> = lock(&self.0.conns).values().flatten().copied().collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Registers a connection seen as `views` (the socket's ends, the translated ones) and
    /// updates every holder's maps before returning.
    pub fn register(&self, views: &[Conn]) -> Registration {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let keys: Vec<ConnKey> = views.iter().flat_map(Conn::keys).collect();
        self.change(|conns| {
            conns.insert(id, keys);
        });
        Registration {
            channel: Arc::downgrade(&self.0),
            id,
        }
    }

    /// Registers a holder (kept weakly; dropped holders are forgotten).
    pub fn subscribe(&self, holder: Weak<dyn ChannelHolder>) {
        lock(&self.0.holders).push(holder);
    }

    fn change(&self, f: impl FnOnce(&mut BTreeMap<u64, Vec<ConnKey>>)) {
        let _serial = lock(&self.0.notify);
        f(&mut lock(&self.0.conns));
        let keys = self.keys();
        let holders: Vec<Arc<dyn ChannelHolder>> = {
            let mut hs = lock(&self.0.holders);
            hs.retain(|w| w.strong_count() > 0);
            hs.iter().filter_map(Weak::upgrade).collect()
        };
        for h in holders {
            h.channel_changed(&keys);
        }
    }
}

/// One registered connection; dropping it unregisters it (the connection is gone).
#[derive(Debug)]
pub struct Registration {
    channel: Weak<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.channel.upgrade() {
            let id = self.id;
            ControlChannel(inner).change(|conns| {
                conns.remove(&id);
            });
        }
    }
}

#[cfg(test)]
mod tests;
