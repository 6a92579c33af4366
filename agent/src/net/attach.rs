//! Loads and attaches a drop object's programs for one fault: on an interface, each program
//! goes into a kept TCX link of its hook ([`super::keep`], inside the interface's netns, on
//! the netns thread: a map write once the link exists); on a cgroup2 directory, into cgroup
//! links of its own. Links are never pinned: the kernel detaches them when their last file
//! descriptor closes, i.e. when the agent process dies (kept links also at their idle expiry,
//! cgroup links on revert). [`release`] ends a fault's programs: disarmed and taken out of
//! their kept links at once, the rest detached on a thread of its own.

use std::fs::File;
use std::path::Path;

use aya::programs::cgroup_skb::CgroupSkbAttachType;
use aya::programs::links::CgroupAttachMode;
use aya::programs::links::{FdLink, Link as _};
use aya::programs::{CgroupSkb, SchedClassifier};
use aya::Ebpf;

use super::keep::{self, Slot};
use super::netns;
use super::plan::Scope;
use super::rules::{Config, Hook};
use crate::engine::driver::{DriverError, RevertOutcome};

/// The object with its programs attached; dropping `slots` takes them out of their kept TCX
/// links, dropping `links` detaches their cgroup links.
pub struct Attached {
    // Field order = drop order (an apply failing half way): out of the kept links first.
    pub slots: Vec<Slot>,
    pub links: Vec<FdLink>,
    pub ebpf: Ebpf,
    pub prog_ids: Vec<u32>,
    pub link_ids: Vec<u32>,
}

/// Kernel name of the program for a scope and hook (functions of `ebpf/drop.bpf.c`).
pub fn program_name(scope: &Scope, hook: Hook) -> &'static str {
    match (scope, hook) {
        (Scope::Interface { .. }, Hook::Ingress) => "fl_drop_tc_in",
        (Scope::Interface { .. }, Hook::Egress) => "fl_drop_tc_eg",
        (Scope::Cgroup { .. }, Hook::Ingress) => "fl_drop_cg_in",
        (Scope::Cgroup { .. }, Hook::Egress) => "fl_drop_cg_eg",
    }
}

/// Loads and attaches the programs for `hooks`. On error, whatever was attached is detached
/// again (the links drop with the object).
pub fn attach(ebpf: Ebpf, scope: &Scope, hooks: &[Hook]) -> Result<Attached, DriverError> {
    let hooks = hooks.to_vec();
    match scope {
        Scope::Interface { netns, interface } => {
            let iface = interface.clone();
            let scope = scope.clone();
            netns::run_in(netns.as_deref(), move || {
                attach_tc(ebpf, &scope, &iface, &hooks)
            })
            .map_err(|e| DriverError::Other(e.to_string()))?
        }
        Scope::Cgroup { dir, .. } => attach_cgroup(ebpf, scope, dir, &hooks),
    }
}

fn wrap<E: std::error::Error>(what: &str) -> impl Fn(E) -> DriverError + '_ {
    move |e| DriverError::Other(format!("{what}: {}", super::ebpf::chain(&e)))
}

/// Records a taken link and its program's id.
fn keep(
    out: &mut Attached,
    what: &str,
    link: FdLink,
    prog_info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
) -> Result<(), DriverError> {
    out.prog_ids.push(prog_info.map_err(wrap(what))?.id());
    out.link_ids.push(link.info().map_err(wrap(what))?.id());
    out.links.push(link);
    Ok(())
}

fn attach_tc(
    ebpf: Ebpf,
    scope: &Scope,
    iface: &str,
    hooks: &[Hook],
) -> Result<Attached, DriverError> {
    let programs: Vec<(&'static str, Hook)> = hooks
        .iter()
        .map(|h| (program_name(scope, *h), *h))
        .collect();
    attach_tc_programs(ebpf, iface, &programs)
}

/// Loads the named `classifier` programs and puts each into a kept TCX link of its hook on
/// `iface` (in the calling thread's netns; attached first in the chain when none is free).
pub fn attach_tc_programs(
    ebpf: Ebpf,
    iface: &str,
    programs: &[(&'static str, Hook)],
) -> Result<Attached, DriverError> {
    let mut out = Attached {
        slots: Vec::new(),
        links: Vec::new(),
        ebpf,
        prog_ids: Vec::new(),
        link_ids: Vec::new(),
    };
    for (name, hook) in programs {
        let name = *name;
        let what = format!("attaching {name} to {iface} {}", hook.as_str());
        let prog: &mut SchedClassifier = out
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DriverError::Other(format!("{what}: not in the object")))?
            .try_into()
            .map_err(wrap(&what))?;
        tracing::debug_span!("ebpf_prog_verify", program = name)
            .in_scope(|| super::warm::ensure_loaded(|| prog.load()))
            .map_err(wrap(&what))?;
        let _t = tracing::debug_span!("ebpf_keep_occupy", program = name).entered();
        let slot = keep::occupy(iface, *hook, prog).map_err(wrap(&what))?;
        let prog_id = prog.info().map_err(wrap(&what))?.id();
        out.prog_ids.push(prog_id);
        out.link_ids.push(slot.link_id);
        out.slots.push(slot);
    }
    Ok(out)
}

fn attach_cgroup(
    ebpf: Ebpf,
    scope: &Scope,
    dir: &Path,
    hooks: &[Hook],
) -> Result<Attached, DriverError> {
    let cgroup = File::open(dir)
        .map_err(|e| DriverError::io(format!("opening cgroup {}", dir.display()), e))?;
    let mut out = Attached {
        slots: Vec::new(),
        links: Vec::new(),
        ebpf,
        prog_ids: Vec::new(),
        link_ids: Vec::new(),
    };
    for hook in hooks {
        let name = program_name(scope, *hook);
        let what = format!("attaching {name} to cgroup {}", dir.display());
        let prog: &mut CgroupSkb = out
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DriverError::Other(format!("{what}: not in the object")))?
            .try_into()
            .map_err(wrap(&what))?;
        tracing::debug_span!("ebpf_prog_verify", program = name)
            .in_scope(|| super::warm::ensure_loaded(|| prog.load()))
            .map_err(wrap(&what))?;
        let _t = tracing::debug_span!("ebpf_cgroup_attach", program = name).entered();
        let attach_type = match hook {
            Hook::Ingress => CgroupSkbAttachType::Ingress,
            Hook::Egress => CgroupSkbAttachType::Egress,
        };
        // A cgroup link always runs alongside other programs on the cgroup (systemd's, a
        // CNI's); the kernel refuses mode flags on link creation, so none are passed.
        let id = prog
            .attach(&cgroup, attach_type, CgroupAttachMode::Single)
            .map_err(wrap(&what))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(wrap(&what))?
            .try_into()
            .map_err(wrap(&what))?;
        let info = prog.info();
        keep(&mut out, &what, link, info)?;
    }
    Ok(out)
}

/// Program ids this process is detaching (see [`release`]).
static RELEASING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Whether this process is detaching program `id` after a revert (it is disarmed already).
pub fn releasing(id: u32) -> bool {
    RELEASING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&id)
}

