//! Makes the kernel's qdiscs on one interface equal to a [`Tree`] through a [`TcPort`], as
//! desired state: every call replaces the whole Faultline tree (root, default class, impaired
//! classes, their leaves) and deletes Faultline classes the tree no longer has, so a retry
//! converges whatever a previous attempt left. An empty tree deletes the Faultline root, which
//! gives the interface its kernel-default root qdisc back.
//!
//! Faultline only replaces a root qdisc it can restore exactly: its own (`fa17:`) or one the
//! kernel made (handle `0:`: noqueue, pfifo_fast, fq_codel, mq, ... as `net.core.default_qdisc`
//! says), which the kernel makes again when the Faultline root is deleted. Any other root is
//! someone's configuration, and the fault is refused.

use std::collections::BTreeMap;

use super::encode;
use super::qdisc::{handle_str, Qdisc, TcError, TcPort, TC_H_ROOT};
use super::tree::{ImpairedClass, Tree};
use super::{
    class_options, classid, is_leaf_handle, netem_handle, tbf_handle, DEFAULT_MINOR, NETEM_LIMIT,
    ROOT_HANDLE, ROOT_MAJOR,
};

/// What is at the root of an interface now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// Faultline's HTB root.
    Ours,
    /// A root the kernel made, which it makes again once ours is deleted.
    KernelDefault { kind: String },
    /// Somebody's own root qdisc.
    Custom { kind: String, handle: u32 },
}

/// The root qdisc of `ifindex` among `qdiscs`.
pub fn root_of(qdiscs: &[Qdisc], ifindex: u32) -> Root {
    let root = qdiscs
        .iter()
        .find(|q| q.ifindex == ifindex && q.parent == TC_H_ROOT);
    match root {
        Some(q) if q.handle == ROOT_HANDLE && q.kind == "htb" => Root::Ours,
        Some(q) if q.handle == 0 => Root::KernelDefault {
            kind: q.kind.clone(),
        },
        Some(q) => Root::Custom {
            kind: q.kind.clone(),
            handle: q.handle,
        },
        // No root at all (a device without queues): deleting ours restores that.
        None => Root::KernelDefault {
            kind: "none".into(),
        },
    }
}

/// The root of `ifindex`, refusing an interface whose root Faultline could not restore.
pub fn check_root(port: &mut dyn TcPort, ifindex: u32, ifname: &str) -> Result<Root, TcError> {
    let root = root_of(&port.qdiscs()?, ifindex);
    if let Root::Custom { kind, handle } = &root {
        return Err(TcError::Refused(format!(
            "interface {ifname} has a custom root qdisc {kind} (handle {}); Faultline will not replace it",
            handle_str(*handle)
        )));
    }
    Ok(root)
}

