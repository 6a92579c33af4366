//! Kept TCX links: an interface eBPF fault's apply is a map write, not an attach.
//!
//! A TCX attach swaps the interface's program array and waits for an RCU grace period under
//! the RTNL lock (12 ms p50 here, 28 ms back to back): that was the floor of every `drop`,
//! `partition`, `dns` and `network` apply. Instead, the agent attaches a small dispatcher
//! (`ebpf/keep.bpf.c`, one loaded copy per link) to a (netns, ifindex, hook) once, and a fault
//! [`occupy`]s a free one: its program goes into the dispatcher's one-entry program array,
//! which the dispatcher tail-calls. A program-array update swaps one pointer and frees the old
//! program after a grace period in the background; nothing waits. A second fault on the same
//! hook takes a second kept link, so neither can hide the other (a tail call does not return).
//!
//! Safety, as before:
//! - links are never pinned and live only in this process: when it dies the kernel detaches
//!   them, and clears every program array whose last user descriptor closed;
//! - each fault program keeps its own maps and deadline check, so a fault past its deadline
//!   is inert while its slot is full;
//! - dropping a [`Slot`] (revert) clears the program-array entry at once;
//! - a link without a fault for the idle expiry ([`set_idle`], `network.link_idle` in the
//!   config file, default [`DEFAULT_IDLE`]) is detached by a background thread;
//! - a link whose interface went away (deleted, or its netns gone) is never reused: the kernel
//!   reports ifindex 0 for it, and the key has the netns inode and ifindex, so a recreated
//!   interface gets a fresh attach.
//!
//! [`occupy`] must run on a thread inside the interface's netns (the netns thread).

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{MapData, ProgramArray};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, MultiProgLink as _, SchedClassifier, TcAttachType};
use aya::{include_bytes_aligned, Ebpf};

use super::ebpf::EbpfError;
use super::rules::Hook;

mod inspect;
pub use inspect::{running_program_ids, slot_of};

/// `ebpf/keep.bpf.c`, compiled.
pub static KEEP_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keep.bpf.o"));
/// The dispatcher's (kernel) name.
pub const PROGRAM: &str = "fl_keep_tc";
const SLOT_MAP: &str = "fl_keep_slot";

/// How long a kept link without a fault stays attached by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// The accepted range of the idle expiry.
pub const MIN_IDLE: Duration = Duration::from_millis(100);
pub const MAX_IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("interface {interface}: {source}")]
    Interface {
        interface: String,
        #[source]
        source: nix::Error,
    },
    #[error("reading this thread's netns: {0}")]
    Netns(std::io::Error),
    #[error("dispatcher program {PROGRAM}: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("dispatcher map {SLOT_MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the fault program has no file descriptor: {0}")]
    Fd(aya::programs::ProgramError),
}

/// Which hook of which interface in which netns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    /// (device, inode) of the netns.
    netns: (u64, u64),
    ifindex: u32,
    ingress: bool,
}

/// One kept link with its dispatcher.
struct Kept {
    key: Key,
    // Field order = drop order: the link first, then the dispatcher's object.
    link: aya::programs::tc::SchedClassifierLink,
    ebpf: Ebpf,
    link_id: u32,
    /// The occupying fault's token (or the reaper's while it checks the link); `None` = free
    /// since `idle_since`.
    used_by: Option<u64>,
    idle_since: Instant,
    /// When it was attached: of two kept links on one hook, the later is nearer the head.
    attached_at: Instant,
    /// Unique among the kept links of this process.
    serial: u64,
}

impl Kept {
    fn link_fd(&self) -> Option<std::os::fd::RawFd> {
        self.link.fd().ok().map(|fd| fd.as_raw_fd())
    }
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
static IDLE_MS: AtomicU64 = AtomicU64::new(DEFAULT_IDLE.as_millis() as u64);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
static REAPING: AtomicBool = AtomicBool::new(false);

fn kept() -> MutexGuard<'static, Vec<Kept>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets the idle expiry (validated by the config file: [`MIN_IDLE`]..=[`MAX_IDLE`]).
pub fn set_idle(idle: Duration) {
    let ms = u64::try_from(idle.clamp(MIN_IDLE, MAX_IDLE).as_millis()).unwrap_or(u64::MAX);
    IDLE_MS.store(ms, Ordering::Relaxed);
}

/// The idle expiry in force.
pub fn idle() -> Duration {
    Duration::from_millis(IDLE_MS.load(Ordering::Relaxed))
}

/// A fault's place in a kept link. Dropping it clears the place at once (the fault program
/// no longer runs from the next packet on) and leaves the link to idle out.
#[derive(Debug)]
pub struct Slot {
    token: u64,
    /// The kept link's kernel id.
    pub link_id: u32,
    /// Whether this apply attached the link (cold) or found it kept (warm).
    pub attached: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        vacate(self.token);
    }
}

fn key_here(interface: &str, hook: Hook) -> Result<Key, KeepError> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net").map_err(KeepError::Netns)?;
    let ifindex =
        nix::net::if_::if_nametoindex(interface).map_err(|source| KeepError::Interface {
            interface: interface.to_string(),
            source,
        })?;
    Ok(Key {
        netns: (meta.dev(), meta.ino()),
        ifindex,
        ingress: hook == Hook::Ingress,
    })
}

