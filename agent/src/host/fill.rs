//! The worker side of `disk-fill`: `faultline-agent __worker disk-fill --fault-id ID
//! --deadline-unix-ms N --parent-pid P --dir SHOWN --file NAME (--percent P | --size B)
//! --keep-free B`, with the directory to fill handed over as descriptor 3 (opened by the agent
//! in the target's filesystem without following links, see [`rootfs`](super::rootfs)).
//!
//! The space is taken by one file that has no name: `O_TMPFILE` in that directory (or, on a
//! filesystem without it, a file created `O_EXCL` under NAME and unlinked at once), allocated
//! with `fallocate` (or written with zeros where that is not supported). Only this process
//! holds it, so the kernel frees the space the moment the worker ends, however it ends: at its
//! deadline, on revert (SIGKILL), or with the agent (PR_SET_PDEATHSIG, stdin EOF).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::os;
use super::rootfs::Dir;
use super::worker::opt;

/// The descriptor a disk-fill worker gets: the directory to fill.
pub const FILL_DIR_FD: i32 = os::FIRST_PASSED_FD;
/// The text line a fill worker prints once its space is allocated.
pub const FILLED: &str = "filled";

/// Space on a filesystem as `df` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes in use (total minus free, reserved blocks included).
    pub used: u64,
    /// Bytes an unprivileged writer may still take.
    pub avail: u64,
    /// The fragment size: what the filesystem allocates in.
    pub unit: u64,
}

/// How many bytes to take: to reach `percent` (of used + available, as `df` shows it, never
/// above it) or `size`, never leaving less than `keep_free` available; whole allocation units.
/// `(bytes, capped by keepFree)`.
pub fn fill_bytes(space: Space, percent: Option<u32>, size: u64, keep_free: u64) -> (u64, bool) {
    let want = match percent {
        Some(p) => {
            let total = u128::from(space.used) + u128::from(space.avail);
            let target = total * u128::from(p) / 100;
            u64::try_from(target.saturating_sub(u128::from(space.used))).unwrap_or(u64::MAX)
        }
        None => size,
    };
    let cap = space.avail.saturating_sub(keep_free);
    let unit = space.unit.max(1);
    let bytes = want.min(cap);
    // A percent is a ceiling (df rounds up); a size is taken whole unless keepFree caps it.
    let bytes = if percent.is_some() || want > cap {
        bytes / unit * unit
    } else {
        bytes
    };
    (bytes, want > cap)
}

