//! The cgroup files an io-limit writes, and the exact values it restores: cgroup v2 `io.max`
//! (`MAJ:MIN rbps=N wbps=max riops=max wiops=max`) or v1 `blkio.throttle.{read,write}_{bps,
//! iops}_device` (`MAJ:MIN N`, where writing 0 removes the rule). Parsing and encoding are
//! plain functions with table tests; [`restore`] is the one undo, shared by the driver, the
//! sweep and the guard process.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::cgroup::Version;

/// A block device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not MAJ:MIN"))?;
        Ok(DevNum {
            major: a.parse().map_err(|_| format!("{s:?} is not MAJ:MIN"))?,
            minor: b.parse().map_err(|_| format!("{s:?} is not MAJ:MIN"))?,
        })
    }
}

/// One of the four limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Limit {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::ReadBps,
        Limit::WriteBps,
        Limit::ReadIops,
        Limit::WriteIops,
    ];

    /// The v1 file of this limit.
    pub fn v1_file(self) -> &'static str {
        match self {
            Limit::ReadBps => "blkio.throttle.read_bps_device",
            Limit::WriteBps => "blkio.throttle.write_bps_device",
            Limit::ReadIops => "blkio.throttle.read_iops_device",
            Limit::WriteIops => "blkio.throttle.write_iops_device",
        }
    }

    /// The key of this limit in v2 `io.max`.
    pub fn v2_key(self) -> &'static str {
        match self {
            Limit::ReadBps => "rbps",
            Limit::WriteBps => "wbps",
            Limit::ReadIops => "riops",
            Limit::WriteIops => "wiops",
        }
    }
}

/// The v2 file.
pub const IO_MAX: &str = "io.max";

/// One limit of one device in one cgroup: the value found before the fault (`None` = no
/// limit) and the value the fault sets. Journaled before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub file: PathBuf,
    pub version: Version,
    pub limit: Limit,
    pub dev: DevNum,
    pub old: Option<u64>,
    pub new: u64,
}

/// The value for `dev` in a v1 throttle file (`None` when it has no rule).
pub fn parse_v1(text: &str, dev: DevNum) -> Option<u64> {
    let want = dev.to_string();
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == want).then(|| w.next()?.parse().ok())?
    })
}

/// The value of `key` for `dev` in v2 `io.max` (`None` when unlimited or absent).
pub fn parse_v2(text: &str, dev: DevNum, key: &str) -> Option<u64> {
    let want = dev.to_string();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(want.as_str()))?;
    line.split_whitespace().skip(1).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

/// What to write to set `value` (`None` = no limit).
pub fn encode(version: Version, dev: DevNum, limit: Limit, value: Option<u64>) -> String {
    match version {
        Version::V1 => format!("{dev} {}", value.unwrap_or(0)),
        Version::V2 => format!(
            "{dev} {}={}",
            limit.v2_key(),
            value.map_or_else(|| "max".to_string(), |v| v.to_string())
        ),
    }
}

/// The file of a limit in a cgroup directory.
pub fn file_in(dir: &Path, version: Version, limit: Limit) -> PathBuf {
    match version {
        Version::V1 => dir.join(limit.v1_file()),
        Version::V2 => dir.join(IO_MAX),
    }
}

/// The value in effect now.
pub fn read(s: &Setting) -> io::Result<Option<u64>> {
    let text = std::fs::read_to_string(&s.file)?;
    Ok(match s.version {
        Version::V1 => parse_v1(&text, s.dev),
        Version::V2 => parse_v2(&text, s.dev, s.limit.v2_key()),
    })
}

/// Sets `value` (one write of one line, as the kernel wants it).
pub fn write(s: &Setting, value: Option<u64>) -> io::Result<()> {
    let line = encode(s.version, s.dev, s.limit, value);
    std::fs::write(&s.file, format!("{line}\n")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("write {line:?} to {}: {e}", s.file.display()),
        )
    })
}

/// What [`restore`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The fault's value was there; the old one is back.
    Restored,
    /// The old value was already there (never applied, or restored before), or the cgroup is
    /// gone and its limits with it.
    AlreadyOld,
    /// Someone else set another value since: left alone.
    ChangedSince(Option<u64>),
}

