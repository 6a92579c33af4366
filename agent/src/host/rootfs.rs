//! Files in another process's filesystem, reached through `/proc/<pid>/root` (the directory
//! tree as that process sees it: its container's root and its mount namespace's mounts), and
//! never through a symbolic link: every directory on the way is opened with
//! `O_DIRECTORY|O_NOFOLLOW` relative to the one before (`openat`), files are created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600) and removed with `unlinkat` only when they are
//! regular files. A link planted in the target's filesystem therefore cannot make the agent,
//! which runs as root on the host, write or delete anywhere else.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::proc::{Identity, ProcTable};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a symbolic link; io faults never follow one (a link in the target's \
         filesystem could point anywhere on the host)"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory")]
    NotDir { path: PathBuf },
    #[error("{path} must be an absolute path without `..`")]
    BadPath { path: PathBuf },
    #[error("pid {pid} exited (or its PID now names another process) while its root was opened")]
    Gone { pid: u32 },
}

impl RootError {
    /// The path (or a component of it) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RootError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    fn io(path: &Path, source: io::Error) -> Self {
        RootError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Device and inode of a directory: the same pair means the same directory, whichever
/// process's root it was reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirId {
    pub dev: u64,
    pub ino: u64,
}

/// The root directory of one process, open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// `/proc/<pid>/root`, for messages.
    shown: PathBuf,
    proc_root: PathBuf,
    pub id: DirId,
}

impl Root {
    /// Opens the root of process `id`. The start time is checked after the open, so the
    /// descriptor is that of the process we saw, never of a newcomer with its PID.
    pub fn of(proc: &ProcTable, id: Identity) -> Result<Root, RootError> {
        let shown = proc.path(id.pid, "root");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&shown)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ESRCH) => RootError::Gone { pid: id.pid },
                _ => RootError::io(&shown, e),
            })?;
        if !proc.is_alive(id) {
            return Err(RootError::Gone { pid: id.pid });
        }
        let fd = OwnedFd::from(file);
        let id = dir_id(fd.as_fd(), &shown)?;
        Ok(Root {
            fd,
            shown,
            proc_root: proc.root().to_path_buf(),
            id,
        })
    }

    /// `/proc/<pid>/root`.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The directory `path` (absolute, without `..`) as this root shows it. Each component is
    /// opened with `O_NOFOLLOW`: a symbolic link anywhere on the way is refused, naming it.
    pub fn dir(&self, path: &Path) -> Result<Dir, RootError> {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(RootError::BadPath {
                path: path.to_path_buf(),
            });
        }
        let mut cur = self
            .fd
            .try_clone()
            .map_err(|e| RootError::io(&self.shown, e))?;
        let mut shown = self.shown.clone();
        for c in path.components() {
            let Component::Normal(name) = c else { continue };
            shown.push(name);
            cur = open_dir_at(cur.as_fd(), name.as_bytes(), &shown)?;
        }
        let id = dir_id(cur.as_fd(), &shown)?;
        Ok(Dir {
            fd: cur,
            shown,
            proc_root: self.proc_root.clone(),
            id,
        })
    }
}

/// A directory reached without following links, open (`O_PATH`).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    shown: PathBuf,
    proc_root: PathBuf,
    pub id: DirId,
}

impl Dir {
    /// A directory descriptor a worker inherited from the agent; `shown` is for messages.
    pub fn from_fd(fd: OwnedFd, shown: PathBuf) -> Result<Dir, RootError> {
        let id = dir_id(fd.as_fd(), &shown)?;
        Ok(Dir {
            fd,
            shown,
            proc_root: PathBuf::from("/proc"),
            id,
        })
    }

    /// Where this directory is, as the agent reaches it (`/proc/<pid>/root/tmp`).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path of an entry, for messages.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.shown.join(name)
    }

    /// Creates `name` for writing: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600. Anything already
    /// there, a symbolic link included, makes it fail (naming the path) instead of being
    /// followed or reused.
    #[allow(unsafe_code)]
    pub fn create(&self, name: &str) -> Result<OwnedFd, RootError> {
        let path = self.path_of(name);
        let c = c_name(name, &path)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid directory descriptor, a NUL-terminated name that outlives the call,
        // flags and a mode; the kernel reads only the name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) && self.is_symlink(name) {
                return Err(RootError::Symlink { path });
            }
            return Err(RootError::io(&path, e));
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Removes `name` if it is a regular file (a link or anything else of that name is left
    /// alone); `Ok(false)` when there is no such regular file.
    #[allow(unsafe_code)]
    pub fn remove(&self, name: &str) -> Result<bool, RootError> {
        let path = self.path_of(name);
        match self.stat_at(name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(RootError::io(&path, e)),
        }
        let c = c_name(name, &path)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name; flags 0 removes a
        // non-directory entry and never follows a link.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(false);
            }
            return Err(RootError::io(&path, e));
        }
        Ok(true)
    }

    /// The names in this directory (read through `/proc/self/fd/<fd>`, which reopens this very
    /// directory, wherever it lies).
    pub fn names(&self) -> Result<Vec<String>, RootError> {
        let via = self
            .proc_root
            .join("self/fd")
            .join(self.fd.as_raw_fd().to_string());
        let rd = std::fs::read_dir(&via).map_err(|e| RootError::io(&self.shown, e))?;
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn is_symlink(&self, name: &str) -> bool {
        self.stat_at(name)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    }

    #[allow(unsafe_code)]
    fn stat_at(&self, name: &str) -> io::Result<libc::stat> {
        let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: all-zero bytes are a valid `stat` (plain integers).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name and a writable `stat`;
        // AT_SYMLINK_NOFOLLOW describes a link itself.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn c_name(name: &str, path: &Path) -> Result<CString, RootError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(RootError::BadPath {
            path: path.to_path_buf(),
        });
    }
    CString::new(name).map_err(|_| RootError::BadPath {
        path: path.to_path_buf(),
    })
}

