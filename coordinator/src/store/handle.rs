//! [`StoreHandle`]: the store thread, its bounded queue and its group commit (the durability
//! contract is in the module doc of [`crate::store`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::{AgentRecord, AuditRecord, HaltRecord, SledStore, Store, StoreError};
use crate::experiments::record::ExperimentRecord;
use crate::metrics;

/// Requests the store queue holds at most. About 1 KiB each (a queued agent record or audit
/// entry), so a full queue is tens of MiB; at 10,000 agents a reconnect storm queues about
/// 30,000 (a record and one or two audit entries each) while the thread drains them.
pub const STORE_QUEUE: usize = 65_536;
/// Requests applied before one flush, at most, so the first writers of a long burst do not
/// wait for the whole burst.
const MAX_BATCH: usize = 4096;

type Apply = Box<dyn FnOnce(&dyn Store) -> Result<(), StoreError> + Send>;
type Read = Box<dyn FnOnce(&dyn Store) + Send>;
type Then = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

enum Job {
    /// Runs at once; answers by itself.
    Read(Read),
    /// Applied at once, answered after the flush of its batch.
    Write { apply: Apply, done: Done },
    /// Commits what is applied, closes the store and ends the thread.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Who hears how a write ended. Dropped unanswered (the thread ended first): `Closed`.
struct Done {
    what: &'static str,
    reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    then: Option<Then>,
}

impl Done {
    fn finish(mut self, r: Result<(), StoreError>) {
        self.answer(r);
    }

    fn answer(&mut self, r: Result<(), StoreError>) {
        let reply = self.reply.take();
        if let Err(e) = &r {
            let told = reply.is_some() || self.then.is_some();
            metrics::store_write_failed(self.what, e, told);
        }
        if let Some(then) = self.then.take() {
            then(&r);
        }
        if let Some(reply) = reply {
            let _ = reply.send(r);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if self.reply.is_some() || self.then.is_some() {
            self.answer(Err(StoreError::Closed));
        }
    }
}

/// The async coordinator's way to the store: every call is a request to the store thread.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Read(_) => "Read",
            Job::Write { .. } => "Write",
            Job::Close(_) => "Close",
        })
    }
}

fn gone<E>(_: E) -> StoreError {
    StoreError::Closed
}

impl StoreHandle {
    /// Opens the sled store under `data_dir` on a new store thread (the open, which counts the
    /// audit log, happens there too).
    pub async fn open(data_dir: &Path) -> Result<StoreHandle, StoreError> {
        let dir = data_dir.to_path_buf();
        Self::start(move || SledStore::open(&dir).map(|s| Box::new(s) as Box<dyn Store>)).await
    }

    /// [`StoreHandle::open`], also handing back the sled store itself for the enrollment
    /// tables (`EnrollStore`), which their callers use from blocking tasks.
    pub async fn open_shared(
        data_dir: &Path,
    ) -> Result<(StoreHandle, std::sync::Arc<SledStore>), StoreError> {
        let dir = data_dir.to_path_buf();
        let (shared_tx, shared_rx) = oneshot::channel();
        let handle = Self::start(move || {
            let store = std::sync::Arc::new(SledStore::open(&dir)?);
            let _ = shared_tx.send(store.clone());
            Ok(Box::new(store) as Box<dyn Store>)
        })
        .await?;
        let shared = shared_rx
            .await
            .map_err(|_| StoreError::Thread("the store thread ended while opening".into()))?;
        Ok((handle, shared))
    }

    /// Starts the store thread on an open `store` (tests: a store that fails on purpose).
    pub async fn spawn(store: Box<dyn Store>) -> Result<StoreHandle, StoreError> {
        Self::start(move || Ok(store)).await
    }

