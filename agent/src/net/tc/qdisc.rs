//! The one port through which Faultline changes qdiscs and classes ([`TcPort`]) and its
//! rtnetlink implementation ([`Rtnl`]): replace, delete and dump qdiscs and classes, list
//! links. `Rtnl` binds to the network namespace of the thread that opens it, so open it on the
//! netns thread (`net::netns::run_in`), never on an async executor's thread.

use std::io;

use futures::StreamExt;
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

/// `TC_H_ROOT`: the parent of an interface's root qdisc.
pub const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the parent of the clsact/ingress qdisc.
pub const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TCA_OPTIONS`.
const TCA_OPTIONS: u16 = 2;

/// `major:minor` as tc prints it (`fa17:1`, `fa17:`).
pub fn handle_str(h: u32) -> String {
    match (h >> 16, h & 0xffff) {
        (maj, 0) => format!("{maj:x}:"),
        (maj, min) => format!("{maj:x}:{min:x}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("opening an rtnetlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },
    /// A change Faultline will not make (reported to the user as is).
    #[error("{0}")]
    Refused(String),
}

impl TcError {
    /// The errno of a failed netlink request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TcError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A qdisc as the kernel dumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// The raw `TCA_OPTIONS` payload.
    pub options: Vec<u8>,
}

/// A class as the kernel dumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    pub options: Vec<u8>,
}

/// Everything Faultline does to qdiscs and classes, in one network namespace.
pub trait TcPort {
    /// `(ifindex, name)` of every interface.
    fn links(&mut self) -> Result<Vec<(u32, String)>, TcError>;
    /// Every qdisc of every interface.
    fn qdiscs(&mut self) -> Result<Vec<Qdisc>, TcError>;
    fn classes(&mut self, ifindex: u32) -> Result<Vec<Class>, TcError>;
    /// Creates or replaces the qdisc `handle` at `parent` (`tc qdisc replace`).
    fn qdisc_replace(
        &mut self,
        ifindex: u32,
        parent: u32,
        handle: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError>;
    fn qdisc_delete(&mut self, ifindex: u32, parent: u32, handle: u32) -> Result<(), TcError>;
    /// Creates or replaces the class `classid` (`tc class replace`).
    fn class_replace(
        &mut self,
        ifindex: u32,
        parent: u32,
        classid: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError>;
    fn class_delete(&mut self, ifindex: u32, parent: u32, classid: u32) -> Result<(), TcError>;
}

/// The ifindex of `name`, from [`TcPort::links`].
pub fn ifindex(port: &mut dyn TcPort, name: &str) -> Result<Option<u32>, TcError> {
    Ok(port
        .links()?
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(i, _)| i))
}

/// rtnetlink over the `rtnetlink` crate, driven by a private single-threaded runtime.
pub struct Rtnl {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rtnl")
    }
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace. The thread must not be
    /// inside an async runtime.
    pub fn open() -> Result<Self, TcError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(TcError::Open)?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(TcError::Open)?
        };
        rt.spawn(conn);
        Ok(Rtnl { rt, handle })
    }

    pub(super) fn request(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, TcError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | flags;
        let mut handle = self.handle.clone();
        let fail = |source: io::Error| TcError::Netlink { op: op(), source };
        self.rt.block_on(async move {
            let mut replies = handle
                .request(req)
                .map_err(|e| fail(io::Error::other(e.to_string())))?;
            let mut out = Vec::new();
            while let Some(reply) = replies.next().await {
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(fail(e.to_io())),
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    fn tc_message(ifindex: u32, parent: u32, handle: u32, attrs: Vec<TcAttribute>) -> TcMessage {
        let mut m = TcMessage::with_index(ifindex as i32);
        m.header.parent = TcHandle::from(parent);
        m.header.handle = TcHandle::from(handle);
        m.attributes = attrs;
        m
    }

    fn kind_and_options(kind: &str, options: &[u8]) -> Vec<TcAttribute> {
        vec![
            TcAttribute::Kind(kind.to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options.to_vec())),
        ]
    }
}

/// Kind and raw `TCA_OPTIONS` of a dumped qdisc or class.
fn parse_tc(m: &TcMessage) -> (String, Vec<u8>) {
    let mut kind = String::new();
    let mut options = Vec::new();
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => kind = k.clone(),
            TcAttribute::Options(opts) => {
                for o in opts {
                    if let TcOption::Other(nla) = o {
                        options = nla_value(nla);
                    }
                }
            }
            _ => {}
        }
    }
    (kind, options)
}

/// The payload of an attribute (`DefaultNla` has no accessor: emit it and skip the header).
fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    use netlink_packet_core::{Emitable, Nla};
    let mut buf = vec![0u8; nla.buffer_len()];
    nla.emit(&mut buf);
    buf[4..4 + nla.value_len()].to_vec()
}

pub(super) fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

const CREATE: u16 = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;

impl TcPort for Rtnl {
    fn links(&mut self) -> Result<Vec<(u32, String)>, TcError> {
        Ok(self
            .links_with_kind()?
            .into_iter()
            .map(|l| (l.ifindex, l.name))
            .collect())
    }

    fn qdiscs(&mut self) -> Result<Vec<Qdisc>, TcError> {
        let msgs = self.request(
            || "listing qdiscs".into(),
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => {
                    let (kind, options) = parse_tc(q);
                    Some(Qdisc {
                        ifindex: q.header.index as u32,
                        handle: q.header.handle.into(),
                        parent: q.header.parent.into(),
                        kind,
                        options,
                    })
                }
                _ => None,
            })
            .collect())
    }

    fn classes(&mut self, ifindex: u32) -> Result<Vec<Class>, TcError> {
        let msgs = self.request(
            || format!("listing the classes of interface {ifindex}"),
            RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(ifindex as i32)),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c) if c.header.index as u32 == ifindex => {
                    let (kind, options) = parse_tc(c);
                    Some(Class {
                        handle: c.header.handle.into(),
                        parent: c.header.parent.into(),
                        kind,
                        options,
                    })
                }
                _ => None,
            })
            .collect())
    }

    fn qdisc_replace(
        &mut self,
        ifindex: u32,
        parent: u32,
        handle: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError> {
        let m = Self::tc_message(
            ifindex,
            parent,
            handle,
            Self::kind_and_options(kind, options),
        );
        self.request(
            || {
                format!(
                    "replacing qdisc {kind} {} (parent {}) on interface {ifindex}",
                    handle_str(handle),
                    handle_str(parent)
                )
            },
            RouteNetlinkMessage::NewQueueDiscipline(m),
            CREATE,
        )
        .map(drop)
    }

    fn qdisc_delete(&mut self, ifindex: u32, parent: u32, handle: u32) -> Result<(), TcError> {
        let m = Self::tc_message(ifindex, parent, handle, Vec::new());
        self.request(
            || {
                format!(
                    "deleting qdisc {} on interface {ifindex}",
                    handle_str(handle)
                )
            },
            RouteNetlinkMessage::DelQueueDiscipline(m),
            NLM_F_ACK,
        )
        .map(drop)
    }

    fn class_replace(
        &mut self,
        ifindex: u32,
        parent: u32,
        classid: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError> {
        let m = Self::tc_message(
            ifindex,
            parent,
            classid,
            Self::kind_and_options(kind, options),
        );
        self.request(
            || {
                format!(
                    "replacing class {kind} {} on interface {ifindex}",
                    handle_str(classid)
                )
            },
            RouteNetlinkMessage::NewTrafficClass(m),
            CREATE,
        )
        .map(drop)
    }

    fn class_delete(&mut self, ifindex: u32, parent: u32, classid: u32) -> Result<(), TcError> {
        let m = Self::tc_message(ifindex, parent, classid, Vec::new());
        self.request(
            || {
                format!(
                    "deleting class {} on interface {ifindex}",
                    handle_str(classid)
                )
            },
            RouteNetlinkMessage::DelTrafficClass(m),
            NLM_F_ACK,
        )
        .map(drop)
    }
}
