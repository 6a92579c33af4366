//! eBPF objects made ahead of need: for each object Faultline attaches (drop, dns, steering)
//! one spare is kept in this process with its maps created and every program loaded and
//! verified, so applying a fault is taking the spare, writing its maps and attaching — the
//! object parse and the kernel verifier are no longer on the apply path. Taking the spare
//! starts making the next one on a background thread; when none is ready (two applies in a
//! row), one is made on the spot as before.
//!
//! A spare is never attached and its config map is all zero (deadline 0: inert even if it
//! were), it is not pinned, and its file descriptors live only in this process, so the agent's
//! death frees it like everything else. Each fault still gets fresh maps of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aya::programs::{Program, ProgramError};
use aya::Ebpf;

use super::ebpf::{self, EbpfError};

/// How long the background refill waits before it starts, so it does not compete for the
/// CPU with the apply that took the spare.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// One object's spare.
pub struct Warm {
    object: &'static [u8],
    programs: &'static [&'static str],
    spare: Mutex<Option<Ebpf>>,
    filling: AtomicBool,
}

/// `ebpf/drop.bpf.c` with its four programs (TCX and cgroup, ingress and egress).
pub static DROP: Warm = Warm::new(
    ebpf::DROP_OBJECT,
    &[
        "fl_drop_tc_in",
        "fl_drop_tc_eg",
        "fl_drop_cg_in",
        "fl_drop_cg_eg",
    ],
);
/// `ebpf/dns.bpf.c`.
pub static DNS: Warm = Warm::new(ebpf::DNS_OBJECT, &[super::dns::PROGRAM]);
/// `ebpf/keep.bpf.c`: the dispatcher of a kept TCX link.
pub static KEEP: Warm = Warm::new(super::keep::KEEP_OBJECT, &[super::keep::PROGRAM]);
/// `ebpf/steer.bpf.c` with its egress and ingress programs.
pub static STEER: Warm = Warm::new(
    super::tc::steer::STEER_OBJECT,
    &[super::tc::steer::PROGRAM, super::tc::steer::INGRESS_PROGRAM],
);

/// Loads a program unless the spare it came from already did.
pub fn ensure_loaded(load: impl FnOnce() -> Result<(), ProgramError>) -> Result<(), ProgramError> {
    match load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(e) => Err(e),
    }
}

fn verify(obj: &mut Ebpf, name: &str) -> Result<(), EbpfError> {
    let _t = tracing::debug_span!("ebpf_prog_verify", program = name).entered();
    let prog = obj
        .program_mut(name)
        .ok_or_else(|| EbpfError::Missing(format!("program {name}")))?;
    let loaded = match prog {
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        other => {
            return Err(EbpfError::Missing(format!(
                "program {name} of a type made on attach only ({:?})",
                other.prog_type()
            )))
        }
    };
    loaded.map_err(|source| EbpfError::Verify {
        program: name.to_string(),
        source: Box::new(source),
    })
}

impl Warm {
    pub const fn new(object: &'static [u8], programs: &'static [&'static str]) -> Warm {
        Warm {
            object,
            programs,
            spare: Mutex::new(None),
            filling: AtomicBool::new(false),
        }
    }

    /// A fresh object: its maps created and every program verified.
    fn make(&self) -> Result<Ebpf, EbpfError> {
        let mut obj = ebpf::load(self.object)?;
        for name in self.programs {
            verify(&mut obj, name)?;
        }
        Ok(obj)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Ebpf>> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the spare now unless there is one (a driver's availability check at start).
    pub fn fill(&self) -> Result<(), EbpfError> {
        if self.slot().is_some() {
            return Ok(());
        }
        let obj = self.make()?;
        self.slot().get_or_insert(obj);
        Ok(())
    }

    /// The spare (or, when none is ready, an object made now), and the next spare starts
    /// being made in the background.
    pub fn take(&'static self) -> Result<Ebpf, EbpfError> {
        let spare = self.slot().take();
        let obj = match spare {
            Some(obj) => obj,
            None => {
                let _t = tracing::debug_span!("ebpf_no_spare").entered();
                self.make()?
            }
        };
        self.refill();
        Ok(obj)
    }

    /// Kernel ids of the spare's programs (a sweep leaves them alone).
    pub fn prog_ids(&self) -> Vec<u32> {
        let slot = self.slot();
        let Some(obj) = slot.as_ref() else {
            return Vec::new();
        };
        obj.programs()
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect()
    }

    fn refill(&'static self) {
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        // In the agent's own netns: `take` runs on the target's netns thread.
        let spawned = super::netns::spawn_home("fl-ebpf-warm", move || {
            std::thread::sleep(REFILL_DELAY);
            if let Err(e) = self.fill() {
                tracing::warn!(error = %ebpf::chain(&e), "cannot make a spare eBPF object; the next fault makes its own");
            }
            self.filling.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.filling.store(false, Ordering::Release);
        }
    }
}
