//! The agent's state directory: created 0700, and held with an exclusive `flock` on
//! `<state-dir>/agent.lock` for the agent's whole life so two agents never share one journal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("--state-dir {path}: cannot create it: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("--state-dir {path}: exists but is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("--state-dir: cannot open lock file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("--state-dir: {path} is locked by another faultline-agent ({holder}); each agent needs its own --state-dir")]
    Locked { path: PathBuf, holder: String },
    #[error("--state-dir: cannot lock {path}: {errno}")]
    Lock { path: PathBuf, errno: Errno },
    #[error("--state-dir: cannot write the PID into {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The held lock; released when dropped (or when the process dies: the kernel drops it).
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates `dir` (mode 0700) if missing, locks `dir/agent.lock` and writes our PID into it.
    pub fn open(dir: &Path) -> Result<StateDir, StateDirError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateDirError::Create {
                    path: dir.to_path_buf(),
                    source,
                })?;
        } else if !dir.is_dir() {
            return Err(StateDirError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateDirError::Open {
                path: path.clone(),
                source,
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => "PID unknown".to_string(),
                    pid => format!("PID {pid}"),
                };
                return Err(StateDirError::Locked { path, holder });
            }
            Err((_, errno)) => return Err(StateDirError::Lock { path, errno }),
        };
        let write = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut lock).map_err(|source| StateDirError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_the_directory_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/state");
        let held = StateDir::open(&dir).expect("open");
        assert_eq!(held.path(), dir);
        let mode = fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "state dir mode {mode:o}");
        let pid = fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file");
        assert_eq!(pid.trim(), std::process::id().to_string());
    }

    #[test]
    fn a_second_agent_is_refused_with_the_holder_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = StateDir::open(tmp.path()).expect("first");
        let err = StateDir::open(tmp.path()).expect_err("second must be refused");
        let msg = err.to_string();
        let lock = tmp.path().join(LOCK_FILE);
        assert!(msg.contains(&lock.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        StateDir::open(tmp.path()).expect("free again once the first is dropped");
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("file");
        fs::write(&f, "x").expect("write");
        let msg = StateDir::open(&f).expect_err("not a dir").to_string();
        assert!(
            msg.contains("--state-dir") && msg.contains("not a directory"),
            "{msg}"
        );
    }
}
