//! The `network` fault driver: netem and tbf leaves in a Faultline HTB tree on an interface of
//! the target's netns (one tree per interface and direction, composed from every network fault
//! there and set as desired state), with a steering program that sends only matching packets
//! into the impaired class while the deadline (cut to the lease) is ahead. Egress trees hang on
//! the interface; ingress trees on an IFB device the interface's ingress steering redirects
//! matching packets to (`direction: both` is a member of both trees). Revert gives the
//! interface its kernel-default root qdisc back and deletes the IFB with its last fault; the
//! sweep removes Faultline roots and IFBs nobody holds. Plan refuses, before any change, what
//! cannot be applied or restored exactly.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use faultline_core::fault::{Fault, FaultKind, FaultSpec, NetworkFault, Target};

use super::control::{ChannelHolder, ConnKey, ControlChannel};
use super::netns::{self, NetnsError};
use super::rules::ProtectedTraffic;
use super::tc::iface::{self, Iface, IfaceError};
use super::tc::qdisc::{self, handle_str, Rtnl, TcError};
use super::tc::tree::Member;
use super::tc::{classid, ifb, orphans, sync, Side};
use super::{KernelLease, NetConfig, Renewable};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::host::target::Resolver;

/// Health counter names (both sides together; each side also as `egress_`/`ingress_` + name).
pub const MATCHED: &str = "packets_matched";
pub const STEERED: &str = "packets_steered";
/// Packets of the agent's own session the match alone would have steered (left alone).
pub const SPARED: &str = "session_packets_spared";

#[path = "network_recipe.rs"]
mod recipe;
use recipe::Key;
pub use recipe::{sides, NetworkRecipe};

/// The driver for kind `network`.
pub struct NetworkDriver {
    resolver: Resolver,
    protected: ProtectedTraffic,
    lease: KernelLease,
    control: ControlChannel,
    ifaces: Mutex<BTreeMap<Key, Iface>>,
}

/// The `network` driver, subscribed to `cfg.lease` and `cfg.control`.
pub fn drivers(cfg: &NetConfig) -> Vec<Arc<dyn Driver>> {
    let d = Arc::new(NetworkDriver::new(cfg));
    let weak: Weak<NetworkDriver> = Arc::downgrade(&d);
    cfg.lease.subscribe(weak.clone());
    cfg.control.subscribe(weak);
    vec![d]
}

fn netns_err(e: NetnsError) -> DriverError {
    match e {
        NetnsError::UnknownInterface { .. }
        | NetnsError::NoDefaultRoute { .. }
        | NetnsError::Open { .. } => DriverError::Refused(e.to_string()),
        other => DriverError::Other(other.to_string()),
    }
}

fn tc_err(e: TcError) -> DriverError {
    match e {
        TcError::Refused(m) => DriverError::Refused(m),
        TcError::Netlink { op, source }
            if op.contains("netem") && source.raw_os_error() == Some(libc::ENOENT) =>
        {
            DriverError::Other(format!(
                "{op}: this kernel has no netem qdisc (module sch_netem; on Debian it ships with the linux-image package): {source}"
            ))
        }
        other => DriverError::Other(other.to_string()),
    }
}

fn iface_err(e: IfaceError) -> DriverError {
    match e {
        IfaceError::Netns(n) => netns_err(n),
        IfaceError::Tc(t) => tc_err(t),
        IfaceError::Rules(r) => DriverError::Refused(r.to_string()),
        IfaceError::Gone { .. } => DriverError::Refused(e.to_string()),
        other => DriverError::Other(other.to_string()),
    }
}

