//! The OS calls that need care: one long-lived spawner thread starts every worker and guard
//! (PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it must never be
//! a tokio or short-lived thread), descriptors handed to a child at fixed numbers, signals to
//! a process identity through a pidfd (a reused PID is never hit), and the calling thread's
//! CPU clock.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use super::proc::{Identity, ProcTable};

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

/// Starts a child process from the agent's spawner thread (started on first use; it lives as
/// long as the process).
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let (reply, answer) = mpsc::channel();
    {
        let mut guard = SPAWNER
            .lock()
            .map_err(|_| io::Error::other("the spawner lock is poisoned"))?;
        if guard.is_none() {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("faultline-spawner".into())
                .spawn(move || {
                    for mut req in rx {
                        // The asker may have gone; nothing to do then.
                        let _ = req.reply.send(req.cmd.spawn());
                    }
                })?;
            *guard = Some(tx);
        }
        let tx = guard
            .as_ref()
            .ok_or_else(|| io::Error::other("no spawner thread"))?;
        tx.send(SpawnRequest { cmd, reply })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread did not answer"))?
}

/// The first descriptor number handed to a child by [`pass_fds`]: `fds[i]` becomes `3 + i`.
pub const FIRST_PASSED_FD: RawFd = 3;

/// Arranges for `fds` to be open in the child of `cmd` as descriptors 3, 4, ... (everything
/// else of ours is close-on-exec). Returns copies that must stay open until the child is
/// spawned.
#[allow(unsafe_code)]
pub fn pass_fds(cmd: &mut Command, fds: &[BorrowedFd<'_>]) -> io::Result<Vec<OwnedFd>> {
    // Copies above every target number first, so that no dup2 below overwrites a source.
    let min = FIRST_PASSED_FD + RawFd::try_from(fds.len()).map_err(io::Error::other)? + 8;
    let mut copies = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we borrow; no memory is touched.
        let c = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if c < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        copies.push(unsafe { OwnedFd::from_raw_fd(c) });
    }
    let raw: Vec<RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the forked child before exec and calls only dup2, which is
    // async-signal-safe, on descriptors that are open there (inherited copies); it allocates
    // nothing. dup2 clears close-on-exec on the new number, so exactly these survive exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, src) in raw.iter().enumerate() {
                let dst = FIRST_PASSED_FD + i as RawFd;
                if libc::dup2(*src, dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(copies)
}

/// Takes ownership of descriptor `fd`, handed to this process by [`pass_fds`]. Call it once
/// per number, at start, after [`close_inherited_fds`] kept it.
#[allow(unsafe_code)]
pub fn take_passed_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!(
            "descriptor {fd} was not passed: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the descriptor is open (checked above), it was handed over at exec and this
    // function is its only taker, so nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A pidfd for a PID; `Ok(None)` when the kernel has no pidfd_open (before 5.3).
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> io::Result<Option<OwnedFd>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match last_errno() {
            libc::ENOSYS => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[allow(unsafe_code)]
fn pidfd_send_signal(fd: &OwnedFd, signo: i32) -> io::Result<()> {
    // SAFETY: a valid open pidfd, a signal number, a null siginfo (the kernel fills in a
    // SI_USER one) and zero flags; no memory of ours is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn kill_pid(pid: u32, signo: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes two integers; pid > 0 so it addresses one process, never a group.
    let rc = unsafe { libc::kill(pid, signo) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signo` to the process `id` if it is still that process; `Ok(false)` when it is gone
/// (exited, a zombie, or its PID now belongs to another process).
///
/// The pidfd is opened before the start time is checked: if the start time still matches, the
/// pidfd refers to the process we saw, and a signal through it cannot reach a newcomer.
pub fn signal(proc: &ProcTable, id: Identity, signo: i32) -> io::Result<bool> {
    if id.pid <= 1 {
        return Err(io::Error::other(format!(
            "refusing to signal pid {}",
            id.pid
        )));
    }
    let fd = match pidfd_open(id.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) => return Err(e),
    };
    if !proc.is_alive(id) {
        return Ok(false);
    }
    let sent = match &fd {
        Some(fd) => pidfd_send_signal(fd, signo),
        None => kill_pid(id.pid, signo),
    };
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until every identity is gone (or a zombie), up to `limit`; returns those left.
pub fn wait_gone(proc: &ProcTable, ids: &[Identity], limit: Duration) -> Vec<Identity> {
    let end = Instant::now() + limit;
    loop {
        let left: Vec<Identity> = ids.iter().copied().filter(|i| proc.is_alive(*i)).collect();
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child to exit, up to `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            _ => return None,
        }
    }
}

/// Closes every descriptor above `keep_through` (2 = all but stdio; more for the descriptors
/// [`pass_fds`] handed over). A worker or guard calls it first thing: it must not keep anything
/// of the agent's alive (the state-dir lock, eBPF links, sockets) should a library have left a
/// descriptor without close-on-exec; the guard outlives the agent.
#[allow(unsafe_code)]
pub fn close_inherited_fds(keep_through: RawFd) {
    let first = u32::try_from(keep_through.max(2) + 1).unwrap_or(3);
    // SAFETY: close_range takes integers only; this runs at the start of the child's main,
    // before it opens anything, so no descriptor above `keep_through` is in use by it.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if rc == 0 {
        return;
    }
    // Kernels before 5.9: list them first, then close (the listing's own descriptor is gone
    // by then).
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > keep_through.max(2))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; a descriptor that is already closed gives EBADF, which is harmless.
        unsafe { libc::close(fd) };
    }
}

/// Faults in a block we own in one call (MADV_POPULATE_WRITE, Linux 5.14+) instead of one
/// page fault per 4 KiB page, so a memory worker reaches its size fast; an older kernel's
/// refusal is harmless (the pages are then faulted in as they are touched).
#[allow(unsafe_code)]
pub fn populate(block: &mut [std::mem::MaybeUninit<u8>]) {
    const PAGE: usize = 4096;
    let start = block.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(PAGE);
    let len = (start + block.len()).saturating_sub(aligned) / PAGE * PAGE;
    if len == 0 {
        return;
    }
    // SAFETY: [aligned, aligned + len) lies inside `block`, an allocation we hold a unique
    // borrow of; MADV_POPULATE_WRITE only backs it with (zeroed) pages, as writes would.
    let _ = unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
}

/// CPU time the calling thread has used.
#[allow(unsafe_code)]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn signal_checks_the_start_time_and_reports_gone() {
        let table = ProcTable::new("/proc");
        let mut cmd = Command::new("sleep");
        cmd.arg("30").stdin(Stdio::null());
        let mut child = spawn(cmd).expect("spawn sleep");
        let pid = child.id();
        let id = table.identity(pid).expect("identity");
        let stale = Identity {
            pid,
            start: id.start + 7,
        };
        assert!(!signal(&table, stale, libc::SIGKILL).expect("stale"));
        assert!(table.is_alive(id), "a stale identity must not be signalled");
        assert!(signal(&table, id, libc::SIGKILL).expect("kill"));
        let st = wait_child(&mut child, Duration::from_secs(5)).expect("exit");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        assert!(!signal(&table, id, libc::SIGKILL).expect("gone"));
        assert!(signal(&table, Identity { pid: 1, start: 0 }, 9).is_err());
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let a = thread_cpu_time();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let used = thread_cpu_time() - a;
        assert!(used >= Duration::from_millis(10), "{used:?}");
    }
}