    async fn start(
        open: impl FnOnce() -> Result<Box<dyn Store>, StoreError> + Send + 'static,
    ) -> Result<StoreHandle, StoreError> {
        let (tx, rx) = mpsc::channel(STORE_QUEUE);
        let (opened_tx, opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("faultline-store".into())
            .spawn(move || match open() {
                Ok(store) => {
                    let _ = opened_tx.send(Ok(()));
                    serve(store, rx);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Thread(format!("starting the store thread: {e}")))?;
        opened
            .await
            .map_err(|_| StoreError::Thread("the store thread ended while opening".into()))??;
        Ok(StoreHandle { tx })
    }

    // --- Queued writes: never wait; durable at the next commit; failures logged and counted.

    fn queue(
        &self,
        what: &'static str,
        apply: Apply,
        then: Option<Then>,
    ) -> Result<(), StoreError> {
        let job = Job::Write {
            apply,
            done: Done {
                what,
                reply: None,
                then,
            },
        };
        self.tx.try_send(job).map_err(|e| {
            let (err, job) = match e {
                TrySendError::Full(job) => (
                    StoreError::Busy {
                        capacity: STORE_QUEUE,
                    },
                    job,
                ),
                TrySendError::Closed(job) => (StoreError::Closed, job),
            };
            // Refused by the queue: the caller hears it from the return value, not from `then`.
            if let Job::Write { mut done, .. } = job {
                done.then = None;
            }
            metrics::store_write_failed(what, &err, true);
            err
        })
    }

    /// Queues a write made of `apply` (tests and one-off writes).
    pub fn queue_write(
        &self,
        what: &'static str,
        apply: impl FnOnce(&dyn Store) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.queue(what, Box::new(apply), None)
    }

    /// Queues the record of `rec.node_name`.
    pub fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.queue("agent", Box::new(move |s| s.put_agent(&rec)), None)
    }

    /// Queues the record of experiment `rec.name`.
    pub fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.queue(
            "experiment",
            Box::new(move |s| s.put_experiment(&rec)),
            None,
        )
    }

    /// Queues an audit entry; `then` hears how it ended (on the store thread) unless the queue
    /// refused it, which this call returns.
    pub fn append_audit(
        &self,
        rec: AuditRecord,
        then: impl FnOnce(&Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let apply = Box::new(move |s: &dyn Store| s.append_audit(&rec));
        self.queue("audit", apply, Some(Box::new(then)))
    }

    // --- Durable writes: return once the write is on disk.

    /// Runs `apply` on the store thread and returns its value once the write is durable.
    pub async fn write<T: Send + 'static>(
        &self,
        what: &'static str,
        apply: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let (reply, answer) = oneshot::channel();
        let job = Job::Write {
            apply: Box::new(move |s| {
                let v = apply(s)?;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                Ok(())
            }),
            done: Done {
                what,
                reply: Some(reply),
                then: None,
            },
        };
        self.tx.send(job).await.map_err(gone)?;
        answer.await.map_err(gone)??;
        let v = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        v.ok_or(StoreError::Closed)
    }

    pub async fn put_experiment_durable(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.write("experiment", move |s| s.put_experiment(&rec))
            .await
    }

    pub async fn append_audit_durable(&self, rec: AuditRecord) -> Result<(), StoreError> {
        self.write("audit", move |s| s.append_audit(&rec)).await
    }

    /// Sets (`Some`) or clears (`None`) the fleet halt.
    pub async fn set_halt(&self, halt: Option<HaltRecord>) -> Result<(), StoreError> {
        self.write("halt", move |s| s.set_halt(halt.as_ref())).await
    }

    pub async fn put_heartbeat(&self, at_unix_ms: i64) -> Result<(), StoreError> {
        self.write("heartbeat", move |s| s.put_heartbeat(at_unix_ms))
            .await
    }

    // --- Reads: see every write queued before them.

    /// Runs `read` on the store thread.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Read(Box::new(move |s| {
            let _ = reply.send(read(s));
        }));
        self.tx.send(job).await.map_err(gone)?;
        answer.await.map_err(gone)?
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(|s| s.agents()).await
    }

    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |s| s.audit(limit)).await
    }

    pub async fn halt(&self) -> Result<Option<HaltRecord>, StoreError> {
        self.read(|s| s.halt()).await
    }

    pub async fn heartbeat(&self) -> Result<Option<i64>, StoreError> {
        self.read(|s| s.heartbeat()).await
    }

    pub async fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        let name = name.to_string();
        self.read(move |s| s.experiment(&name)).await
    }

    pub async fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        self.read(|s| s.experiments()).await
    }

    /// Commits what is queued, closes the store (releasing the data directory) and ends the
    /// thread; later calls fail with [`StoreError::Closed`]. Closing twice is fine.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Job::Close(reply)).await.is_err() {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }
}

/// The store thread: apply what is queued (up to [`MAX_BATCH`]), flush once, answer the
/// writers; until the handle closes it or every handle is gone.
fn serve(store: Box<dyn Store>, mut rx: mpsc::Receiver<Job>) {
    let store = store.as_ref();
    let mut applied: Vec<Done> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(job) = next.take() {
            match job {
                Job::Read(read) => read(store),
                Job::Write { apply, done } => match apply(store) {
                    Ok(()) => applied.push(done),
                    Err(e) => done.finish(Err(e)),
                },
                Job::Close(reply) => {
                    commit(store, &mut applied);
                    let _ = reply.send(store.close());
                    return;
                }
            }
            n += 1;
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        commit(store, &mut applied);
    }
    commit(store, &mut applied);
    if let Err(e) = store.close() {
        tracing::error!("closing the store: {e}");
    }
}

/// One flush for every write applied since the last one, then their answers.
fn commit(store: &dyn Store, applied: &mut Vec<Done>) {
    if applied.is_empty() {
        return;
    }
    let started = Instant::now();
    let flushed = store.flush().map_err(Arc::new);
    metrics::store_committed(applied.len(), started.elapsed());
    for done in applied.drain(..) {
        done.finish(match &flushed {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::NotDurable(e.clone())),
        });
    }
}
