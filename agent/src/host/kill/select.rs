//! What a container-kill acts on: the pod (UID, namespace, name) and the names of its
//! containers to kill, taken from the target once; and each round, the init process of every
//! named container running now, found through the kubelet's container log links (name -> IDs)
//! and the containers' cgroups (ID -> processes). A restarted container has a new ID and a new
//! link, so every round finds the current one. A pod's sandbox (pause) container has no link
//! and is never selected; a process named `pause` or a protected one is refused.

use std::path::Path;

use faultline_core::fault::{ContainerKillFault, ContainerRef, Target};
use serde::{Deserialize, Serialize};

use super::links::{read_links, ContainerLink};
use crate::engine::driver::DriverError;
use crate::host::pods::{bare_container_id, uid_in_path, PodIndex};
use crate::host::proc::{Identity, Stat};
use crate::host::protect::Checker;
use crate::host::worker::{GUARD_ARG, WORKER_ARG};
use crate::host::Host;

/// The pod a container-kill acts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIds {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// The pod and the container names to kill, fixed when the fault is planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub pod: PodIds,
    pub containers: Vec<String>,
    /// The field the containers came from, for refusals: `containers` or `target.container`.
    pub field: String,
}

/// One container's init process, chosen to be killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    pub container: String,
    pub container_id: String,
    pub init: Identity,
    pub comm: String,
}

/// What one round found: the victims, and the names with no running container (restarting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub victims: Vec<Victim>,
    pub not_running: Vec<String>,
}

fn refused(msg: String) -> DriverError {
    DriverError::Refused(msg)
}

/// The pod and containers a container-kill spec names on this host.
pub fn selection(
    host: &Host,
    links_dir: &Path,
    target: &Target,
    fault: &ContainerKillFault,
) -> Result<Selection, DriverError> {
    let Target::Container(c) = target else {
        return Err(refused(
            "target: container-kill needs a pod or container target".into(),
        ));
    };
    let r = &host.resolver;
    let id = bare_container_id(&c.container_id);
    let uid = if !c.pod_uid.is_empty() {
        c.pod_uid.to_ascii_lowercase()
    } else {
        let probe = ContainerRef {
            container_id: id.clone(),
            ..ContainerRef::default()
        };
        r.container_members(&probe)
            .iter()
            .flat_map(|(_, lines)| lines.iter())
            .find_map(|l| uid_in_path(&l.path))
            .ok_or_else(|| {
                refused(format!(
                    "target.container: no process on this host is in container {id}'s cgroup, so its pod is unknown"
                ))
            })?
    };
    let index = PodIndex::read(&r.pods_dir);
    let pod = match index.get(&uid) {
        Some(p) => PodIds {
            uid: p.uid.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        },
        None if !c.pod_namespace.is_empty() && !c.pod_name.is_empty() => PodIds {
            uid,
            namespace: c.pod_namespace.clone(),
            name: c.pod_name.clone(),
        },
        None => {
            return Err(refused(format!(
                "target.pod: pod {uid} has no kubelet log directory in {} and the target names no pod namespace and name{}",
                index.dir.display(),
                index.unreadable.as_ref().map(|u| format!(" ({u})")).unwrap_or_default()
            )))
        }
    };
    if let Some(why) = Checker::new(r).why_namespace(&pod.namespace) {
        return Err(refused(format!("target: {pod}: {why}")));
    }
    if id.is_empty() {
        return Ok(Selection {
            pod,
            containers: fault.containers.clone(),
            field: "containers".into(),
        });
    }
    let links = read_links(links_dir).map_err(refused)?;
    let link = links
        .iter()
        .find(|l| l.id == id && l.namespace == pod.namespace && l.pod == pod.name)
        .ok_or_else(|| {
            refused(format!(
                "target.container: container {id} of {pod} has no kubelet container log link in {}: \
                 it is the pod's sandbox (pause) container or not a container of this pod; \
                 container-kill kills only the pod's own containers",
                links_dir.display()
            ))
        })?;
    Ok(Selection {
        pod,
        containers: vec![link.container.clone()],
        field: "target.container".into(),
    })
}

/// Whether a process is one of the agent's own workers or guards (placed in a container by
/// another fault): never a container's init process.
fn is_ours(host: &Host, pid: u32) -> bool {
    let argv = host.proc().cmdline(pid).unwrap_or_default();
    let exe = host.exe().map(|e| e.to_string_lossy().into_owned());
    exe.is_ok_and(|e| argv.first() == Some(&e))
        && matches!(
            argv.get(1).map(String::as_str),
            Some(WORKER_ARG | GUARD_ARG)
        )
}

/// The init process (the oldest living process) of container `id` of the pod.
fn init_of(host: &Host, pod: &PodIds, id: &str) -> Option<Stat> {
    let probe = ContainerRef {
        container_id: id.to_string(),
        pod_uid: pod.uid.clone(),
        ..ContainerRef::default()
    };
    host.resolver
        .container_members(&probe)
        .into_iter()
        .map(|(st, _)| st)
        .find(|st| st.state != 'Z' && !is_ours(host, st.pid))
}

/// The init processes of the selected containers as they run now.
pub fn round(host: &Host, links_dir: &Path, sel: &Selection) -> Result<Round, DriverError> {
    let links = read_links(links_dir).map_err(refused)?;
    let checker = Checker::new(&host.resolver);
    let mut out = Round::default();
    for (i, name) in sel.containers.iter().enumerate() {
        let field = if sel.field == "containers" {
            format!("containers[{i}]")
        } else {
            sel.field.clone()
        };
        let ids: Vec<&ContainerLink> = links
            .iter()
            .filter(|l| {
                l.namespace == sel.pod.namespace && l.pod == sel.pod.name && &l.container == name
            })
            .collect();
        let running: Vec<(&ContainerLink, Stat)> = ids
            .iter()
            .filter_map(|l| init_of(host, &sel.pod, &l.id).map(|st| (*l, st)))
            .collect();
        if running.is_empty() {
            out.not_running.push(format!(
                "{field}: {} has no running container {name} on this host ({} kubelet link(s) for it in {})",
                sel.pod,
                ids.len(),
                links_dir.display()
            ));
            continue;
        }
        for (link, st) in running {
            if st.comm == "pause" {
                return Err(refused(format!(
                    "{field}: container {name} ({}) of {} runs `pause`: that is the pod's sandbox, which container-kill never kills",
                    link.id, sel.pod
                )));
            }
            if let Some(why) = checker.why(st.pid, Some(&st)) {
                return Err(refused(format!("{field}: container {name}: {why}")));
            }
            out.victims.push(Victim {
                container: name.clone(),
                container_id: link.id.clone(),
                init: st.identity(),
                comm: st.comm.clone(),
            });
        }
    }
    Ok(out)
}
