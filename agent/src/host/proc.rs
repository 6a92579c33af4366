//! Reads of the process table under a configurable proc root: names, command lines, states,
//! parents, start times (a process identity is `(pid, start time)`), RSS and CPU time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process does not exist (any more).
    #[error("pid {0} does not exist")]
    Gone(u32),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// A process as it was when we saw it: a PID alone may be reused, `(pid, start)` may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    /// Start time after boot in clock ticks (field 22 of `/proc/<pid>/stat`).
    pub start: u64,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pid, self.start)
    }
}

impl std::str::FromStr for Identity {
    type Err = String;
    /// `pid:start`, as guards carry them in their argv.
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, st) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not PID:STARTTIME"))?;
        Ok(Identity {
            pid: p.parse().map_err(|_| format!("{s:?}: bad pid"))?,
            start: st.parse().map_err(|_| format!("{s:?}: bad start time"))?,
        })
    }
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    /// `R`, `S`, `D`, `T`, `t`, `Z`, ...
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub start: u64,
    /// Resident set in pages.
    pub rss_pages: u64,
}

impl Stat {
    pub fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            start: self.start,
        }
    }

    /// Stopped by a signal (or traced).
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The name is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before the process name")?;
    let close = text.rfind(')').ok_or("no ')' after the process name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open]
        .trim()
        .parse()
        .map_err(|_| format!("pid {:?} is not a number", text[..open].trim()))?;
    let comm = text[open + 1..close].to_string();
    // After ")": field 3 (state) is index 0.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let s = rest
            .get(n - 3)
            .ok_or_else(|| format!("field {n} is missing"))?;
        s.parse()
            .map_err(|_| format!("field {n} {s:?} is not a number"))
    };
    let state = rest
        .first()
        .and_then(|s| s.chars().next())
        .ok_or("field 3 (state) is missing")?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: u32::try_from(field(4)?).map_err(|_| "ppid out of range")?,
        utime: field(14)?,
        stime: field(15)?,
        start: field(22)?,
        rss_pages: field(24)?,
    })
}

/// The process table under a root (`/proc`, or a fake tree in tests).
#[derive(Debug, Clone)]
pub struct ProcTable {
    root: PathBuf,
}

impl ProcTable {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcTable { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    fn read(&self, pid: u32, file: &str) -> Result<String, ProcError> {
        let path = self.path(pid, file);
        match std::fs::read(&path) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if is_gone(&e) => Err(ProcError::Gone(pid)),
            Err(source) => Err(ProcError::Io { path, source }),
        }
    }

    /// Every PID in the table, ascending.
    pub fn pids(&self) -> Result<Vec<u32>, ProcError> {
        let rd = std::fs::read_dir(&self.root).map_err(|source| ProcError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut pids: Vec<u32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    pub fn stat(&self, pid: u32) -> Result<Stat, ProcError> {
        let text = self.read(pid, "stat")?;
        parse_stat(&text).map_err(|what| ProcError::Parse {
            path: self.path(pid, "stat"),
            what,
        })
    }

    /// The argv of a process (empty for kernel threads and zombies).
    pub fn cmdline(&self, pid: u32) -> Result<Vec<String>, ProcError> {
        let text = self.read(pid, "cmdline")?;
        Ok(text
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The text of `/proc/<pid>/cgroup`.
    pub fn cgroup_text(&self, pid: u32) -> Result<String, ProcError> {
        self.read(pid, "cgroup")
    }

    /// The executable a process runs, without a trailing ` (deleted)`.
    pub fn exe(&self, pid: u32) -> Option<PathBuf> {
        let link = std::fs::read_link(self.path(pid, "exe")).ok()?;
        let s = link.to_string_lossy();
        Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
    }

    pub fn identity(&self, pid: u32) -> Option<Identity> {
        self.stat(pid).ok().map(|s| s.identity())
    }

    /// The stat of a process if it is still the one we saw and not a zombie.
    pub fn live(&self, id: Identity) -> Option<Stat> {
        self.stat(id.pid)
            .ok()
            .filter(|s| s.start == id.start && s.state != 'Z' && s.state != 'X')
    }

    pub fn is_alive(&self, id: Identity) -> bool {
        self.live(id).is_some()
    }

    /// Parent, grandparent, ... up to and including PID 1 (or the first parent that cannot be
    /// read). Stops on loops.
    pub fn ancestors(&self, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = pid;
        while let Ok(st) = self.stat(cur) {
            if st.ppid == 0 || out.contains(&st.ppid) || st.ppid == pid {
                break;
            }
            out.push(st.ppid);
            cur = st.ppid;
        }
        out
    }

    pub fn rss_bytes(&self, pid: u32) -> Result<u64, ProcError> {
        Ok(self.stat(pid)?.rss_pages * procfs::page_size())
    }

    /// User + system CPU time of a process.
    pub fn cpu_time(&self, pid: u32) -> Result<Duration, ProcError> {
        let st = self.stat(pid)?;
        Ok(ticks(st.utime + st.stime))
    }

    /// `MemTotal` of `/proc/meminfo` in bytes.
    pub fn mem_total(&self) -> Result<u64, ProcError> {
        let path = self.root.join("meminfo");
        let text = std::fs::read_to_string(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        let kb = text
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| ProcError::Parse {
                path,
                what: "no MemTotal line".into(),
            })?;
        Ok(kb * 1024)
    }

    /// The host's count of OOM kills (`oom_kill` in `/proc/vmstat`), if the kernel has it.
    pub fn vmstat_oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.root.join("vmstat")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Clock ticks as a duration.
pub fn ticks(n: u64) -> Duration {
    let hz = procfs::ticks_per_second().max(1);
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / hz)
}

fn is_gone(e: &std::io::Error) -> bool {
    // ESRCH: the process exited while its directory was open.
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let text = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 30 0 0 20 0 1 0 987654 10000000 2048 18446744073709551615 0 0";
        let st = parse_stat(text).expect("parse");
        assert_eq!(st.pid, 4242);
        assert_eq!(st.comm, "my (odd) name");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 17);
        assert_eq!((st.utime, st.stime), (250, 30));
        assert_eq!(st.start, 987654);
        assert_eq!(st.rss_pages, 2048);
    }

    #[test]
    fn stat_errors_name_the_field() {
        let err = parse_stat("12 (x) S 1 2 3").expect_err("short");
        assert!(err.contains("field 14"), "{err}");
        let err = parse_stat("12 x S").expect_err("no parens");
        assert!(err.contains("'('"), "{err}");
    }

    #[test]
    fn identity_round_trips_through_text() {
        let id: Identity = "123:456".parse().expect("parse");
        assert_eq!(
            id,
            Identity {
                pid: 123,
                start: 456
            }
        );
        assert_eq!(id.to_string(), "123:456");
        assert!("123".parse::<Identity>().is_err());
    }

    #[test]
    fn the_real_table_knows_this_process() {
        let table = ProcTable::new("/proc");
        let me = std::process::id();
        let st = table.stat(me).expect("own stat");
        assert_eq!(st.pid, me);
        assert!(table.is_alive(st.identity()));
        assert!(!table.is_alive(Identity {
            pid: me,
            start: st.start + 1
        }));
        assert!(!table.ancestors(me).is_empty());
        assert!(table.mem_total().expect("meminfo") > 0);
        assert!(matches!(table.stat(u32::MAX - 1), Err(ProcError::Gone(_))));
    }
}
