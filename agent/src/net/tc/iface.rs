//! One side (egress or ingress) of an interface under Faultline's control: its desired
//! [`Tree`] and the steering programs of its impaired classes, and [`Iface::converge`], which
//! moves the kernel (qdiscs, classes, steering links, and for ingress the IFB device that
//! carries the tree) to a new tree on the interface's netns thread. Converging to the same tree
//! again repairs whatever a failed attempt left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use faultline_core::fault::TrafficMatch;

use super::qdisc::{self, Rtnl, TcError, TcPort, TC_H_CLSACT};
use super::steer::{self, Hook, SteerError, Steering};
use super::tree::Tree;
use super::{classid, ifb, sync, Side};
use crate::net::control::ConnKey;
use crate::net::ebpf::{self, Counters, EbpfError};
use crate::net::netns::{self, NetnsError};
use crate::net::rules::{self, ProtectedTraffic, RuleSpec, Rules, RulesError};

#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Tc(#[from] TcError),
    #[error("steering into {class} on {interface}: {source}")]
    Steer {
        class: String,
        interface: String,
        #[source]
        source: Box<SteerError>,
    },
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("interface {interface} no longer exists in {netns}")]
    Gone { interface: String, netns: String },
}

/// A steering program and the match it was loaded with.
#[derive(Debug)]
struct Steer {
    matcher: TrafficMatch,
    prog: Steering,
}

/// One side of an interface Faultline holds a tree on.
#[derive(Debug)]
pub struct Iface {
    pub netns: Option<PathBuf>,
    /// The interface whose packets are impaired (where steering is attached).
    pub name: String,
    pub side: Side,
    /// The device that carries the tree: the interface itself (egress) or its IFB (ingress).
    pub dev: String,
    pub tree: Tree,
    steering: BTreeMap<u16, Steer>,
    /// The leaves as last set (what lets unchanged classes be left alone).
    applied: sync::Applied,
    /// Whether Faultline added the clsact qdisc (kernels without TCX) and must remove it.
    pub clsact_added: bool,
}

/// What a convergence changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converged {
    /// Whether the Faultline root was deleted (the tree is empty now).
    pub root_removed: bool,
}

/// The maps' contents for a class's match (the steering program acts on every match).
pub fn class_rules(
    matcher: &TrafficMatch,
    protected: &ProtectedTraffic,
) -> Result<Rules, RulesError> {
    rules::encode(
        &RuleSpec {
            matcher,
            peers: &[],
            probability: 1.0,
        },
        protected,
    )
}

/// Everything the netns thread needs to attach one class's steering.
struct Attach {
    minor: u16,
    matcher: TrafficMatch,
    rules: Rules,
    deadline_ns: u64,
}

impl Iface {
    /// The egress side of `name`.
    pub fn new(netns: Option<PathBuf>, name: &str) -> Self {
        Iface::on(netns, name, Side::Egress, name)
    }

    /// The `side` of `name`, its tree on `dev` (for ingress, the IFB [`ifb::name`]).
    pub fn on(netns: Option<PathBuf>, name: &str, side: Side, dev: &str) -> Self {
        Iface {
            netns,
            name: name.to_string(),
            side,
            dev: dev.to_string(),
            tree: Tree::default(),
            steering: BTreeMap::new(),
            applied: sync::Applied::new(),
            clsact_added: false,
        }
    }

    /// Packets matched, steered and spared by the steering program of class `minor`.
    pub fn counters(&self, minor: u16) -> Option<Result<Counters, SteerError>> {
        self.steering.get(&minor).map(|s| s.prog.counters())
    }

