//! Opens a network namespace file without ever blocking or waking a device: the path is first
//! opened with `O_PATH` (which never calls the file's own `open`, so a FIFO such as
//! `/run/initctl` cannot wedge the agent and a device such as `/dev/watchdog` is not armed),
//! the inode is checked to live on nsfs (`NSFS_MAGIC`), and only then is that same inode
//! reopened through `/proc/self/fd` for `setns`, and its namespace type asked
//! (`NS_GET_NSTYPE`) so a mount or PID namespace is not taken for a network one.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

/// `_IO(0xb7, 0x3)`: the namespace type of an nsfs file descriptor (Linux 4.11+).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Why a path is not a network namespace. Each message reads after the path
/// (`/run/initctl is not a network namespace (a fifo)`) through [`NsFileError::sentence`];
/// `Display` is the bare reason, for callers that name the path themselves.
#[derive(Debug, thiserror::Error)]
pub enum NsFileError {
    #[error("{0}")]
    Open(#[source] std::io::Error),
    /// Not on nsfs; the file type (`a fifo`, `a regular file`, `a directory`, ...).
    #[error("not a network namespace ({0})")]
    NotNamespace(&'static str),
    /// A namespace, of another type (`mnt`, `pid`, ...).
    #[error("a {0} namespace, not a network namespace")]
    WrongType(&'static str),
}

impl NsFileError {
    /// The reason as a predicate of the path: `is not a network namespace (a fifo)`.
    pub fn sentence(&self) -> String {
        match self {
            NsFileError::Open(e) => format!("cannot be opened: {e}"),
            other => format!("is {other}"),
        }
    }
}

/// An open network namespace and its identity (nsfs device and inode).
#[derive(Debug)]
pub struct NetnsFile {
    pub file: File,
    pub dev: u64,
    pub ino: u64,
}

fn kind_of(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a fifo",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a namespace file",
    }
}

fn ns_type_name(t: libc::c_int) -> &'static str {
    match t {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "net",
        0x80 => "time",
        _ => "unknown",
    }
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// The namespace type of an open nsfs file, `None` on kernels without `NS_GET_NSTYPE` (there
/// `setns(CLONE_NEWNET)` itself refuses another type).
#[allow(unsafe_code)]
fn ns_type(file: &File) -> Option<libc::c_int> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an int; the descriptor is open
    // and owned by `file` for the whole call.
    let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    (t >= 0).then_some(t)
}

/// Opens `path` as a network namespace, refusing before any blocking open anything that is not
/// one. Symbolic links (including `/proc/<pid>/ns/net`) are followed by the kernel.
pub fn open_netns(path: &Path) -> Result<NetnsFile, NsFileError> {
    let o_path: OwnedFd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| NsFileError::Open(io(e)))?;
    let st = fstat(&o_path).map_err(|e| NsFileError::Open(io(e)))?;
    let fs = fstatfs(&o_path).map_err(|e| NsFileError::Open(io(e)))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(NsFileError::NotNamespace(kind_of(st.st_mode)));
    }
    // The same inode, now opened for real: an nsfs inode's open never blocks.
    let file =
        File::open(format!("/proc/self/fd/{}", o_path.as_raw_fd())).map_err(NsFileError::Open)?;
    if let Some(t) = ns_type(&file) {
        if t != libc::CLONE_NEWNET {
            return Err(NsFileError::WrongType(ns_type_name(t)));
        }
    }
    let meta = file.metadata().map_err(NsFileError::Open)?;
    Ok(NetnsFile {
        dev: meta.dev(),
        ino: meta.ino(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn refusal(p: &Path) -> String {
        match open_netns(p) {
            Err(e) => format!("{} {}", p.display(), e.sentence()),
            Ok(_) => panic!("{} opened as a network namespace", p.display()),
        }
    }

    #[test]
    fn fifos_files_directories_and_other_namespaces_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let started = Instant::now();
        let cases = [
            (fifo.as_path(), "is not a network namespace (a fifo)"),
            (
                file.as_path(),
                "is not a network namespace (a regular file)",
            ),
            (dir.path(), "is not a network namespace (a directory)"),
            (
                Path::new("/dev/null"),
                "is not a network namespace (a character device)",
            ),
            (
                Path::new("/proc/self/ns/mnt"),
                "is a mnt namespace, not a network namespace",
            ),
            (
                Path::new("/nonexistent/fl-netns"),
                "cannot be opened: No such file or directory",
            ),
        ];
        for (p, want) in cases {
            let msg = refusal(p);
            assert!(msg.contains(want), "{msg}");
        }
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_own_network_namespace_opens_with_its_identity() {
        let ns = open_netns(Path::new("/proc/self/ns/net")).expect("own netns");
        let want = std::fs::metadata("/proc/self/ns/net").expect("stat");
        assert_eq!((ns.dev, ns.ino), (want.dev(), want.ino()));
    }
}
