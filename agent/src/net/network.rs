//! The `network` fault driver: netem and tbf leaves in a Faultline HTB tree on an interface of
//! the target's netns (one tree per interface, composed from every network fault there and set
//! as desired state), with a steering program that sends only matching egress packets into
//! the impaired class while the deadline (cut to the lease) is ahead. Revert gives the
//! interface its kernel-default root qdisc back; the sweep removes Faultline roots nobody
//! holds. Plan refuses, before any change, what cannot be applied or restored exactly.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use faultline_core::fault::{Direction, Fault, FaultKind, FaultSpec, NetworkFault, Target};
use serde::{Deserialize, Serialize};

use super::netns::{self, NetnsError};
use super::rules::ProtectedTraffic;
use super::tc::iface::{self, Iface, IfaceError};
use super::tc::orphans;
use super::tc::qdisc::{self, handle_str, Rtnl, TcError};
use super::tc::tree::Member;
use super::tc::{classid, steer, sync};
use super::{Lease, NetConfig, Renewable};
use crate::engine::driver::{Driver, DriverError, FaultCtx, Health, Recipe, RevertOutcome};
use crate::host::target::Resolver;

/// Health counter names.
pub const MATCHED: &str = "packets_matched";
pub const STEERED: &str = "packets_steered";

/// The recipe's `data`: where the fault's tree is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecipe {
    pub fault_id: String,
    /// None = the agent's (host) netns.
    pub netns: Option<PathBuf>,
    /// Inode of that netns at plan time: a path that later names another namespace (a
    /// reused PID) is not ours to touch.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    pub interface: String,
    /// Filled by apply: the impaired class (`fa17:2`).
    #[serde(default)]
    pub class: Option<String>,
    /// Filled by apply: Faultline added a clsact qdisc for a legacy steering filter.
    #[serde(default)]
    pub clsact_added: bool,
}

impl NetworkRecipe {
    fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable network recipe: {e}")))
    }

    fn to_recipe(&self) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: FaultKind::Network.as_str().to_string(),
            data: serde_json::to_value(self)
                .map_err(|e| DriverError::Other(format!("encoding the recipe: {e}")))?,
        })
    }

    fn key(&self) -> Key {
        (self.netns.clone(), self.interface.clone())
    }

    fn describe(&self) -> String {
        format!(
            "interface {} in {}",
            self.interface,
            netns::describe(self.netns.as_deref())
        )
    }
}

type Key = (Option<PathBuf>, String);

/// The driver for kind `network`.
pub struct NetworkDriver {
    resolver: Resolver,
    protected: ProtectedTraffic,
    lease: Lease,
    ifaces: Mutex<BTreeMap<Key, Iface>>,
}