/// Deletes the Faultline root of `ifindex` (and with it every class and leaf); true when
/// there was one.
pub fn remove(port: &mut dyn TcPort, ifindex: u32) -> Result<bool, TcError> {
    if root_of(&port.qdiscs()?, ifindex) != Root::Ours {
        return Ok(false);
    }
    match port.qdisc_delete(ifindex, TC_H_ROOT, ROOT_HANDLE) {
        Ok(()) => Ok(true),
        // Gone in between (the interface or the qdisc): nothing left to remove.
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One qdisc of a class's leaf chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub parent: u32,
    pub handle: u32,
    pub kind: &'static str,
    pub options: Vec<u8>,
}

/// The leaves of every impaired class as last set, by class minor: what lets a later
/// convergence leave unchanged classes alone and change the others exactly.
pub type Applied = BTreeMap<u16, Vec<Leaf>>;

/// The leaves class `c` needs, parent first: netem, netem + tbf child, or tbf alone.
pub fn leaves(c: &ImpairedClass) -> Vec<Leaf> {
    let class = classid(c.minor);
    let netem = c.netem().map(|n| Leaf {
        parent: class,
        handle: netem_handle(c.minor),
        kind: "netem",
        options: encode::netem_explicit(&n, NETEM_LIMIT),
    });
    let tbf_parent = if netem.is_some() {
        netem_handle(c.minor) | 1
    } else {
        class
    };
    let tbf = c.tbf().map(|t| Leaf {
        parent: tbf_parent,
        handle: tbf_handle(c.minor),
        kind: "tbf",
        options: encode::tbf(&t),
    });
    netem.into_iter().chain(tbf).collect()
}

fn has_table(chain: &[Leaf]) -> bool {
    chain
        .iter()
        .any(|l| l.kind == "netem" && encode::netem_has_table(&l.options))
}

/// Makes the Faultline tree of `ifindex` equal to `tree` (an empty tree removes it), given
/// what was `applied` before (empty when unknown); returns what is applied now.
///
/// A class whose leaves are as applied is left alone (its queues keep their packets). A class
/// whose leaves keep their shape is changed in place with every parameter explicit. A new
/// shape (netem <-> tbf <-> netem + tbf), a netem losing its delay table, or leaves this
/// process did not set, are deleted and made again.
pub fn apply(
    port: &mut dyn TcPort,
    ifindex: u32,
    ifname: &str,
    tree: &Tree,
    applied: &Applied,
) -> Result<Applied, TcError> {
    if tree.is_empty() {
        remove(port, ifindex)?;
        return Ok(Applied::new());
    }
    if check_root(port, ifindex, ifname)? != Root::Ours {
        port.qdisc_replace(
            ifindex,
            TC_H_ROOT,
            ROOT_HANDLE,
            "htb",
            &encode::htb_root(DEFAULT_MINOR),
        )?;
    }
    let class_opts = encode::htb_class(&class_options());
    let classes: Vec<u32> = port.classes(ifindex)?.iter().map(|c| c.handle).collect();
    let qdiscs: Vec<Qdisc> = port
        .qdiscs()?
        .into_iter()
        .filter(|q| q.ifindex == ifindex)
        .collect();
    let mut wanted_classes = vec![classid(DEFAULT_MINOR)];
    wanted_classes.extend(tree.classes.iter().map(|c| classid(c.minor)));
    for id in wanted_classes.iter().filter(|id| !classes.contains(id)) {
        port.class_replace(ifindex, ROOT_HANDLE, *id, "htb", &class_opts)?;
    }
    let mut now = Applied::new();
    for c in &tree.classes {
        let want = leaves(c);
        let have = current_leaves(&qdiscs, classid(c.minor));
        let want_handles: Vec<u32> = want.iter().map(|l| l.handle).collect();
        let before = applied.get(&c.minor).filter(|_| have == want_handles);
        match before {
            Some(b) if *b == want => {}
            Some(b) if !has_table(b) || has_table(&want) => {
                for l in want.iter().filter(|l| !b.contains(l)) {
                    port.qdisc_replace(ifindex, l.parent, l.handle, l.kind, &l.options)?;
                }
            }
            _ => {
                if let Some(first) = have.first().filter(|h| is_leaf_handle(**h)) {
                    port.qdisc_delete(ifindex, classid(c.minor), *first)?;
                }
                for l in &want {
                    port.qdisc_replace(ifindex, l.parent, l.handle, l.kind, &l.options)?;
                }
            }
        }
        now.insert(c.minor, want);
    }
    for stale in classes
        .iter()
        .filter(|h| **h >> 16 == u32::from(ROOT_MAJOR) && !wanted_classes.contains(h))
    {
        port.class_delete(ifindex, ROOT_HANDLE, *stale)?;
    }
    Ok(now)
}

/// Handles of the qdisc chain under `class`: its leaf, then the leaf's child (netem's `:1`).
fn current_leaves(qdiscs: &[Qdisc], class: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut parent = class;
    while let Some(q) = qdiscs.iter().find(|q| q.parent == parent && q.handle != 0) {
        out.push(q.handle);
        if out.len() == 2 {
            break;
        }
        parent = q.handle | 1;
    }
    out
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
