//! The fault journal: one sled entry per fault the agent may have changed the system for,
//! written (and flushed) before every change and removed only after a successful revert.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::driver::Recipe;

/// Name of the sled tree holding the entries.
const TREE: &str = "faults";
/// How long `open` waits for sled's file lock, held by a handle this process is closing (sled
/// lets go of it from its background threads). Across processes, the state-dir lock already
/// keeps a second agent away.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a journaled fault stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Planned and about to be applied: the system may hold any part of it.
    Planned,
    /// Applied completely; the recipe names everything it made.
    Applied,
    /// A revert failed; the fault may still act. Retried until it succeeds.
    RevertFailed,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Planned => "planned",
            EntryState::Applied => "applied",
            EntryState::RevertFailed => "revert_failed",
        }
    }
}

/// One journaled fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub fault_id: String,
    pub experiment_id: String,
    /// The fault kind (`cpu`, `process`, ...): which driver reverts it.
    pub kind: String,
    /// The spec as applied: a prost-encoded `faultline.v1.FaultSpec`, hex in the journal.
    #[serde(with = "hex_bytes")]
    pub spec: Vec<u8>,
    pub recipe: Recipe,
    pub state: EntryState,
    /// 0 until applied.
    pub applied_unix_ms: i64,
    pub deadline_unix_ms: i64,
    /// Why the last revert (or apply) failed.
    #[serde(default)]
    pub last_error: String,
    /// The reason of the first revert attempt (`deadline`, `abort`, ...), kept for retries.
    #[serde(default)]
    pub revert_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: cannot open: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("journal: cannot write the entry of fault {fault_id}: {message}")]
    Write { fault_id: String, message: String },
    #[error("journal: cannot read: {0}")]
    Read(sled::Error),
}

/// An entry that could not be decoded (written by an incompatible agent, or damaged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// The sled-backed journal; every write is flushed before it returns.
pub struct Journal {
    path: PathBuf,
    _db: sled::Db,
    tree: sled::Tree,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if missing) the journal in directory `path` (`<state-dir>/journal`).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        // sled releases its file lock from a background thread once the last handle is gone,
        // so a journal this process just closed may stay locked for a moment.
        let until = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(open_err)?,
            }
        };
        let tree = db.open_tree(TREE).map_err(open_err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            _db: db,
            tree,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts or replaces the entry of `entry.fault_id`, flushed to disk.
    pub fn put(&self, entry: &Entry) -> Result<(), JournalError> {
        let write_err = |message: String| JournalError::Write {
            fault_id: entry.fault_id.clone(),
            message,
        };
        let bytes = serde_json::to_vec(entry).map_err(|e| write_err(e.to_string()))?;
        self.tree
            .insert(entry.fault_id.as_bytes(), bytes)
            .map_err(|e| write_err(e.to_string()))?;
        tracing::debug_span!("journal_flush")
            .in_scope(|| self.tree.flush())
            .map_err(|e| write_err(e.to_string()))?;
        Ok(())
    }

    /// Removes the entry of `fault_id` (a missing one is fine), flushed to disk.
    pub fn remove(&self, fault_id: &str) -> Result<(), JournalError> {
        let write_err = |e: sled::Error| JournalError::Write {
            fault_id: fault_id.to_string(),
            message: e.to_string(),
        };
        self.tree.remove(fault_id.as_bytes()).map_err(write_err)?;
        tracing::debug_span!("journal_flush")
            .in_scope(|| self.tree.flush())
            .map_err(write_err)?;
        Ok(())
    }

    pub fn get(&self, fault_id: &str) -> Result<Option<Entry>, JournalError> {
        match self
            .tree
            .get(fault_id.as_bytes())
            .map_err(JournalError::Read)?
        {
            None => Ok(None),
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
        }
    }

    /// Every entry, in fault-id order, and the keys of entries that cannot be decoded.
    pub fn load(&self) -> Result<(Vec<Entry>, Vec<Unreadable>), JournalError> {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(JournalError::Read)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            match serde_json::from_slice::<Entry>(&v) {
                Ok(e) => entries.push(e),
                Err(e) => unreadable.push(Unreadable {
                    key,
                    error: e.to_string(),
                }),
            }
        }
        Ok((entries, unreadable))
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// Bytes as a lowercase hex string in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("hex text of odd length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom(format!("bad hex at {i}")))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
