//! The coordinator's durable state (agents seen, the audit log, the fleet halt flag, experiment
//! records) behind the small [`Store`] trait, with a sled implementation that flushes after
//! every write.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::experiments::record::ExperimentRecord;

mod tokens;
pub use tokens::{
    EnrollStore, EnrollmentRecord, IssuedRecord, RevocationRecord, Revoked, TokenRecord,
};

/// What the coordinator remembers about an agent between restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub version: String,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    #[serde(default)]
    pub remote_address: String,
}

/// One audit log entry: who did what, when, and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_unix_ms: i64,
    /// `<role>/<name>` of the caller.
    pub identity: String,
    /// e.g. `Fleet.HaltAll`, `AgentSession.Connect`.
    pub action: String,
    pub detail: String,
    pub allowed: bool,
}

/// The fleet-wide halt, set by `Fleet.HaltAll` and cleared by `Fleet.Resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    pub reason: String,
    pub by: String,
    pub at_unix_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source}{hint}")]
    Open {
        path: PathBuf,
        source: sled::Error,
        hint: &'static str,
    },
    #[error("creating the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {op}: {source}")]
    Sled {
        op: &'static str,
        source: sled::Error,
    },
    #[error("store: record {key:?} in {tree} does not decode: {source}")]
    Decode {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("store: encoding a {what} record: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the store is closed (the coordinator is shutting down)")]
    Closed,
}

/// Durable coordinator state. Every write is durable when the call returns.
pub trait Store: Send + Sync {
    /// Inserts or replaces the record of `rec.node_name`.
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError>;
    fn agent(&self, node_name: &str) -> Result<Option<AgentRecord>, StoreError>;
    /// Every agent ever seen, sorted by node name.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    fn halt(&self) -> Result<Option<HaltRecord>, StoreError>;
    /// Sets (`Some`) or clears (`None`) the fleet halt.
    fn set_halt(&self, halt: Option<&HaltRecord>) -> Result<(), StoreError>;
    /// Inserts or replaces the record of experiment `rec.name`.
    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError>;
    fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError>;
    /// Every experiment, sorted by name.
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError>;
    /// When the coordinator that used this store last said it was alive (unix ms).
    fn heartbeat(&self) -> Result<Option<i64>, StoreError>;
    /// Records that the coordinator is alive at `at_unix_ms` (written every second, so the
    /// next start knows when this one stopped).
    fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError>;
    /// Flushes and releases the store (and its lock on the directory); later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}

struct Trees {
    db: sled::Db,
    agents: sled::Tree,
    audit: sled::Tree,
    state: sled::Tree,
    experiments: sled::Tree,
}

/// [`Store`] on sled, in `<data-dir>/store`. Values are JSON; audit keys are the big-endian
/// unix milliseconds followed by a big-endian sequence number, so they sort by time.
pub struct SledStore {
    path: PathBuf,
    trees: RwLock<Option<Trees>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

const HALT_KEY: &[u8] = b"halted";
const HEARTBEAT_KEY: &[u8] = b"heartbeat";

fn sled_err(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { op, source }
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Decode {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

/// The audit key of an entry: time first so that keys sort chronologically.
pub fn audit_key(at_unix_ms: i64, sequence: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(at_unix_ms.max(0) as u64).to_be_bytes());
    key[8..].copy_from_slice(&sequence.to_be_bytes());
    key
}

impl SledStore {
    /// Opens (creating if needed) the store under `data_dir`, which is created 0700 if missing.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|source| StoreError::CreateDir {
                    path: data_dir.to_path_buf(),
                    source,
                })?;
        }
        let path = data_dir.join("store");
        let db = sled::Config::new().path(&path).open().map_err(|source| {
            let hint = if source.to_string().contains("could not acquire lock") {
                " (another coordinator is using this --data-dir)"
            } else {
                ""
            };
            StoreError::Open {
                path: path.clone(),
                source,
                hint,
            }
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err("opening a tree"));
        let trees = Trees {
            agents: tree("agents")?,
            audit: tree("audit")?,
            state: tree("state")?,
            experiments: tree("experiments")?,
            db,
        };
        Ok(SledStore {
            path,
            trees: RwLock::new(Some(trees)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Trees) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.trees.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(trees) => f(trees),
            None => Err(StoreError::Closed),
        }
    }
}

impl Trees {
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(sled_err("flush"))
    }
}