/// The `network` driver, subscribed to `cfg.lease` (the lead registers it with the engine).
pub fn drivers(cfg: &NetConfig) -> Vec<Arc<dyn Driver>> {
    let d = Arc::new(NetworkDriver::new(cfg));
    let weak: Weak<NetworkDriver> = Arc::downgrade(&d);
    cfg.lease.subscribe(weak);
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
            Target::Netns(p) => Ok(Some(PathBuf::from(p))),
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

impl Driver for NetworkDriver {
    fn kinds(&self) -> &'static [FaultKind] {
        &[FaultKind::Network]
    }

    fn available(&self) -> Result<(), String> {
        super::ebpf::load(steer::STEER_OBJECT)
            .map(drop)
            .map_err(|e| format!("{e} (network faults need root, or CAP_BPF with CAP_NET_ADMIN)"))
    }

    fn plan(&self, ctx: &FaultCtx, spec: &FaultSpec) -> Result<Recipe, DriverError> {
        let n = network_fault(spec)?;
        if n.matcher.direction != Direction::Egress {
            return Err(DriverError::Refused(format!(
                "match.direction: {} is not supported for network faults: netem and tbf shape the packets an interface sends (egress); impair the other end's egress, or use drop/partition for ingress",
                n.matcher.direction.as_str()
            )));
        }
        iface::class_rules(&n.matcher, &self.protected)
            .map_err(|e| DriverError::Refused(e.to_string()))?;
        let ns = self.netns_of(&spec.target)?;
        let name =
            netns::pick_interface(ns.as_deref(), n.interface.as_deref()).map_err(netns_err)?;
        let (n2, ns2) = (name.clone(), ns.clone());
        netns::run_in(ns.as_deref(), move || -> Result<(), TcError> {
            let mut port = Rtnl::open()?;
            let ifindex = qdisc::ifindex(&mut port, &n2)?.ok_or_else(|| {
                TcError::Refused(format!(
                    "interface {n2} vanished from {}",
                    netns::describe(ns2.as_deref())
                ))
            })?;
            sync::check_root(&mut port, ifindex, &n2).map(drop)
        })
        .map_err(netns_err)?
        .map_err(tc_err)?;
        let key = (ns.clone(), name.clone());
        if let Some(i) = self.ifaces().get(&key) {
            i.tree
                .with(&Self::member(ctx, n), &name)
                .map_err(|e| DriverError::Refused(e.to_string()))?;
        }
        NetworkRecipe {
            fault_id: ctx.fault_id.clone(),
            netns_inode: ns.as_deref().and_then(inode),
            netns: ns,
            interface: name,
            class: None,
            clsact_added: false,
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
        let i = ifaces
            .entry(data.key())
            .or_insert_with(|| Iface::new(data.netns.clone(), &data.interface));
        let target = i
            .tree
            .with(&Self::member(ctx, n), &data.interface)
            .map_err(|e| DriverError::Refused(e.to_string()))?;
        let lease = self.lease.clone();
        if let Err(e) = i.converge(target, &self.protected, |d| lease.bound(d)) {
            // A first fault that failed half way: forget the interface, so revert takes the
            // "not held" path and removes whatever root was made.
            if i.tree.is_empty() {
                ifaces.remove(&data.key());
            }
            return Err(iface_err(e));
        }
        data.clsact_added = i.clsact_added;
        data.class = i
            .tree
            .class_of(&ctx.fault_id)
            .map(|c| handle_str(classid(c.minor)));
        tracing::info!(
            fault_id = %ctx.fault_id,
            class = ?data.class,
            where_ = %data.describe(),
            "network fault applied"
        );
        data.to_recipe()
    }

    fn revert(&self, recipe: &Recipe) -> Result<RevertOutcome, DriverError> {
        let data = NetworkRecipe::from_recipe(recipe)?;
        let key = data.key();
        let mut ifaces = self.ifaces();
        if !Self::same_netns(&data) {
            // The namespace is gone (and its qdiscs with it) or is another one now: forget
            // the fault, and the interface with its last fault.
            if let Some(i) = ifaces.get_mut(&key) {
                i.tree = i.tree.without(&data.fault_id);
                if i.tree.is_empty() {
                    ifaces.remove(&key);
                }
            }
            return Ok(RevertOutcome::AlreadyGone);
        }
        let Some(i) = ifaces.get_mut(&key) else {
            drop(ifaces);
            return Ok(
                match orphans::remove(data.netns.as_deref(), &data.interface, data.clsact_added)
                    .map_err(iface_err)?
                {
                    true => RevertOutcome::Reverted,
                    false => RevertOutcome::AlreadyGone,
                },
            );
        };
        let held = i.tree.class_of(&data.fault_id).is_some();
        let target = i.tree.without(&data.fault_id);
        let lease = self.lease.clone();
        let done = i
            .converge(target, &self.protected, |d| lease.bound(d))
            .map_err(iface_err)?;
        if done.root_removed {
            ifaces.remove(&key);
        }
        Ok(if held {
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
        let class = ifaces
            .get(&data.key())
            .and_then(|i| Some((i, i.tree.class_of(&data.fault_id)?.minor)));
        let Some((i, minor)) = class else {
            return Health::Failed {
                error: format!(
                    "the qdisc tree of fault {} is not held by this agent process",
                    data.fault_id
                ),
                counters: Vec::new(),
            };
        };
        match i.counters(minor) {
            Some(Ok((m, s))) => Health::Ok(vec![(MATCHED.into(), m), (STEERED.into(), s)]),
            Some(Err(e)) => Health::Failed {
                error: format!("reading the steering counters: {e}"),
                counters: Vec::new(),
            },
            None => Health::Ok(Vec::new()),
        }
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
                keep.entry(r.netns.clone()).or_default().push(r.interface);
            }
        }
        for (ns, name) in self.ifaces().keys() {
            keep.entry(ns.clone()).or_default().push(name.clone());
        }
        keep.into_iter()
            .flat_map(|(ns, names)| orphans::sweep(ns, names))
            .collect()
    }
}
