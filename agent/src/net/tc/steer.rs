//! Takes a verified `ebpf/steer.bpf.c` (the spare of [`crate::net::warm`]) for one impaired
//! class and attaches it to an interface's egress
//! (`fl_steer_eg`: matching packets get `skb->priority` = the class id while the deadline is
//! ahead) or ingress (`fl_steer_in`: the same, then a redirect to the interface's IFB device,
//! whose tree impairs them; TCX kernels only). On kernels
//! with TCX (6.6+) the program goes into a kept TCX link of the hook ([`crate::net::keep`]:
//! attached once, then a map write per apply), never pinned, so the kernel detaches it when
//! the agent dies; older kernels get a clsact `bpf` filter (aya's netlink attach), which outlives
//! the agent until the deadline in its map makes it inert and the next start's sweep removes
//! it. Attach, drop and [`detach_stale`] must run on the target netns thread.

use aya::maps::{Array, MapData};
use aya::programs::tc::{qdisc_add_clsact, qdisc_detach_program, TcAttachType, TcError};
use aya::programs::SchedClassifier;
use aya::{include_bytes_aligned, Ebpf};

use super::Side;
use crate::net::control::ConnKey;
use crate::net::ebpf::{self, Counters, EbpfError};
use crate::net::rules::{Config, Rules};

/// `ebpf/steer.bpf.c`, compiled by `agent/build.rs`.
pub static STEER_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));
/// The egress program's (kernel) name.
pub const PROGRAM: &str = "fl_steer_eg";
/// The ingress program's (kernel) name.
pub const INGRESS_PROGRAM: &str = "fl_steer_in";
/// The map holding the class id (`[0]`) and the IFB's ifindex (`[1]`).
const CLASS_MAP: &str = "fl_steer_to";

/// The steering program of a side.
pub fn program(side: Side) -> &'static str {
    match side {
        Side::Egress => PROGRAM,
        Side::Ingress => INGRESS_PROGRAM,
    }
}

