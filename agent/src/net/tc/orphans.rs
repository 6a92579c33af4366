//! Faultline trees no process holds: removing the one a journaled fault left (revert after a
//! restart) and sweeping a netns for any other (the sweep at start-up): HTB roots on
//! interfaces (egress) and IFB devices `flifb<N>` (ingress). A tree whose steering program is
//! still attached (`fl_steer_eg` on the interface, `fl_steer_in` on the IFB's interface N)
//! belongs to a live agent process and is left alone.

use std::path::{Path, PathBuf};

use super::iface::{self, IfaceError};
use super::qdisc::{self, handle_str, Rtnl, TcPort};
use super::{ifb, steer, sync, Side, ROOT_HANDLE};
use crate::net::netns;

/// Where `ip netns` (and CNI plugins) keep named network namespaces.
pub const NAMED_NETNS_DIR: &str = "/run/netns";

/// The namespaces under `dir` (empty when it does not exist).
pub fn named_netns(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    out
}

/// Deletes the Faultline root of `interface` in `netns`, any legacy steering filter on it,
/// and the clsact qdisc when Faultline added it. True when something was removed.
pub fn remove(
    netns: Option<&Path>,
    interface: &str,
    clsact_added: bool,
) -> Result<bool, IfaceError> {
    let name = interface.to_string();
    netns::run_in(netns, move || -> Result<bool, IfaceError> {
        let mut port = Rtnl::open()?;
        let Some(ifindex) = qdisc::ifindex(&mut port, &name)? else {
            return Ok(false);
        };
        let tree = sync::remove(&mut port, ifindex)?;
        let filter = steer::detach_stale(&name).unwrap_or(false);
        if clsact_added {
            iface::remove_clsact(&mut port, ifindex)?;
        }
        Ok(tree || filter)
    })?
}

/// Deletes the IFB `dev` (the ingress tree) a journaled fault left in `netns`. True when it
/// was there. No redirect to it is left: the TCX link died with the process that made it.
pub fn remove_ingress(netns: Option<&Path>, dev: &str) -> Result<bool, IfaceError> {
    let dev = dev.to_string();
    netns::run_in(netns, move || -> Result<bool, IfaceError> {
        let mut port = Rtnl::open()?;
        Ok(ifb::delete(&mut port, &dev)?)
    })?
}

/// Removes Faultline roots (and legacy steering filters) in `netns` from interfaces not in
/// `keep`; a line per artifact removed (or per namespace that could not be checked).
pub fn sweep(netns: Option<PathBuf>, keep: Vec<String>) -> Vec<String> {
    let where_ = netns::describe(netns.as_deref());
    let w = where_.clone();
    let run = netns::run_in(
        netns.as_deref(),
        move || -> Result<Vec<String>, IfaceError> {
            let mut port = Rtnl::open()?;
            let mut lines = sweep_ifbs(&mut port, &keep, &w)?;
            let links = port.links()?;
            let qdiscs = port.qdiscs()?;
            // IFB trees are the ingress sweep's (a live one is kept whole).
            let candidates = links
                .iter()
                .filter(|(_, n)| !keep.contains(n) && ifb::owner_of(n).is_none());
            for (ifindex, name) in candidates {
                if steer::detach_stale(name).unwrap_or(false) {
                    lines.push(format!(
                        "sweep: removed a stale {} steering filter from interface {name} in {w}",
                        steer::PROGRAM
                    ));
                }
                if sync::root_of(&qdiscs, *ifindex) != sync::Root::Ours {
                    continue;
                }
                if steer::live_steering(name, Side::Egress) {
                    tracing::info!(interface = %name, netns = %w, "Faultline qdisc tree steered by a live process (another agent); left alone");
                    continue;
                }
                if sync::remove(&mut port, *ifindex)? {
                    lines.push(format!(
                        "sweep: removed the Faultline qdisc tree {} (htb) from interface {name} in {w}",
                        handle_str(ROOT_HANDLE)
                    ));
                }
            }
            Ok(lines)
        },
    );
    match run {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => vec![format!("sweep: cannot check the qdiscs of {where_}: {e}")],
        Err(e) => vec![format!("sweep: cannot enter {where_}: {e}")],
    }
}

/// Deletes the Faultline IFB devices in this netns that `keep` does not name and whose
/// interface has no live `fl_steer_in` (so nothing redirects to them); a line per device.
fn sweep_ifbs(port: &mut Rtnl, keep: &[String], w: &str) -> Result<Vec<String>, IfaceError> {
    let links = port.links_with_kind()?;
    let mut lines = Vec::new();
    for l in &links {
        let Some(owner) = ifb::owner_of(&l.name) else {
            continue;
        };
        if keep.contains(&l.name) || l.kind.as_deref() != Some("ifb") {
            continue;
        }
        let owner_name = links.iter().find(|o| o.ifindex == owner).map(|o| &o.name);
        if let Some(o) = owner_name {
            if steer::live_steering(o, Side::Ingress) {
                tracing::info!(device = %l.name, interface = %o, netns = %w, "Faultline ingress tree steered by a live process (another agent); left alone");
                continue;
            }
        }
        if ifb::delete(port, &l.name)? {
            lines.push(format!(
                "sweep: removed the Faultline ingress device {} (ifb, with its qdisc tree {}) of interface {} in {w}",
                l.name,
                handle_str(ROOT_HANDLE),
                owner_name.map_or_else(|| format!("index {owner} (gone)"), |n| n.clone())
            ));
        }
    }
    Ok(lines)
}