impl Store for SledStore {
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let value = encode("agent", rec)?;
        self.with(|t| {
            t.agents
                .insert(rec.node_name.as_bytes(), value)
                .map_err(sled_err("writing an agent"))?;
            t.flush()
        })
    }

    fn agent(&self, node_name: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.with(|t| {
            let value = t
                .agents
                .get(node_name.as_bytes())
                .map_err(sled_err("reading an agent"))?;
            value
                .map(|v| decode("agents", node_name.as_bytes(), &v))
                .transpose()
        })
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.with(|t| {
            t.agents
                .iter()
                .map(|kv| {
                    let (k, v) = kv.map_err(sled_err("reading agents"))?;
                    decode("agents", &k, &v)
                })
                .collect()
        })
    }

    fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        let value = encode("audit", rec)?;
        self.with(|t| {
            let seq = t.db.generate_id().map_err(sled_err("audit sequence"))?;
            t.audit
                .insert(audit_key(rec.at_unix_ms, seq), value)
                .map_err(sled_err("writing an audit entry"))?;
            t.flush()
        })
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(|t| {
            t.audit
                .iter()
                .rev()
                .take(limit)
                .map(|kv| {
                    let (k, v) = kv.map_err(sled_err("reading the audit log"))?;
                    decode("audit", &k, &v)
                })
                .collect()
        })
    }

    fn heartbeat(&self) -> Result<Option<i64>, StoreError> {
        self.with(|t| {
            let value = t
                .state
                .get(HEARTBEAT_KEY)
                .map_err(sled_err("reading state"))?;
            Ok(value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes)))
        })
    }

    fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError> {
        self.with(|t| {
            t.state
                .insert(HEARTBEAT_KEY, &at_unix_ms.to_be_bytes())
                .map_err(sled_err("writing state"))?;
            t.flush()
        })
    }

    fn halt(&self) -> Result<Option<HaltRecord>, StoreError> {
        self.with(|t| {
            let value = t.state.get(HALT_KEY).map_err(sled_err("reading state"))?;
            value.map(|v| decode("state", HALT_KEY, &v)).transpose()
        })
    }

    fn set_halt(&self, halt: Option<&HaltRecord>) -> Result<(), StoreError> {
        let value = halt.map(|h| encode("halt", h)).transpose()?;
        self.with(|t| {
            match value {
                Some(v) => t.state.insert(HALT_KEY, v).map(|_| ()),
                None => t.state.remove(HALT_KEY).map(|_| ()),
            }
            .map_err(sled_err("writing state"))?;
            t.flush()
        })
    }

    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let value = encode("experiment", rec)?;
        self.with(|t| {
            t.experiments
                .insert(rec.name.as_bytes(), value)
                .map_err(sled_err("writing an experiment"))?;
            t.flush()
        })
    }

    fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        self.with(|t| {
            let value = t
                .experiments
                .get(name.as_bytes())
                .map_err(sled_err("reading an experiment"))?;
            value
                .map(|v| decode("experiments", name.as_bytes(), &v))
                .transpose()
        })
    }

    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        self.with(|t| {
            t.experiments
                .iter()
                .map(|kv| {
                    let (k, v) = kv.map_err(sled_err("reading experiments"))?;
                    decode("experiments", &k, &v)
                })
                .collect()
        })
    }

    fn close(&self) -> Result<(), StoreError> {
        let trees = self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        match trees {
            // Dropping the last handle joins sled's flusher and releases the directory lock.
            Some(trees) => trees.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
