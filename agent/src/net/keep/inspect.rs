//! Looking into kept links from any process (by kernel ids, no descriptor of ours needed):
//! which program sits in a dispatcher's slot, and which programs run on a hook at all. A fault
//! program in a kept link has no link of its own, so the kernel's list of links names only
//! the dispatcher.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

use super::{PROGRAM, SLOT_MAP};

/// The id of the program in a dispatcher's slot (`fl_keep_slot[0]`), given the dispatcher's
/// map ids; `None` when the slot is empty. Works on any process's dispatcher (by map id).
pub fn slot_of(dispatcher_map_ids: &[u32]) -> Option<u32> {
    for id in dispatcher_map_ids {
        let Ok(data) = MapData::from_id(*id) else {
            continue;
        };
        let is_slot = data
            .info()
            .ok()
            .is_some_and(|i| i.name_as_str() == Some(SLOT_MAP));
        if is_slot {
            return lookup_prog_id(data.fd().as_fd());
        }
    }
    None
}

/// `BPF_MAP_LOOKUP_ELEM` of key 0 in a program array, which the kernel answers with the id of
/// the program there (aya 0.14's `ProgramArray` has no lookup).
#[allow(unsafe_code)]
fn lookup_prog_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    /// The `BPF_MAP_*_ELEM` member of `union bpf_attr` (the kernel zero-fills the rest).
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let key: u32 = 0;
    let mut value: u32 = 0;
    let attr = ElemAttr {
        map_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        pad: 0,
        key: &key as *const u32 as u64,
        value: &mut value as *mut u32 as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid BPF_MAP_LOOKUP_ELEM attribute whose size is passed; `key` and
    // `value` are live u32s for the whole call (a program array's key and syscall value are 4
    // bytes), and `fd` is a map descriptor borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    (r == 0).then_some(value)
}

/// Ids of the programs running on a hook somewhere on this host: every program of a link,
/// and the program in each attached dispatcher's slot (a fault program in a kept link has no
/// link of its own). Tests and tools use it to tell a fault's programs from spares.
pub fn running_program_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.program_id())
        .collect();
    for d in crate::net::ebpf::programs_named(PROGRAM) {
        if ids.contains(&d.id) {
            if let Some(p) = slot_of(&d.map_ids) {
                ids.push(p);
            }
        }
    }
    ids
}