/// Where a class's steering program sends matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The interface's egress: into the class of the interface's own tree.
    Egress,
    /// The interface's ingress: into the class of the tree on the IFB of this ifindex.
    Ingress { ifb: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("eBPF steering program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("steering ingress packets needs TCX links (kernel 6.6 or newer): {0}")]
    NoTcx(String),
    #[error("kept TCX link: {0}")]
    Keep(#[from] crate::net::keep::KeepError),
    #[error("eBPF map {CLASS_MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("adding the clsact qdisc to {interface} for the steering filter: {source}")]
    Clsact {
        interface: String,
        #[source]
        source: TcError,
    },
    #[error("removing a stale steering filter from {interface}: {source}")]
    Detach {
        interface: String,
        #[source]
        source: TcError,
    },
}

/// One attached steering program; dropping it takes it out of its kept TCX link (or, for a
/// clsact filter, detaches it on the netns thread).
#[derive(Debug)]
pub struct Steering {
    // Field order = drop order: the kept link's place first, then the object.
    slot: Option<crate::net::keep::Slot>,
    ebpf: Ebpf,
    config: Config,
    pub classid: u32,
}

/// Whether this kernel attaches with TCX links (else a clsact filter).
pub fn tcx() -> bool {
    ebpf::tcx_available().is_ok()
}

impl Steering {
    /// Loads the program of `hook` with `rules`, `classid` and the agent's control
    /// connections (`session`, never steered), sets its deadline, and attaches it to
    /// `interface` in the calling thread's netns.
    pub fn attach(
        interface: &str,
        hook: Hook,
        rules: &Rules,
        classid: u32,
        deadline_ns: u64,
        session: &[ConnKey],
    ) -> Result<Steering, SteerError> {
        let (name, attach_type, ifb) = match hook {
            Hook::Egress => (PROGRAM, TcAttachType::Egress, 0),
            Hook::Ingress { ifb } => {
                ebpf::tcx_available().map_err(SteerError::NoTcx)?;
                (INGRESS_PROGRAM, TcAttachType::Ingress, ifb)
            }
        };
        let mut bpf = crate::net::warm::STEER.take()?;
        {
            let map = bpf
                .map_mut(CLASS_MAP)
                .ok_or_else(|| EbpfError::Missing(format!("map {CLASS_MAP}")))?;
            let mut to: Array<&mut MapData, u32> = Array::try_from(map)?;
            to.set(0, classid, 0)?;
            to.set(1, ifb, 0)?;
        }
        ebpf::write_rules(&mut bpf, rules, deadline_ns)?;
        ebpf::write_session(&mut bpf, session)?;
        if !tcx() {
            // EEXIST: a clsact is there already (ours from another class, or someone's).
            if let Err(e) = qdisc_add_clsact(interface) {
                let exists = matches!(&e, TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
                if !exists {
                    return Err(SteerError::Clsact {
                        interface: interface.to_string(),
                        source: e,
                    });
                }
            }
        }
        let prog: &mut SchedClassifier = bpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Missing(format!("program {name}")))?
            .try_into()?;
        tracing::debug_span!("ebpf_prog_verify", program = name)
            .in_scope(|| crate::net::warm::ensure_loaded(|| prog.load()))?;
        let rhook = match hook {
            Hook::Egress => crate::net::rules::Hook::Egress,
            Hook::Ingress { .. } => crate::net::rules::Hook::Ingress,
        };
        let slot = if tcx() {
            let _t = tracing::debug_span!("ebpf_keep_occupy", program = name).entered();
            Some(crate::net::keep::occupy(interface, rhook, prog)?)
        } else {
            prog.attach(interface, attach_type)?;
            None
        };
        Ok(Steering {
            slot,
            ebpf: bpf,
            config: Config {
                deadline_ns,
                ..rules.config
            },
            classid,
        })
    }

    /// Moves the deadline (`bpf_ktime_get_ns()` clock); a deadline in the past makes the
    /// program inert at once.
    pub fn set_deadline(&mut self, deadline_ns: u64) -> Result<(), SteerError> {
        self.config.deadline_ns = deadline_ns;
        ebpf::write_config(&mut self.ebpf, &self.config)?;
        Ok(())
    }

    /// Takes the program out of its kept TCX link now (one map write; the link stays for the
    /// next fault on the hook). Dropping the `Steering` does the same.
    pub fn vacate(&mut self) {
        drop(self.slot.take());
    }

    pub fn deadline_ns(&self) -> u64 {
        self.config.deadline_ns
    }

    /// Makes the program's `fl_session` hold exactly `keys` (the control connections).
    pub fn set_session(&mut self, keys: &[ConnKey]) -> Result<(), SteerError> {
        Ok(ebpf::write_session(&mut self.ebpf, keys)?)
    }

    /// Packets matched, steered and spared (the agent's own session) since attach.
    pub fn counters(&self) -> Result<Counters, SteerError> {
        Ok(ebpf::counters(&self.ebpf)?)
    }
}

/// Removes steering filters a dead agent left on `interface` (kernels without TCX; TCX links
/// die with their process). Returns whether one was there.
pub fn detach_stale(interface: &str) -> Result<bool, SteerError> {
    if tcx() {
        return Ok(false);
    }
    match qdisc_detach_program(interface, TcAttachType::Egress, PROGRAM) {
        Ok(()) => Ok(true),
        Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(TcError::NetlinkError(e))
            if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) =>
        {
            Ok(false)
        }
        Err(source) => Err(SteerError::Detach {
            interface: interface.to_string(),
            source,
        }),
    }
}

/// Whether a steering program of `side` runs on `interface` now (TCX kernels): attached
/// itself, or in the slot of an attached kept link's dispatcher. TCX links die with their
/// process and Faultline never pins them, so a running program means a live agent process
/// owns the side's tree (the interface's, or its IFB's for ingress).
pub fn live_steering(interface: &str, side: Side) -> bool {
    if !tcx() {
        return false;
    }
    let attach_type = match side {
        Side::Egress => TcAttachType::Egress,
        Side::Ingress => TcAttachType::Ingress,
    };
    SchedClassifier::query_tcx(interface, attach_type)
        .map(|(_, progs)| {
            progs.iter().any(|p| match p.name_as_str() {
                Some(n) if n == program(side) => true,
                Some(crate::net::keep::PROGRAM) => {
                    let ids = p.map_ids().ok().flatten().unwrap_or_default();
                    crate::net::keep::slot_of(&ids).is_some_and(|id| {
                        ebpf::programs_named(program(side))
                            .iter()
                            .any(|s| s.id == id)
                    })
                }
                _ => false,
            })
        })
        .unwrap_or(false)
}