fn network_fault(spec: &FaultSpec) -> Result<&NetworkFault, DriverError> {
    match &spec.fault {
        Fault::Network(n) => Ok(n),
        other => Err(DriverError::Other(format!(
            "the network driver got a {} fault",
            other.kind()
        ))),
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl NetworkDriver {
    pub fn new(cfg: &NetConfig) -> Self {
        NetworkDriver {
            resolver: Resolver::new(&cfg.host),
            protected: cfg.protected.clone(),
            lease: cfg.lease.clone(),
            control: cfg.control.clone(),
            ifaces: Mutex::new(BTreeMap::new()),
        }
    }

    fn ifaces(&self) -> MutexGuard<'_, BTreeMap<Key, Iface>> {
        self.ifaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The netns a target's network faults act in (None = the agent's own).
    fn netns_of(&self, target: &Target) -> Result<Option<PathBuf>, DriverError> {
        match target {
            Target::Host => Ok(None),
            Target::Cgroup(p) => Err(DriverError::Refused(format!(
                "target: cgroup {p} has no network namespace of its own; target the host, a netns, a pid or a container for a network fault"
            ))),
            other => self.resolver.resolve(other)?.netns.map(Some).ok_or_else(|| {
                DriverError::Refused(format!("{} has no network namespace", other.describe()))
            }),
        }
    }

    /// Whether the recipe's netns is still the one it was planned in.
    fn same_netns(data: &NetworkRecipe) -> bool {
        match (&data.netns, data.netns_inode) {
            (Some(p), Some(ino)) => inode(p) == Some(ino),
            (Some(p), None) => p.exists(),
            (None, _) => true,
        }
    }

    /// Removes the fault from the tree of `side`; true when it was there to remove.
    fn revert_side(&self, data: &NetworkRecipe, side: Side) -> Result<bool, DriverError> {
        let key = data.key(side);
        let mut ifaces = self.ifaces();
        if !Self::same_netns(data) {
            // The namespace is gone (and its qdiscs and IFB with it) or is another one now:
            // forget the fault, and the side with its last fault.
            if let Some(i) = ifaces.get_mut(&key) {
                i.tree = i.tree.without(&data.fault_id);
                if i.tree.is_empty() {
                    ifaces.remove(&key);
                }
            }
            return Ok(false);
        }
        let Some(i) = ifaces.get_mut(&key) else {
            drop(ifaces);
            let ns = data.netns.as_deref();
            return match side {
                Side::Egress => orphans::remove(ns, &data.interface, data.clsact_added),
                Side::Ingress => orphans::remove_ingress(ns, data.dev(side)?),
            }
            .map_err(iface_err);
        };
        let held = i.tree.class_of(&data.fault_id).is_some();
        let target = i.tree.without(&data.fault_id);
        let lease = self.lease.clone();
        let done = i
            .converge(target, &self.protected, &self.control.keys(), |d| {
                lease.bound(d)
            })
            .map_err(iface_err)?;
        if done.root_removed {
            ifaces.remove(&key);
        }
        Ok(held)
    }

    fn member(ctx: &FaultCtx, n: &NetworkFault) -> Member {
        Member {
            fault_id: ctx.fault_id.clone(),
            matcher: n.matcher.clone(),
            netem: n.netem.clone(),
            tbf: n.tbf.clone(),
            deadline: ctx.deadline,
        }
    }
}

impl Renewable for NetworkDriver {
    fn renew(&self, until: SystemTime) {
        for (key, i) in self.ifaces().iter_mut() {
            if let Err(e) = i.arm(|d| d.min(until)) {
                tracing::warn!(interface = %key.1, error = %e, "cannot renew a steering deadline");
            }
        }
    }
}

impl ChannelHolder for NetworkDriver {
    fn channel_changed(&self, keys: &[ConnKey]) {
        for (key, i) in self.ifaces().iter_mut() {
            if let Err(e) = i.set_session(keys) {
                tracing::warn!(interface = %key.1, error = %e, "cannot update a steering program's session exemption");
            }
        }
    }
}

impl Driver for NetworkDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        &[FaultKind::Network]
    }

    fn available(&self) -> Result<(), String> {
        super::warm::STEER
            .fill()
            .map_err(|e| format!("{e} (network faults need root, or CAP_BPF with CAP_NET_ADMIN)"))
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let n = network_fault(spec)?;
        let sides = sides(n.matcher.direction);
        if sides.contains(&Side::Ingress) {
            super::ebpf::tcx_available().map_err(|why| {
                DriverError::Refused(format!(
                    "match.direction: {} needs kernel 6.6 or newer: received packets reach the ingress tree through a TCX program's redirect to an IFB device (older kernels have no TCX links, and before 6.4 an IFB drops what bpf_redirect sends it); impair the other end's egress instead, or use drop/partition ({})",
                    n.matcher.direction.as_str(),
                    why.rsplit("; ").next().unwrap_or(&why)
                ))
            })?;
        }
        iface::class_rules(&n.matcher, &self.protected)
            .map_err(|e| DriverError::Refused(e.to_string()))?;
        let ns = self.netns_of(&spec.target)?;
        // One netns thread for the interface and the tree checks (a thread per step cost
        // a visible share of a `network` apply on a busy machine).
        let (ns2, s2) = (ns.clone(), sides.clone());
        let requested = n.interface.clone();
        let (name, ifb) = netns::run_in(
            ns.as_deref(),
            move || -> Result<(String, Option<String>), DriverError> {
                let where_ = netns::describe(ns2.as_deref());
                let n2 =
                    netns::pick_interface_here(&where_, requested.as_deref()).map_err(netns_err)?;
                let check = || -> Result<Option<String>, TcError> {
                    let mut port = Rtnl::open()?;
                    let ifindex = qdisc::ifindex(&mut port, &n2)?.ok_or_else(|| {
                        TcError::Refused(format!("interface {n2} vanished from {where_}"))
                    })?;
                    if s2.contains(&Side::Egress) {
                        sync::check_root(&mut port, ifindex, &n2)?;
                    }
                    if !s2.contains(&Side::Ingress) {
                        return Ok(None);
                    }
                    let dev = ifb::name(ifindex);
                    let links = port.links_with_kind()?;
                    if let Some(l) = links.iter().find(|l| l.name == dev) {
                        ifb::check_kind(l)?;
                        sync::check_root(&mut port, l.ifindex, &dev)?;
                    }
                    Ok(Some(dev))
                };
                let ifb = check().map_err(tc_err)?;
                Ok((n2, ifb))
            },
        )
        .map_err(netns_err)??;
        for side in &sides {
            if let Some(i) = self.ifaces().get(&(ns.clone(), name.clone(), *side)) {
                i.tree
                    .with(&Self::member(ctx, n), &i.dev)
                    .map_err(|e| DriverError::Refused(e.to_string()))?;
            }
        }
        NetworkRecipe {
            fault_id: ctx.fault_id.clone(),
            netns_inode: ns.as_deref().and_then(inode),
            netns: ns,
            interface: name,
            class: None,
            clsact_added: false,
            sides,
            ifb,
            ingress_class: None,
        }
        .to_recipe()
    }

    fn apply(
        &self,
        ctx: &FaultCtx,
        spec: &FaultSpec,
        recipe: &Recipe,
    ) -> Result<Recipe, DriverError> {
        let n = network_fault(spec)?;
        let mut data = NetworkRecipe::from_recipe(recipe)?;
        if !Self::same_netns(&data) {
            return Err(DriverError::Refused(format!(
                "{} is no longer the network namespace the fault was planned in",
                netns::describe(data.netns.as_deref())
            )));
        }
        let mut ifaces = self.ifaces();
        for side in data.sides.clone() {
            let key = data.key(side);
            let dev = data.dev(side)?.to_string();
            let i = ifaces
                .entry(key.clone())
                .or_insert_with(|| Iface::on(data.netns.clone(), &data.interface, side, &dev));
            let target = i
                .tree
                .with(&Self::member(ctx, n), &dev)
                .map_err(|e| DriverError::Refused(e.to_string()))?;
            let lease = self.lease.clone();
            let session = self.control.keys();
            if let Err(e) = i.converge(target, &self.protected, &session, |d| lease.bound(d)) {
                // A first fault that failed half way: forget the side, so revert takes the
                // "not held" path and removes whatever root (or IFB) was made.
                if i.tree.is_empty() {
                    ifaces.remove(&key);
                }
                return Err(iface_err(e));
            }
            let class = i
                .tree
                .class_of(&ctx.fault_id)
                .map(|c| handle_str(classid(c.minor)));
            match side {
                Side::Egress => {
                    data.clsact_added = i.clsact_added;
                    data.class = class;
                }
                Side::Ingress => data.ingress_class = class,
            }
        }
        tracing::info!(
            fault_id = %ctx.fault_id,
            class = ?data.class,
            ingress_class = ?data.ingress_class,
            where_ = %data.describe(),
            "network fault applied"
        );
        data.to_recipe()
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let data = NetworkRecipe::from_recipe(recipe)?;
        let mut reverted = false;
        // Egress first, then ingress; each side on its own, so a failure on one leaves the
        // other reverted and a retry finishes the job.
        for side in data.sides.clone() {
            reverted |= self.revert_side(&data, side)?;
        }
        Ok(if reverted {
            RevertOutcome::Reverted
        } else {
            RevertOutcome::AlreadyGone
        })
    }

    fn health(&self, recipe: &Recipe) -> Health {
        let data = match NetworkRecipe::from_recipe(recipe) {
            Ok(d) => d,
            Err(e) => {
                return Health::Failed {
                    error: e.to_string(),
                    counters: Vec::new(),
                }
            }
        };
        let ifaces = self.ifaces();
        let (mut matched, mut steered, mut spared) = (0u64, 0u64, 0u64);
        let mut per_side = Vec::new();
        for side in &data.sides {
            let class = ifaces
                .get(&data.key(*side))
                .and_then(|i| Some((i, i.tree.class_of(&data.fault_id)?.minor)));
            let Some((i, minor)) = class else {
                return Health::Failed {
                    error: format!(
                        "the {} qdisc tree of fault {} is not held by this agent process",
                        side.as_str(),
                        data.fault_id
                    ),
                    counters: Vec::new(),
                };
            };
            match i.counters(minor) {
                Some(Ok(c)) => {
                    matched = matched.saturating_add(c.matched);
                    steered = steered.saturating_add(c.acted);
                    spared = spared.saturating_add(c.spared);
                    per_side.push((format!("{}_{MATCHED}", side.as_str()), c.matched));
                    per_side.push((format!("{}_{STEERED}", side.as_str()), c.acted));
                }
                Some(Err(e)) => {
                    return Health::Failed {
                        error: format!("reading the {} steering counters: {e}", side.as_str()),
                        counters: Vec::new(),
                    }
                }
                None => {}
            }
        }
        if per_side.is_empty() {
            return Health::Ok(Vec::new());
        }
        let mut counters = vec![
            (MATCHED.into(), matched),
            (STEERED.into(), steered),
            (SPARED.into(), spared),
        ];
        counters.extend(per_side);
        Health::Ok(counters)
    }

    fn sweep(&self, known: &[Recipe]) -> Vec<String> {
        // The host, every named netns (`ip netns`; CNI plugins put pods' there too) and every
        // netns the journal names.
        let mut keep: BTreeMap<Option<PathBuf>, Vec<String>> = BTreeMap::new();
        keep.entry(None).or_default();
        for p in orphans::named_netns(Path::new(orphans::NAMED_NETNS_DIR)) {
            keep.entry(Some(p)).or_default();
        }
        for r in known
            .iter()
            .filter_map(|r| NetworkRecipe::from_recipe(r).ok())
        {
            if Self::same_netns(&r) {
                let names = keep.entry(r.netns.clone()).or_default();
                names.extend(r.ifb.clone());
                if r.sides.contains(&Side::Egress) {
                    names.push(r.interface);
                }
            }
        }
        for i in self.ifaces().values() {
            keep.entry(i.netns.clone()).or_default().push(i.dev.clone());
        }
        keep.into_iter()
            .flat_map(|(ns, names)| orphans::sweep(ns, names))
            .collect()
    }
}
