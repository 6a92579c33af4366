//! Loads `ebpf/steer.bpf.c` for one impaired class and attaches it to an interface's egress:
//! matching packets get `skb->priority` = the class id while the deadline is ahead. On kernels
//! with TCX (6.6+) the link is a TCX link, never pinned, so the kernel detaches it when the
//! agent dies; older kernels get a clsact `bpf` filter (aya's netlink attach), which outlives
//! the agent until the deadline in its map makes it inert and the next start's sweep removes
//! it. Attach, drop and [`detach_stale`] must run on the target netns thread.

use aya::maps::{Array, MapData};
use aya::programs::tc::{qdisc_add_clsact, qdisc_detach_program, TcAttachType, TcError};
use aya::programs::SchedClassifier;
use aya::{include_bytes_aligned, Ebpf};

use crate::net::ebpf::{self, EbpfError};
use crate::net::rules::{Config, Rules};

/// `ebpf/steer.bpf.c`, compiled by `agent/build.rs`.
pub static STEER_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));
/// The program's (kernel) name.
pub const PROGRAM: &str = "fl_steer_eg";
/// The map holding the class id.
const CLASS_MAP: &str = "fl_steer_to";

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("eBPF program {PROGRAM}: {0}")]
    Program(#[from] aya::programs::ProgramError),
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

/// One attached steering program; dropping it detaches it (on the netns thread).
#[derive(Debug)]
pub struct Steering {
    ebpf: Ebpf,
    config: Config,
    pub classid: u32,
}

/// Whether this kernel attaches with TCX links (else a clsact filter).
pub fn tcx() -> bool {
    ebpf::tcx_available().is_ok()
}

impl Steering {
    /// Loads the program with `rules` and `classid`, sets its deadline, and attaches it to the
    /// egress of `interface` in the calling thread's netns.
    pub fn attach(
        interface: &str,
        rules: &Rules,
        classid: u32,
        deadline_ns: u64,
    ) -> Result<Steering, SteerError> {
        let mut bpf = ebpf::load(STEER_OBJECT)?;
        {
            let map = bpf
                .map_mut(CLASS_MAP)
                .ok_or_else(|| EbpfError::Missing(format!("map {CLASS_MAP}")))?;
            let mut to: Array<&mut MapData, u32> = Array::try_from(map)?;
            to.set(0, classid, 0)?;
        }
        ebpf::write_rules(&mut bpf, rules, deadline_ns)?;
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
            .program_mut(PROGRAM)
            .ok_or_else(|| EbpfError::Missing(format!("program {PROGRAM}")))?
            .try_into()?;
        prog.load()?;
        prog.attach(interface, TcAttachType::Egress)?;
        Ok(Steering {
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

    pub fn deadline_ns(&self) -> u64 {
        self.config.deadline_ns
    }

    /// Packets matched and steered since attach.
    pub fn counters(&self) -> Result<(u64, u64), SteerError> {
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

/// Whether a steering program is attached to the egress of `interface` now (TCX kernels).
/// TCX links die with their process and Faultline never pins them, so an attached program
/// means a live agent process owns the interface's tree.
pub fn live_steering(interface: &str) -> bool {
    if !tcx() {
        return false;
    }
    SchedClassifier::query_tcx(interface, TcAttachType::Egress)
        .map(|(_, progs)| progs.iter().any(|p| p.name_as_str() == Some(PROGRAM)))
        .unwrap_or(false)
}