/// Opens one component below `dir` as a directory without following a link.
#[allow(unsafe_code)]
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8], shown: &Path) -> Result<OwnedFd, RootError> {
    let c = CString::new(name).map_err(|_| RootError::BadPath {
        path: shown.to_path_buf(),
    })?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor and a NUL-terminated name that outlives the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // O_NOFOLLOW|O_DIRECTORY on a link gives ENOTDIR (or ELOOP); say which it was.
        if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) {
            // SAFETY: as above; the stat buffer is written by the kernel only.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid descriptor, a NUL-terminated name and a writable `stat`.
            let rc = unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(RootError::Symlink {
                    path: shown.to_path_buf(),
                });
            }
            return Err(RootError::NotDir {
                path: shown.to_path_buf(),
            });
        }
        return Err(RootError::io(shown, e));
    }
    let fd = RawFd::from(fd);
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // A link opened with O_PATH|O_NOFOLLOW would be the link itself; make sure it is not.
    let st = fstat(owned.as_fd()).map_err(|e| RootError::io(shown, e))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(owned),
        libc::S_IFLNK => Err(RootError::Symlink {
            path: shown.to_path_buf(),
        }),
        _ => Err(RootError::NotDir {
            path: shown.to_path_buf(),
        }),
    }
}

#[allow(unsafe_code)]
fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: all-zero bytes are a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor (O_PATH descriptors may be fstat'ed) and a writable `stat`.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn dir_id(fd: BorrowedFd<'_>, shown: &Path) -> Result<DirId, RootError> {
    let st = fstat(fd).map_err(|e| RootError::io(shown, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(RootError::NotDir {
            path: shown.to_path_buf(),
        });
    }
    Ok(DirId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_root() -> Root {
        let proc = ProcTable::new("/proc");
        let me = proc.identity(std::process::id()).expect("own identity");
        Root::of(&proc, me).expect("own root")
    }

    #[test]
    fn creates_exclusively_and_removes_only_regular_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = own_root().dir(tmp.path()).expect("walk");
        let fd = dir.create("f").expect("create");
        drop(fd);
        let mode = std::fs::metadata(tmp.path().join("f")).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let again = dir.create("f").expect_err("O_EXCL");
        assert!(again.to_string().contains("exists"), "{again}");
        assert_eq!(dir.names().expect("ls"), vec!["f".to_string()]);
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("l")).expect("symlink");
        let err = dir.create("l").expect_err("a link is not followed");
        assert!(matches!(err, RootError::Symlink { .. }), "{err}");
        assert!(!dir.remove("l").expect("a link is left alone"));
        assert!(tmp.path().join("l").symlink_metadata().is_ok());
        assert!(dir.remove("f").expect("remove"));
        assert!(!dir.remove("f").expect("gone"));
        assert!(c_name("../x", Path::new("x")).is_err());
    }

    #[test]
    fn a_symlinked_component_is_refused_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link"))
            .expect("symlink");
        let root = own_root();
        let err = root.dir(&tmp.path().join("link/sub")).expect_err("link");
        assert!(
            err.to_string()
                .contains(&format!("{}/link is a symbolic link", tmp.path().display())),
            "{err}"
        );
        let err = root.dir(&tmp.path().join("nope")).expect_err("missing");
        assert!(err.is_not_found(), "{err}");
        let err = root.dir(Path::new("/tmp/../etc")).expect_err("dotdot");
        assert!(matches!(err, RootError::BadPath { .. }), "{err}");
        let a = root.dir(&tmp.path().join("real")).expect("real");
        assert_eq!(
            a.shown(),
            Path::new(&format!(
                "/proc/{}/root{}/real",
                std::process::id(),
                tmp.path().display()
            ))
        );
    }
}
