//! [`Store`] on sled, in `<data-dir>/store`. Values are JSON; audit keys are the big-endian
//! unix milliseconds followed by a big-endian sequence number, so they sort by time. Writes are
//! applied in memory and made durable by [`Store::flush`] (the store thread flushes once per
//! batch).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{AgentRecord, AuditRecord, HaltRecord, ItemTree, Store, StoreError};
use crate::experiments::record::ExperimentRecord;

pub(super) struct Trees {
    pub(super) db: sled::Db,
    agents: sled::Tree,
    audit: sled::Tree,
    state: sled::Tree,
    experiments: sled::Tree,
}

/// [`Store`] on sled.
pub struct SledStore {
    path: PathBuf,
    trees: RwLock<Option<Trees>>,
    /// Entries in the audit tree (sled counts by a full scan, so it is kept here: counted once
    /// at open, then followed).
    audit_len: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

/// How long [`Store::close`] waits for sled's background threads to let go of the database
/// file (and its lock) after the last handle is dropped.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// sled's page cache. Its default is 1 GiB, which a long-running coordinator would fill with
/// pages of the audit log and ended experiments it read once; what it reads often (agent
/// records, the running experiments, the heartbeat) is a few MiB even with 10,000 agents.
const CACHE_BYTES: u64 = 64 << 20;

const HALT_KEY: &[u8] = b"halted";
const HEARTBEAT_KEY: &[u8] = b"heartbeat";

pub(super) fn sled_err(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { op, source }
}

pub(super) fn decode<T: DeserializeOwned>(
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

pub(super) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
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
    /// Blocking: counts the audit entries.
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
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| {
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
        let audit_len = trees.audit.len() as u64;
        Ok(SledStore {
            path,
            trees: RwLock::new(Some(trees)),
            audit_len: AtomicU64::new(audit_len),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the database file's lock is free: sled's thread pool can hold the file a
    /// moment after the last handle is gone (an in-flight write or truncation), and the
    /// promise of `close` is that the directory can be opened again at once.
    fn wait_released(&self) {
        let db = self.path.join("db");
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            let Ok(file) = std::fs::File::open(&db) else {
                return;
            };
            match file.try_lock() {
                Ok(()) => return,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::warn!(path = %db.display(), "the store is closed but its lock is still held: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Trees) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.trees.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(trees) => f(trees),
            None => Err(StoreError::Closed),
        }
    }
}

impl Trees {
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(sled_err("flush"))
    }
}

impl Store for SledStore {
    fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let value = encode("agent", rec)?;
        self.with(|t| {
            t.agents
                .insert(rec.node_name.as_bytes(), value)
                .map(|_| ())
                .map_err(sled_err("writing an agent"))
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
            let old = t
                .audit
                .insert(audit_key(rec.at_unix_ms, seq), value)
                .map_err(sled_err("writing an audit entry"))?;
            if old.is_none() {
                self.audit_len.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
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

    fn audit_len(&self) -> Result<u64, StoreError> {
        self.with(|_| Ok(self.audit_len.load(Ordering::Relaxed)))
    }

    fn prune_audit(
        &self,
        before_unix_ms: i64,
        keep_at_most: u64,
        max_remove: usize,
    ) -> Result<u64, StoreError> {
        let before = audit_key(before_unix_ms, 0);
        self.with(|t| {
            let mut removed = 0u64;
            while (removed as usize) < max_remove {
                let Some((key, _)) = t.audit.first().map_err(sled_err("reading the audit log"))?
                else {
                    break;
                };
                let too_many = self.audit_len.load(Ordering::Relaxed) > keep_at_most;
                if !too_many && key.as_ref() >= before.as_slice() {
                    break;
                }
                if t.audit
                    .remove(&key)
                    .map_err(sled_err("pruning the audit log"))?
                    .is_some()
                {
                    self.audit_len.fetch_sub(1, Ordering::Relaxed);
                    removed += 1;
                }
            }
            Ok(removed)
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
                .map(|_| ())
                .map_err(sled_err("writing state"))
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
            .map_err(sled_err("writing state"))
        })
    }

    fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let value = encode("experiment", rec)?;
        self.with(|t| {
            t.experiments
                .insert(rec.name.as_bytes(), value)
                .map(|_| ())
                .map_err(sled_err("writing an experiment"))
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

    fn remove_experiment(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|t| {
            t.experiments
                .remove(name.as_bytes())
                .map(|old| old.is_some())
                .map_err(sled_err("removing an experiment"))
        })
    }

    fn put_item(&self, tree: ItemTree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_item_raw(tree, key, value)
    }

    fn item(&self, tree: ItemTree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.item_raw(tree, key)
    }

    fn items(&self, tree: ItemTree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.items_raw(tree)
    }

    fn remove_item(&self, tree: ItemTree, key: &str) -> Result<bool, StoreError> {
        self.remove_item_raw(tree, key)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with(Trees::flush)
    }

    fn close(&self) -> Result<(), StoreError> {
        let trees = self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        match trees {
            Some(trees) => {
                let flushed = trees.flush();
                // Dropping the last handle joins sled's flusher; its thread pool lets go of
                // the file (and the directory lock) a moment later.
                drop(trees);
                self.wait_released();
                flushed
            }
            None => Ok(()),
        }
    }
}
