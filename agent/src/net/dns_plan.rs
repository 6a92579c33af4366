//! Planning a `dns` fault: where its program attaches (an interface in the target's netns)
//! and which sockets it judges ([`scope`]), and the journaled recipe ([`DnsRecipe`]). Nothing
//! here changes the system.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use faultline_core::fault::Target;
use serde::{Deserialize, Serialize};

use super::netns;
use crate::engine::driver::{DriverError, Recipe};
use crate::host::cgroup::{CgroupDir, Version};
use crate::host::target::Resolver;

/// The cgroup a fault's queries must come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupScope {
    /// Path in the cgroup2 hierarchy, for messages.
    pub path: String,
    pub dir: PathBuf,
    /// The cgroup2 id (the directory's inode number).
    pub id: u64,
}

/// The recipe's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecipe {
    pub fault_id: String,
    /// None = the agent's (host) netns.
    pub netns: Option<PathBuf>,
    pub interface: String,
    pub cgroup: Option<CgroupScope>,
    pub programs: Vec<String>,
    /// Filled by apply, as for `drop`.
    #[serde(default)]
    pub prog_ids: Vec<u32>,
    #[serde(default)]
    pub link_ids: Vec<u32>,
    #[serde(default)]
    pub holder_pid: u32,
}

impl DnsRecipe {
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

    pub fn describe(&self) -> String {
        let mut s = format!(
            "egress of {} in {}",
            self.interface,
            netns::describe(self.netns.as_deref())
        );
        if let Some(c) = &self.cgroup {
            s.push_str(&format!(", sockets of cgroup2 {}", c.path));
        }
        s
    }
}

/// `(dev, ino)` of a namespace file.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Where the program attaches (the netns; the interface is picked after) and which sockets
/// it judges (cgroup, container and pod targets: those of one cgroup2 directory).
pub fn scope(
    resolver: &Resolver,
    proc_root: &Path,
    target: &Target,
) -> Result<(Option<PathBuf>, Option<CgroupScope>), DriverError> {
    let resolved = resolver.resolve(target)?;
    let v2 = resolved
        .cgroups
        .iter()
        .find(|d| d.hierarchy.version == Version::V2);
    let cgroup_of = |d: &CgroupDir| -> Result<CgroupScope, DriverError> {
        let meta = std::fs::metadata(&d.dir)
            .map_err(|e| DriverError::io(format!("reading {}", d.dir.display()), e))?;
        Ok(CgroupScope {
            path: d.path.clone(),
            dir: d.dir.clone(),
            id: meta.ino(),
        })
    };
    match target {
        Target::Host | Target::Netns(_) | Target::Pid(_) => Ok((resolved.netns, None)),
        Target::Cgroup(_) => {
            let Some(d) = v2 else {
                return Err(DriverError::Refused(format!(
                    "{}: not found in a cgroup2 hierarchy; a cgroup-scoped dns fault needs cgroup v2 (the unified hierarchy, e.g. /sys/fs/cgroup/unified)",
                    resolved.description
                )));
            };
            let mut netns: Option<(PathBuf, (u64, u64))> = None;
            for pid in &resolved.pids {
                let p = resolver.proc.path(*pid, "ns/net");
                let Some(id) = ns_id(&p) else { continue };
                match &netns {
                    None => netns = Some((p, id)),
                    Some((first, fid)) if *fid != id => {
                        return Err(DriverError::Refused(format!(
                            "{}: its processes are in more than one network namespace ({} and {}); a dns fault attaches to one",
                            resolved.description,
                            first.display(),
                            p.display()
                        )))
                    }
                    Some(_) => {}
                }
            }
            let Some((ns, _)) = netns else {
                return Err(DriverError::Refused(format!(
                    "{}: has no processes, so there is no network namespace to attach to",
                    resolved.description
                )));
            };
            Ok((Some(ns), Some(cgroup_of(d)?)))
        }
        Target::Container(_) => {
            let cgroup = v2.map(cgroup_of).transpose()?;
            if cgroup.is_none() {
                let host = ns_id(&proc_root.join("1/ns/net"));
                let theirs = resolved.netns.as_deref().and_then(ns_id);
                if host.is_some() && host == theirs {
                    return Err(DriverError::Refused(format!(
                        "{}: shares the host's network namespace and has no cgroup2 directory of its own, so its DNS queries cannot be told from the node's",
                        resolved.description
                    )));
                }
            }
            Ok((resolved.netns, cgroup))
        }
    }
}

pub fn netns_err(e: netns::NetnsError) -> DriverError {
    match e {
        netns::NetnsError::UnknownInterface { .. }
        | netns::NetnsError::NoDefaultRoute { .. }
        | netns::NetnsError::Open { .. } => DriverError::Refused(e.to_string()),
        other => DriverError::Other(other.to_string()),
    }
}