    /// Makes every steering program's `fl_session` hold exactly `keys`.
    pub fn set_session(&mut self, keys: &[ConnKey]) -> Result<(), IfaceError> {
        for (minor, s) in self.steering.iter_mut() {
            s.prog
                .set_session(keys)
                .map_err(|source| IfaceError::Steer {
                    class: qdisc::handle_str(classid(*minor)),
                    interface: self.name.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Rewrites every class's kernel deadline as `bound(latest deadline of its faults)`.
    pub fn arm(&mut self, bound: impl Fn(SystemTime) -> SystemTime) -> Result<(), IfaceError> {
        for c in &self.tree.classes {
            let (Some(s), Some(d)) = (self.steering.get_mut(&c.minor), c.deadline()) else {
                continue;
            };
            let ns = ebpf::monotonic_ns(bound(d))?;
            s.prog
                .set_deadline(ns)
                .map_err(|source| IfaceError::Steer {
                    class: qdisc::handle_str(classid(c.minor)),
                    interface: self.name.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Moves the kernel to `target` and, on success, makes it this interface's tree. Steering
    /// programs of classes `target` lacks are detached whatever happens; new ones never steer
    /// the control connections `session`.
    pub fn converge(
        &mut self,
        target: Tree,
        protected: &ProtectedTraffic,
        session: &[ConnKey],
        bound: impl Fn(SystemTime) -> SystemTime,
    ) -> Result<Converged, IfaceError> {
        // Steering that no longer fits a class of the target goes.
        let stale: Vec<u16> = self
            .steering
            .iter()
            .filter(|(minor, s)| {
                !target
                    .classes
                    .iter()
                    .any(|c| c.minor == **minor && c.matcher == s.matcher)
            })
            .map(|(m, _)| *m)
            .collect();
        let detach: Vec<Steer> = stale
            .iter()
            .filter_map(|m| self.steering.remove(m))
            .collect();
        let mut attach = Vec::new();
        for c in target
            .classes
            .iter()
            .filter(|c| !self.steering.contains_key(&c.minor))
        {
            let until = bound(c.deadline().unwrap_or_else(SystemTime::now));
            attach.push(Attach {
                minor: c.minor,
                matcher: c.matcher.clone(),
                rules: class_rules(&c.matcher, protected)?,
                deadline_ns: ebpf::monotonic_ns(until)?,
            });
        }
        let place = Place {
            name: self.name.clone(),
            side: self.side,
            dev: self.dev.clone(),
            where_: netns::describe(self.netns.as_deref()),
        };
        let clsact_added = self.clsact_added;
        let tree = target.clone();
        let session = session.to_vec();
        // Until this convergence succeeds, what is applied is unknown: a failure half way
        // makes the next attempt redo every class.
        let applied = std::mem::take(&mut self.applied);
        let (attached, applied, clsact_added) = netns::run_in(self.netns.as_deref(), move || {
            converge_here(
                &place,
                &tree,
                &applied,
                detach,
                attach,
                &session,
                clsact_added,
            )
        })??;
        self.clsact_added = clsact_added;
        self.applied = applied;
        for (minor, matcher, prog) in attached {
            self.steering.insert(minor, Steer { matcher, prog });
        }
        let root_removed = target.is_empty();
        self.tree = target;
        self.arm(bound)?;
        Ok(Converged { root_removed })
    }
}

impl Drop for Iface {
    /// Steering still held here is dropped outside the interface's netns. A TCX link just
    /// closes; a legacy filter would be deleted by ifindex in the wrong namespace, so it is
    /// left for the deadline and the sweep instead.
    fn drop(&mut self) {
        if !steer::tcx() {
            for (_, s) in std::mem::take(&mut self.steering) {
                std::mem::forget(s);
            }
        }
    }
}

type Attached = Vec<(u16, TrafficMatch, Steering)>;

/// Where a convergence acts.
struct Place {
    name: String,
    side: Side,
    dev: String,
    where_: String,
}

/// The netns-thread half of [`Iface::converge`].
fn converge_here(
    place: &Place,
    tree: &Tree,
    applied: &sync::Applied,
    detach: Vec<Steer>,
    attach: Vec<Attach>,
    session: &[ConnKey],
    clsact_added: bool,
) -> Result<(Attached, sync::Applied, bool), IfaceError> {
    // Detach first (here in the netns: a legacy filter is deleted by ifindex). For ingress
    // this also comes before the IFB goes: a redirect to a vanished device drops.
    release(detach);
    let mut port = Rtnl::open()?;
    if place.side == Side::Ingress {
        return converge_ingress(&mut port, place, tree, applied, attach, session);
    }
    let name = place.name.as_str();
    let ifindex = qdisc::ifindex(&mut port, name)?.ok_or_else(|| IfaceError::Gone {
        interface: name.to_string(),
        netns: place.where_.clone(),
    })?;
    let applied = sync::apply(&mut port, ifindex, name, tree, applied)?;
    let mut clsact_added = clsact_added;
    if !attach.is_empty() && !steer::tcx() && !clsact_added {
        let has_clsact = port
            .qdiscs()?
            .iter()
            .any(|q| q.ifindex == ifindex && q.parent == TC_H_CLSACT);
        clsact_added = !has_clsact;
    }
    let attached = attach_all(name, Hook::Egress, attach, session)?;
    if tree.is_empty() && clsact_added {
        remove_clsact(&mut port, ifindex)?;
        clsact_added = false;
    }
    Ok((attached, applied, clsact_added))
}

/// The ingress side: the tree on the IFB (made when missing, deleted with the last class),
/// then the redirects to it — in that order, so no packet is redirected to a device without
/// its tree.
fn converge_ingress(
    port: &mut Rtnl,
    place: &Place,
    tree: &Tree,
    applied: &sync::Applied,
    attach: Vec<Attach>,
    session: &[ConnKey],
) -> Result<(Attached, sync::Applied, bool), IfaceError> {
    if tree.is_empty() {
        ifb::delete(port, &place.dev)?;
        return Ok((Vec::new(), sync::Applied::new(), false));
    }
    if qdisc::ifindex(port, &place.name)?.is_none() {
        return Err(IfaceError::Gone {
            interface: place.name.clone(),
            netns: place.where_.clone(),
        });
    }
    let ifb_index = ifb::ensure(port, &place.dev)?;
    let applied = sync::apply(port, ifb_index, &place.dev, tree, applied)?;
    let attached = attach_all(
        &place.name,
        Hook::Ingress { ifb: ifb_index },
        attach,
        session,
    )?;
    Ok((attached, applied, false))
}

fn attach_all(
    name: &str,
    hook: Hook,
    attach: Vec<Attach>,
    session: &[ConnKey],
) -> Result<Attached, IfaceError> {
    let mut attached = Vec::new();
    for a in attach {
        let class = classid(a.minor);
        let prog = Steering::attach(name, hook, &a.rules, class, a.deadline_ns, session).map_err(
            |source| IfaceError::Steer {
                class: qdisc::handle_str(class),
                interface: name.to_string(),
                source: Box::new(source),
            },
        )?;
        attached.push((a.minor, a.matcher, prog));
    }
    Ok(attached)
}

/// Ends steering programs. With TCX each is disarmed first (deadline 0: from the next packet
/// on it steers and redirects nothing) and taken out of its kept link (a map write; the link
/// stays for the next fault), and its object is then closed on a thread of its own; a legacy
/// filter, or one that cannot be disarmed, is removed here before this returns.
fn release(detach: Vec<Steer>) {
    if detach.is_empty() || !steer::tcx() {
        return drop(detach);
    }
    let mut detach = detach;
    for s in detach.iter_mut() {
        if let Err(e) = s.prog.set_deadline(0) {
            tracing::warn!(error = %e, "cannot disarm a steering program; detaching now");
            return drop(detach);
        }
        s.prog.vacate();
    }
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Steer>>();
    let spawned = std::thread::Builder::new()
        .name("fl-steer-detach".into())
        .spawn(move || {
            let _t = tracing::debug_span!("ebpf_detach").entered();
            drop(rx.recv());
        });
    if spawned.is_err() {
        return drop(detach);
    }
    if let Err(std::sync::mpsc::SendError(detach)) = tx.send(detach) {
        drop(detach);
    }
}

/// Deletes the clsact qdisc Faultline added for legacy steering filters.
pub fn remove_clsact(port: &mut dyn TcPort, ifindex: u32) -> Result<(), TcError> {
    match port.qdisc_delete(ifindex, TC_H_CLSACT, 0xffff_0000) {
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        other => other,
    }
}
