//! The IFB device that carries the ingress tree of an interface: packets the interface receives
//! are redirected by `fl_steer_in` to the IFB's egress, where the Faultline HTB tree impairs
//! them, and the IFB hands them back to the stack as received on the interface. One IFB per
//! interface, in the interface's netns, named after its ifindex ([`name`]) so the sweep can
//! tell whose it is. Made and deleted over rtnetlink (the `rtnetlink` crate's ifb builder).

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::LinkIfb;

use super::qdisc::{Rtnl, TcError};

/// Every Faultline IFB's name starts with this.
pub const PREFIX: &str = "flifb";

/// The IFB of the interface with index `ifindex` (at most 15 characters: `flifb4294967295`).
pub fn name(ifindex: u32) -> String {
    format!("{PREFIX}{ifindex}")
}

/// The ifindex of the interface a Faultline IFB name belongs to (`flifb7` -> 7).
pub fn owner_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An interface as a link dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// The `IFLA_INFO_KIND` (`ifb`, `veth`, ...), when the link has one.
    pub kind: Option<String>,
}

fn kind_of(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

impl Rtnl {
    /// Every interface with its kind.
    pub fn links_with_kind(&mut self) -> Result<Vec<Link>, TcError> {
        let msgs = self.request(
            || "listing interfaces".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link {
                    ifindex: l.header.index,
                    name: super::qdisc::link_name(l)?,
                    kind: kind_of(l),
                }),
                _ => None,
            })
            .collect())
    }

    /// `ip link add NAME up type ifb`.
    fn ifb_add(&mut self, name: &str) -> Result<(), TcError> {
        let msg = LinkIfb::new(name).up().build();
        self.request(
            || format!("adding the ifb device {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `ip link del` by index.
    fn link_delete(&mut self, ifindex: u32, name: &str) -> Result<(), TcError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        self.request(
            || format!("deleting the ifb device {name}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }
}

/// The IFB `name`, made (up) when missing; its ifindex. A device of that name that is not an
/// IFB is someone else's, and the fault is refused.
pub fn ensure(port: &mut Rtnl, name: &str) -> Result<u32, TcError> {
    if let Some(l) = port.links_with_kind()?.into_iter().find(|l| l.name == name) {
        check_kind(&l)?;
        return Ok(l.ifindex);
    }
    port.ifb_add(name)?;
    port.links_with_kind()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.ifindex)
        .ok_or_else(|| TcError::Refused(format!("the ifb device {name} vanished once made")))
}

/// Refuses a device that carries an IFB's name without being one.
pub fn check_kind(l: &Link) -> Result<(), TcError> {
    match l.kind.as_deref() {
        Some("ifb") => Ok(()),
        other => Err(TcError::Refused(format!(
            "interface {} exists and is {} device, not an ifb; Faultline needs that name for the ingress tree and will not touch it",
            l.name,
            other.map_or("a plain".to_string(), |k| format!("a {k}"))
        ))),
    }
}

/// Deletes the IFB `name` (its qdiscs go with it); true when it was there. Detach the
/// redirect to it first: packets redirected to a vanished ifindex are dropped.
pub fn delete(port: &mut Rtnl, name: &str) -> Result<bool, TcError> {
    let Some(l) = port.links_with_kind()?.into_iter().find(|l| l.name == name) else {
        return Ok(false);
    };
    if l.kind.as_deref() != Some("ifb") {
        return Ok(false);
    }
    match port.link_delete(l.ifindex, name) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_parse_back() {
        assert_eq!(name(7), "flifb7");
        assert!(name(u32::MAX).len() <= 15, "{}", name(u32::MAX));
        assert_eq!(owner_of("flifb7"), Some(7));
        assert_eq!(owner_of(&name(u32::MAX)), Some(u32::MAX));
        for other in ["flifb", "flifbx", "flifb-1", "ifb0", "flifb7a"] {
            assert_eq!(owner_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_device_of_another_kind_is_refused_by_name_and_kind() {
        let veth = Link {
            ifindex: 3,
            name: "flifb2".into(),
            kind: Some("veth".into()),
        };
        assert_eq!(
            check_kind(&veth).expect_err("veth").to_string(),
            "interface flifb2 exists and is a veth device, not an ifb; Faultline needs that name for the ingress tree and will not touch it"
        );
        let ifb = Link {
            kind: Some("ifb".into()),
            ..veth
        };
        assert!(check_kind(&ifb).is_ok());
    }
}