/// A number field (`ifindex`, `link_id`) of a link's `/proc/self/fdinfo` entry. The kernel
/// reports ifindex 0 once the link's device is gone.
fn link_field(link: &aya::programs::tc::SchedClassifierLink, field: &str) -> Option<u32> {
    fd_field(link.fd().ok()?.as_raw_fd(), field)
}

/// [`link_field`] by descriptor number (the caller keeps the descriptor open).
fn fd_field(fd: std::os::fd::RawFd, field: &str) -> Option<u32> {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    fdinfo_field(&text, field)
}

/// The number after `field:` in fdinfo text (`ifindex:\t3`, `attach_type:\t47 (egress)`).
fn fdinfo_field(text: &str, field: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn link_ifindex_of(fd: std::os::fd::RawFd) -> Option<u32> {
    fd_field(fd, "ifindex")
}

fn slot_map(ebpf: &mut Ebpf) -> Result<ProgramArray<&mut MapData>, KeepError> {
    let map = ebpf
        .map_mut(SLOT_MAP)
        .ok_or_else(|| EbpfError::Missing(format!("map {SLOT_MAP}")))?;
    Ok(ProgramArray::try_from(map)?)
}

/// Puts `prog` (loaded, in the calling thread's netns) on `interface`'s `hook`: into a free
/// kept link there, or into a dispatcher attached now (first in the TCX chain) and kept.
///
/// Whether a kept link is still on its device is read from its fdinfo, which takes the RTNL
/// lock in the kernel: that read happens with the link reserved and the registry unlocked,
/// so a revert (or an apply elsewhere) never waits behind someone else's RTNL holder. Of the
/// free links, the one attached last is taken: it is the nearest to the head of the chain.
pub fn occupy(interface: &str, hook: Hook, prog: &SchedClassifier) -> Result<Slot, KeepError> {
    let key = key_here(interface, hook)?;
    let fd = prog.fd().map_err(KeepError::Fd)?;
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    loop {
        let _t = tracing::debug_span!("ebpf_keep_warm").entered();
        // Reserve the candidate, so neither the reaper nor another apply takes it.
        let candidate = {
            let mut all = kept();
            let found = all
                .iter_mut()
                .filter(|k| k.key == key && k.used_by.is_none())
                .max_by_key(|k| k.attached_at);
            found.map(|k| {
                k.used_by = Some(token);
                k.link_fd()
            })
        };
        let Some(link_fd) = candidate else { break };
        if link_fd.is_some_and(|fd| link_ifindex_of(fd) == Some(key.ifindex)) {
            let mut all = kept();
            let Some(k) = all.iter_mut().find(|k| k.used_by == Some(token)) else {
                break;
            };
            let link_id = k.link_id;
            if let Err(e) = slot_map(&mut k.ebpf).and_then(|mut m| Ok(m.set(0, fd, 0)?)) {
                k.used_by = None;
                return Err(e);
            }
            return Ok(Slot {
                token,
                link_id,
                attached: false,
            });
        }
        // Its device is gone: detach it (outside the lock) and look again.
        let dead = {
            let mut all = kept();
            all.iter()
                .position(|k| k.used_by == Some(token))
                .map(|i| all.swap_remove(i))
        };
        drop(dead);
    }
    let _t = tracing::debug_span!("ebpf_keep_attach").entered();
    let mut obj = super::warm::KEEP.take()?;
    slot_map(&mut obj)?.set(0, fd, 0)?;
    let disp: &mut SchedClassifier = obj
        .program_mut(PROGRAM)
        .ok_or_else(|| EbpfError::Missing(format!("program {PROGRAM}")))?
        .try_into()?;
    super::warm::ensure_loaded(|| disp.load())?;
    let attach_type = match hook {
        Hook::Ingress => TcAttachType::Ingress,
        Hook::Egress => TcAttachType::Egress,
    };
    // First in the chain when attached, so a dropped packet never reaches later programs. A
    // link reused later keeps that position: links attached since run before it
    // (docs/network.md, "Kept TCX links").
    let id = disp.attach_with_options(
        interface,
        attach_type,
        TcAttachOptions::TcxOrder(LinkOrder::first()),
    )?;
    let link = disp.take_link(id)?;
    let link_id = link_field(&link, "link_id").unwrap_or(0);
    kept().push(Kept {
        key,
        link,
        ebpf: obj,
        link_id,
        used_by: Some(token),
        idle_since: Instant::now(),
        attached_at: Instant::now(),
        serial: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
    });
    start_reaper();
    Ok(Slot {
        token,
        link_id,
        attached: true,
    })
}

/// Clears the slot of `token`; its link idles from now.
fn vacate(token: u64) {
    let mut all = kept();
    let Some(i) = all.iter().position(|k| k.used_by == Some(token)) else {
        return;
    };
    let cleared = slot_map(&mut all[i].ebpf).and_then(|mut m| Ok(m.clear_index(&0)?));
    match cleared {
        Ok(()) => {
            all[i].used_by = None;
            all[i].idle_since = Instant::now();
        }
        Err(e) => {
            // The entry cannot be cleared: the link goes now (it detaches when dropped).
            tracing::warn!(error = %e, "cannot clear a kept TCX link's slot; detaching the link");
            let k = all.swap_remove(i);
            drop(all);
            drop(k);
        }
    }
}

/// Kept links now, and how many of them hold a fault.
pub fn count() -> (usize, usize) {
    let all = kept();
    (
        all.len(),
        all.iter().filter(|k| k.used_by.is_some()).count(),
    )
}

/// Detaches every kept link that has been free for the idle expiry or whose interface is
/// gone (on the calling thread: each detach waits for a grace period). Returns how many.
pub fn expire() -> usize {
    expire_free_for(idle())
}

/// Detaches every kept link without a fault now, whatever its idle time (the next fault on
/// its hook attaches afresh: how the bench measures a cold apply). Returns how many.
pub fn detach_free() -> usize {
    expire_free_for(Duration::ZERO)
}

fn expire_free_for(idle: Duration) -> usize {
    // Free links past the idle expiry go at once; the other free ones are reserved for the
    // reaper while their device is checked outside the lock (see [`occupy`]).
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    type Check = (u64, u32, Option<std::os::fd::RawFd>);
    let (mut gone, check): (Vec<Kept>, Vec<Check>) = {
        let mut all = kept();
        let mut gone = Vec::new();
        let mut check = Vec::new();
        let mut i = 0;
        while i < all.len() {
            let k = &mut all[i];
            if k.used_by.is_some() {
                i += 1;
            } else if k.idle_since.elapsed() >= idle {
                gone.push(all.swap_remove(i));
            } else {
                k.used_by = Some(token);
                check.push((k.serial, k.key.ifindex, k.link_fd()));
                i += 1;
            }
        }
        (gone, check)
    };
    let dead: Vec<u64> = check
        .into_iter()
        .filter(|(_, ifindex, fd)| fd.is_none_or(|fd| link_ifindex_of(fd) != Some(*ifindex)))
        .map(|(serial, _, _)| serial)
        .collect();
    {
        let mut all = kept();
        let mut i = 0;
        while i < all.len() {
            let k = &mut all[i];
            if k.used_by != Some(token) {
                i += 1;
            } else if dead.contains(&k.serial) {
                gone.push(all.swap_remove(i));
            } else {
                // Free again, with its idle time unchanged.
                k.used_by = None;
                i += 1;
            }
        }
    }
    let n = gone.len();
    if n > 0 {
        let _t = tracing::debug_span!("ebpf_keep_expire", links = n).entered();
        drop(gone);
        tracing::debug!(links = n, "idle kept TCX links detached");
    }
    n
}

/// Starts the thread that expires idle links, unless it runs; it ends when no link is kept.
fn start_reaper() {
    if REAPING.swap(true, Ordering::AcqRel) {
        return;
    }
    // In the agent's own netns: the first link is kept from a target's netns thread.
    let spawned = super::netns::spawn_home("fl-keep-idle", || loop {
        let tick = (idle() / 4).clamp(Duration::from_millis(25), Duration::from_secs(1));
        std::thread::sleep(tick);
        expire();
        let empty = kept().is_empty();
        if empty {
            REAPING.store(false, Ordering::Release);
            // A link kept meanwhile restarts the thread unless this one goes on.
            if kept().is_empty() || REAPING.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    });
    if spawned.is_err() {
        REAPING.store(false, Ordering::Release);
        tracing::warn!("cannot start the thread that detaches idle kept TCX links");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCX link's fdinfo in the layout of the kernel's `bpf_link_show_fdinfo` and
    /// `tcx_link_fdinfo`.
    const FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2085\nlink_type:\ttcx\nlink_id:\t412\nprog_tag:\t1fca06a6a1d4ae67\nprog_id:\t1297\nifindex:\t3\nattach_type:\t47 (egress)\n";

    #[test]
    fn fdinfo_fields_are_read_by_exact_name() {
        assert_eq!(fdinfo_field(FDINFO, "ifindex"), Some(3));
        assert_eq!(fdinfo_field(FDINFO, "link_id"), Some(412));
        assert_eq!(fdinfo_field(FDINFO, "attach_type"), Some(47));
        // `prog_id` is not `prog_tag`, and a missing field is None.
        assert_eq!(fdinfo_field(FDINFO, "prog_id"), Some(1297));
        assert_eq!(fdinfo_field(FDINFO, "target_btf_id"), None);
        // A link whose device is gone reports ifindex 0: never equal to a kept key's.
        assert_eq!(fdinfo_field("ifindex:\t0\n", "ifindex"), Some(0));
    }

    #[test]
    fn the_idle_expiry_is_clamped_to_its_range() {
        set_idle(Duration::from_millis(1));
        assert_eq!(idle(), MIN_IDLE);
        set_idle(Duration::from_secs(7200));
        assert_eq!(idle(), MAX_IDLE);
        set_idle(DEFAULT_IDLE);
        assert_eq!(idle(), Duration::from_secs(30));
    }
}
