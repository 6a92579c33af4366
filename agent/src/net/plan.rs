//! Planning a `drop` or `partition` fault: what the spec means for eBPF ([`Wanted`]), where
//! its programs attach ([`scope`]: an interface in a netns, or a cgroup2 directory) and the
//! journaled recipe ([`DropRecipe`]). Nothing here changes the system.

use std::path::PathBuf;

use faultline_core::fault::{Cidr, Fault, FaultKind, FaultSpec, Target, TrafficMatch};
use serde::{Deserialize, Serialize};

use super::ebpf;
use super::netns;
use super::rules::{self, Hook, ProtectedTraffic, RuleSpec, Rules};
use crate::engine::driver::{DriverError, Recipe};
use crate::host::cgroup::Version;
use crate::host::target::Resolver;

/// Where a fault's programs attach, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Scope {
    /// TCX on an interface; `netns` None = the agent's (host) netns.
    Interface {
        netns: Option<PathBuf>,
        interface: String,
    },
    /// cgroup_skb on a cgroup2 directory.
    Cgroup { dir: PathBuf, path: String },
}

impl Scope {
    pub fn describe(&self) -> String {
        match self {
            Scope::Interface { netns, interface } => {
                format!(
                    "interface {interface} in {}",
                    netns::describe(netns.as_deref())
                )
            }
            Scope::Cgroup { path, .. } => format!("cgroup2 {path}"),
        }
    }
}

/// The recipe's `data`: everything needed to find the fault's kernel objects again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecipe {
    pub fault_id: String,
    pub scope: Scope,
    pub hooks: Vec<Hook>,
    /// Kernel program names (`fl_drop_tc_eg`, ...).
    pub programs: Vec<String>,
    /// Filled by apply: kernel ids of the loaded programs and their links, and the PID of the
    /// agent process holding them (the links die with it).
    #[serde(default)]
    pub prog_ids: Vec<u32>,
    #[serde(default)]
    pub link_ids: Vec<u32>,
    #[serde(default)]
    pub holder_pid: u32,
}

impl DropRecipe {
    pub fn from_recipe(r: &Recipe) -> Result<Self, DriverError> {
        serde_json::from_value(r.data.clone())
            .map_err(|e| DriverError::Other(format!("unreadable {} recipe: {e}", r.kind)))
    }

    pub fn to_recipe(&self, kind: &str) -> Result<Recipe, DriverError> {
        Ok(Recipe {
            kind: kind.to_string(),
            data: serde_json::to_value(self)
                .map_err(|e| DriverError::Other(format!("encoding the recipe: {e}")))?,
        })
    }
}

/// A spec's eBPF meaning.
pub struct Wanted {
    pub kind: FaultKind,
    pub interface: Option<String>,
    pub matcher: TrafficMatch,
    pub peers: Vec<Cidr>,
    pub probability: f64,
}

impl Wanted {
    pub fn of(spec: &FaultSpec) -> Result<Self, DriverError> {
        match &spec.fault {
            Fault::Drop(d) => Ok(Wanted {
                kind: FaultKind::Drop,
                interface: d.interface.clone(),
                matcher: d.matcher.clone(),
                peers: Vec::new(),
                probability: d.probability,
            }),
            Fault::Partition(p) => Ok(Wanted {
                kind: FaultKind::Partition,
                interface: p.interface.clone(),
                matcher: TrafficMatch {
                    direction: p.direction,
                    ..TrafficMatch::default()
                },
                peers: p.peers.clone(),
                probability: 1.0,
            }),
            other => Err(DriverError::Other(format!(
                "the drop driver got a {} fault",
                other.kind()
            ))),
        }
    }

    pub fn rules(&self, protected: &ProtectedTraffic) -> Result<Rules, DriverError> {
        rules::encode(
            &RuleSpec {
                matcher: &self.matcher,
                peers: &self.peers,
                probability: self.probability,
            },
            protected,
        )
        .map_err(|e| DriverError::Refused(e.to_string()))
    }
}

fn netns_err(e: netns::NetnsError) -> DriverError {
    match e {
        netns::NetnsError::UnknownInterface { .. }
        | netns::NetnsError::NoDefaultRoute { .. }
        | netns::NetnsError::Open { .. } => DriverError::Refused(e.to_string()),
        other => DriverError::Other(other.to_string()),
    }
}

/// Where the fault attaches: a cgroup target (or a container without `interface`) gets
/// cgroup_skb on its cgroup2 directory; everything else TCX on an interface of its netns.
pub fn scope(
    resolver: &Resolver,
    target: &Target,
    interface: Option<&str>,
) -> Result<Scope, DriverError> {
    let resolved = resolver.resolve(target)?;
    let cgroup_scoped = match target {
        Target::Cgroup(p) => {
            if let Some(i) = interface {
                return Err(DriverError::Refused(format!(
                    "interface {i:?} cannot be combined with target cgroup {p}: a cgroup-scoped drop acts on the cgroup's sockets on every interface"
                )));
            }
            true
        }
        Target::Container(_) => interface.is_none(),
        _ => false,
    };
    if cgroup_scoped {
        let v2 = resolved
            .cgroups
            .iter()
            .find(|d| d.hierarchy.version == Version::V2);
        match v2 {
            Some(d) => {
                return Ok(Scope::Cgroup {
                    dir: d.dir.clone(),
                    path: d.path.clone(),
                })
            }
            None if matches!(target, Target::Cgroup(_)) => {
                return Err(DriverError::Refused(format!(
                    "{}: not found in a cgroup2 hierarchy; cgroup-scoped drops need cgroup v2 (the unified hierarchy, e.g. /sys/fs/cgroup/unified)",
                    resolved.description,
                )))
            }
            // A container outside cgroup2: fall back to its netns.
            None => {}
        }
    }
    ebpf::tcx_available().map_err(DriverError::Refused)?;
    let ns = resolved.netns.clone();
    let iface = netns::pick_interface(ns.as_deref(), interface).map_err(netns_err)?;
    Ok(Scope::Interface {
        netns: ns,
        interface: iface,
    })
}