/// Puts the old value back if the fault's value is the one in effect, and checks it took.
pub fn restore(s: &Setting) -> io::Result<Restored> {
    let now = match read(s) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Restored::AlreadyOld),
        Err(e) => return Err(e),
    };
    if now == s.old {
        return Ok(Restored::AlreadyOld);
    }
    if now != Some(s.new) {
        return Ok(Restored::ChangedSince(now));
    }
    write(s, s.old)?;
    let after = read(s)?;
    if after != s.old {
        return Err(io::Error::other(format!(
            "{}: wrote {:?} for {} but it reads {after:?}",
            s.file.display(),
            s.old,
            s.dev
        )));
    }
    Ok(Restored::Restored)
}

/// Restores every setting; `(how many were restored, errors)`.
pub fn restore_all(settings: &[Setting]) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut errors = Vec::new();
    for s in settings {
        match restore(s) {
            Ok(Restored::Restored) => n += 1,
            Ok(Restored::AlreadyOld) => {}
            Ok(Restored::ChangedSince(v)) => tracing::warn!(
                file = %s.file.display(),
                dev = %s.dev,
                "io-limit: the value was changed by someone else since the fault set it (now \
                 {v:?}); left alone"
            ),
            Err(e) => errors.push(format!("{}: {e}", s.file.display())),
        }
    }
    (n, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP: DevNum = DevNum { major: 7, minor: 3 };

    #[test]
    fn v1_lines_are_read_and_written_per_device() {
        let text = "8:0 5000\n7:3 1048576\n";
        assert_eq!(parse_v1(text, LOOP), Some(1_048_576));
        assert_eq!(parse_v1(text, DevNum { major: 8, minor: 0 }), Some(5000));
        assert_eq!(parse_v1("", LOOP), None);
        assert_eq!(parse_v1("7:30 9\n", LOOP), None);
        assert_eq!(
            encode(Version::V1, LOOP, Limit::WriteBps, Some(4096)),
            "7:3 4096"
        );
        assert_eq!(encode(Version::V1, LOOP, Limit::WriteBps, None), "7:3 0");
        assert_eq!(Limit::ReadIops.v1_file(), "blkio.throttle.read_iops_device");
    }

    #[test]
    fn v2_io_max_keys_are_read_and_written_one_at_a_time() {
        let text = "8:0 rbps=max wbps=max riops=100 wiops=max\n7:3 rbps=max wbps=1048576 riops=max wiops=max\n";
        assert_eq!(parse_v2(text, LOOP, "wbps"), Some(1_048_576));
        assert_eq!(parse_v2(text, LOOP, "rbps"), None);
        assert_eq!(
            parse_v2(text, DevNum { major: 8, minor: 0 }, "riops"),
            Some(100)
        );
        assert_eq!(parse_v2("", LOOP, "wbps"), None);
        assert_eq!(
            encode(Version::V2, LOOP, Limit::WriteBps, Some(1 << 20)),
            "7:3 wbps=1048576"
        );
        assert_eq!(
            encode(Version::V2, LOOP, Limit::ReadIops, None),
            "7:3 riops=max"
        );
        assert_eq!("7:3".parse::<DevNum>(), Ok(LOOP));
        assert!("7".parse::<DevNum>().is_err());
    }

    #[test]
    fn restore_puts_back_only_what_the_fault_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(Limit::WriteBps.v1_file());
        let s = Setting {
            file: file.clone(),
            version: Version::V1,
            limit: Limit::WriteBps,
            dev: LOOP,
            old: Some(50 << 20),
            new: 1 << 20,
        };
        // A plain file stands in for the cgroup file: it holds what was last written.
        std::fs::write(&file, "7:3 1048576\n").expect("write");
        assert_eq!(restore(&s).expect("restore"), Restored::Restored);
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            "7:3 52428800\n"
        );
        assert_eq!(restore(&s).expect("again"), Restored::AlreadyOld);
        std::fs::write(&file, "7:3 7\n").expect("write");
        assert_eq!(restore(&s).expect("other"), Restored::ChangedSince(Some(7)));
        std::fs::remove_file(&file).expect("rm");
        assert_eq!(restore(&s).expect("gone"), Restored::AlreadyOld);
    }
}
