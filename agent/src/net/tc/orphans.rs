//! Faultline trees no process holds: removing the one a journaled fault left (revert after a
//! restart) and sweeping a netns for any other (the sweep at start-up). A tree whose steering
//! program is still attached belongs to a live agent process and is left alone.

use std::path::{Path, PathBuf};

use super::iface::{self, IfaceError};
use super::qdisc::{self, handle_str, Rtnl, TcPort};
use super::{steer, sync, ROOT_HANDLE};
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

/// Removes Faultline roots (and legacy steering filters) in `netns` from interfaces not in
/// `keep`; a line per artifact removed (or per namespace that could not be checked).
pub fn sweep(netns: Option<PathBuf>, keep: Vec<String>) -> Vec<String> {
    let where_ = netns::describe(netns.as_deref());
    let w = where_.clone();
    let run = netns::run_in(
        netns.as_deref(),
        move || -> Result<Vec<String>, IfaceError> {
            let mut port = Rtnl::open()?;
            let links = port.links()?;
            let qdiscs = port.qdiscs()?;
            let mut lines = Vec::new();
            for (ifindex, name) in links.iter().filter(|(_, n)| !keep.contains(n)) {
                if steer::detach_stale(name).unwrap_or(false) {
                    lines.push(format!(
                        "sweep: removed a stale {} steering filter from interface {name} in {w}",
                        steer::PROGRAM
                    ));
                }
                if sync::root_of(&qdiscs, *ifindex) != sync::Root::Ours {
                    continue;
                }
                if steer::live_steering(name) {
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