/// `fstatvfs` of an open file's filesystem.
#[allow(unsafe_code)]
pub fn space_of(fd: BorrowedFd<'_>) -> io::Result<Space> {
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a writable `statvfs` the kernel fills in.
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(Space {
        used: (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * unit,
        avail: st.f_bavail as u64 * unit,
        unit,
    })
}

/// A file without a name in `dir`: `O_TMPFILE`, or `fallback` created exclusively and removed
/// at once where the filesystem has no `O_TMPFILE` (overlayfs before Linux 6.6).
#[allow(unsafe_code)]
pub fn unlinked_file(dir: &Dir, fallback: &str) -> Result<OwnedFd, String> {
    let dot = CString::new(".").map_err(|e| e.to_string())?;
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor (O_PATH descriptors work as the base of *at calls),
    // a NUL-terminated name that outlives the call, flags and a mode.
    let fd = unsafe {
        libc::openat(
            dir.fd().as_raw_fd(),
            dot.as_ptr(),
            flags,
            0o600 as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let e = io::Error::last_os_error();
    if !matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    ) {
        return Err(format!("{}: O_TMPFILE: {e}", dir.shown().display()));
    }
    let file = dir.create(fallback).map_err(|e| e.to_string())?;
    dir.remove(fallback).map_err(|e| e.to_string())?;
    Ok(file)
}

/// Allocates `len` bytes of `fd`: `fallocate`, or zeros written and synced where the
/// filesystem does not support it.
#[allow(unsafe_code)]
pub fn allocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let l = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a valid descriptor open for writing; mode 0 allocates and extends the file.
    if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, l) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    let mut f = std::fs::File::from(fd.try_clone()?);
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Runs a fill worker after "go": allocates, reports, holds the space until `end`.
pub fn run(o: &BTreeMap<String, String>, dir: &Dir, end: Instant) -> Result<(), String> {
    let name: String = opt(o, "file")?;
    let keep_free: u64 = opt(o, "keep-free")?;
    let percent: Option<u32> = o.get("percent").map(|_| opt(o, "percent")).transpose()?;
    let size: u64 = if percent.is_some() {
        0
    } else {
        opt(o, "size")?
    };
    let shown = PathBuf::from(dir.shown());
    let file = unlinked_file(dir, &name)?;
    let space = space_of(std::os::fd::AsFd::as_fd(&file))
        .map_err(|e| format!("{}: statvfs: {e}", shown.display()))?;
    let (bytes, capped) = fill_bytes(space, percent, size, keep_free);
    if bytes == 0 {
        return Err(format!(
            "nothing to fill in {}: {} used, {} available{}",
            shown.display(),
            space.used,
            space.avail,
            if capped {
                format!(", and keepFree keeps {keep_free} bytes available")
            } else {
                " (already as full as asked)".into()
            }
        ));
    }
    allocate(&file, bytes)
        .map_err(|e| format!("{}: allocate {bytes} bytes: {e}", shown.display()))?;
    say(&serde_json::json!({
        "filled_bytes": bytes,
        "capped_by_keep_free": u64::from(capped),
    })
    .to_string());
    say(FILLED);
    while Instant::now() < end {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(500)));
    }
    drop(file);
    Ok(())
}

/// One line to the agent (a closed pipe means it is gone; stdin EOF ends us right after).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn a_percent_fills_to_that_share_of_used_plus_available() {
        // 64 MiB tmpfs, 4 MiB used: 80% is 51.2 MiB used, so 47.2 MiB more.
        let s = Space {
            used: 4 * MI,
            avail: 60 * MI,
            unit: 4096,
        };
        let want = (64 * MI * 80 / 100 - 4 * MI) / 4096 * 4096;
        assert_eq!(fill_bytes(s, Some(80), 0, MI), (want, false));
        assert!(
            (4 * MI + want) * 100 / (64 * MI) <= 80,
            "never above the percent"
        );
        assert_eq!(fill_bytes(s, Some(5), 0, MI), (0, false));
        assert_eq!(fill_bytes(s, None, 10 * MI, 0), (10 * MI, false));
    }

    #[test]
    fn keep_free_stops_the_fill_short() {
        let s = Space {
            used: 0,
            avail: 64 * MI,
            unit: 4096,
        };
        assert_eq!(fill_bytes(s, Some(99), 0, 32 * MI), (32 * MI, true));
        assert_eq!(fill_bytes(s, None, 100 * MI, 64 * MI), (0, true));
        assert_eq!(fill_bytes(s, None, 100 * MI, 0), (64 * MI, true));
    }

    #[test]
    fn an_unlinked_file_takes_space_only_while_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let proc = crate::host::proc::ProcTable::new("/proc");
        let me = proc.identity(std::process::id()).expect("me");
        let dir = crate::host::rootfs::Root::of(&proc, me)
            .and_then(|r| r.dir(tmp.path()))
            .expect("dir");
        let f = unlinked_file(&dir, ".faultline-io-t-0").expect("tmpfile");
        allocate(&f, 4 * MI).expect("allocate");
        assert_eq!(
            std::fs::File::from(f.try_clone().expect("dup"))
                .metadata()
                .expect("meta")
                .len(),
            4 * MI
        );
        assert!(dir.names().expect("ls").is_empty(), "the file has no name");
    }
}