/// The revert of a fault this process does not hold: its links died with the process that
/// held them. A program with a recorded id that is still loaded (something else holds it) is
/// disarmed; this process's own (a revert's detach still running) are disarmed already.
pub fn disarm_unheld(prefix: &str, prog_ids: &[u32]) -> Result<RevertOutcome, DriverError> {
    let left: Vec<_> = super::ebpf::programs_named(prefix)
        .into_iter()
        .filter(|p| prog_ids.contains(&p.id) && !releasing(p.id))
        .collect();
    if left.is_empty() {
        return Ok(RevertOutcome::AlreadyGone);
    }
    for p in &left {
        super::ebpf::disarm(p).map_err(|e| DriverError::Other(super::ebpf::chain(&e)))?;
    }
    Ok(RevertOutcome::Reverted)
}

/// Detaches `links`, unloads `ebpf`, and takes `ids` out of [`RELEASING`] once the kernel no
/// longer lists them (it frees a program after its last reference, at most 1 s is waited).
fn detach_now(fault_id: &str, links: Vec<FdLink>, ebpf: Ebpf, ids: &[u32]) {
    let _t = tracing::debug_span!("ebpf_detach").entered();
    for link in links {
        if let Err(e) = link.detach() {
            tracing::warn!(fault_id, error = %e, "detaching an eBPF link");
        }
    }
    drop(ebpf);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until
        && super::ebpf::programs_named(super::ebpf::PREFIX)
            .iter()
            .any(|p| ids.contains(&p.id))
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    RELEASING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|id| !ids.contains(id));
}

/// Ends a fault's programs. The object's `fl_cfg` deadline is set to 0 first (one map write:
/// from the next packet on its programs leave everything alone) and its places in kept TCX
/// links are cleared (one map write each; the links stay for the next fault until their idle
/// expiry), then its cgroup links are detached
/// and the object unloaded on a thread of their own, since each detach waits in the kernel for
/// an RCU grace period. When the deadline cannot be written, or no thread can be started, the
/// links are detached here before this returns. Either way nothing acts once this returns.
/// `prog_ids` stay in [`releasing`] until the kernel no longer lists them, so a second revert
/// meanwhile knows they are this process's own.
pub fn release(
    fault_id: &str,
    mut ebpf: Ebpf,
    config: Config,
    links: Vec<FdLink>,
    slots: Vec<Slot>,
    prog_ids: &[u32],
) {
    RELEASING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend_from_slice(prog_ids);
    let disarmed = super::ebpf::write_config(
        &mut ebpf,
        &Config {
            deadline_ns: 0,
            ..config
        },
    );
    drop(slots);
    if let Err(e) = disarmed {
        tracing::warn!(fault_id, error = %e, "cannot disarm an eBPF fault; detaching it now");
        return detach_now(fault_id, links, ebpf, prog_ids);
    }
    let (id, ids) = (fault_id.to_string(), prog_ids.to_vec());
    // The thread gets links and object through a channel, so a failed spawn leaves them here.
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<FdLink>, Ebpf)>();
    let spawned = std::thread::Builder::new()
        .name("fl-ebpf-detach".into())
        .spawn(move || {
            if let Ok((links, ebpf)) = rx.recv() {
                detach_now(&id, links, ebpf, &ids);
            }
        });
    match spawned {
        Ok(_) => {
            if let Err(std::sync::mpsc::SendError((links, ebpf))) = tx.send((links, ebpf)) {
                detach_now(fault_id, links, ebpf, prog_ids);
            }
        }
        Err(_) => detach_now(fault_id, links, ebpf, prog_ids),
    }
}
