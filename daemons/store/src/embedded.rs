//! The embedded store: a single redb file holding the data, the global revision and a bounded
//! event log, so state and watch history survive restarts.
//!
//! # Layout
//! Three tables, all changed in one transaction per write:
//! - `kv`: key → (revision of its last write, value);
//! - `log`: revision → (key, value, or none for a delete): one event per revision, the newest
//!   [`History`] of them, for watchers that start in the past or fall behind;
//! - `meta`: the file format, the global revision, the newest compacted revision and the size
//!   of the log.
//!
//! # Blocking
//! redb is synchronous: a commit waits for `fsync` and only one write transaction runs at a
//! time, so a write can block for milliseconds behind another. Every operation therefore runs on
//! Tokio's blocking pool (`spawn_blocking`), reads included: they are cheap, but a cold page read
//! or a large listing must not stall a runtime worker either, and one rule is simpler to check
//! than a size threshold. A dropped future leaves its transaction to finish or abort on its own,
//! so a write is either done or not, never half done.
//!
//! # Watch
//! After each commit the writer publishes the new revision through a `tokio::sync::watch`
//! channel; each watcher, when the published revision passes its cursor, reads the next events
//! from the `log` table. Nothing is queued per watcher, so a slow watcher costs no memory; one
//! that falls behind the retained history gets [`StoreError::Compacted`].
//!
//! # Recovery
//! After an I/O error (a full disk, typically) redb refuses every later operation until the
//! file is closed and opened again. The store does that by itself: the failed database is
//! taken out of service at once ([`Store::health`] turns [`StoreHealth::Unwritable`], every
//! operation answers [`StoreError::Unavailable`] saying so), and a recovery task, once the last
//! operation using it has finished, reopens the file (redb repairs it if needed) and proves
//! that writes fit by committing, then removing, a value as large as the largest allowed
//! ([`MAX_VALUE_LEN`]). It retries every [`EmbeddedStore::with_recovery_interval`] (1 s by
//! default) until that succeeds; then the store is writable again. Nothing committed is lost:
//! the failed transaction never committed, and watchers resume from their revision.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use opni_metrics_core::id::Revision;
use opni_metrics_core::store::{
    KeyValue, Listing, MAX_VALUE_LEN, Precondition, Store, StoreError, StoreHealth, WatchEvent, validate_key,
    validate_write, validate_writes,
};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where the embedded store lives unless configured otherwise.
pub const DEFAULT_PATH: &str = "./data/opni-metrics.redb";

/// key → (revision of the last write, value).
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// revision → (key, value; `None` for a delete).
const LOG: TableDefinition<u64, (&str, Option<&[u8]>)> = TableDefinition::new("log");
/// Counters, see the `META_*` keys.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Scratch space of the recovery probe; empty between probes.
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_LOG_BYTES: &str = "log_bytes";

/// The file layout this version reads and writes.
const FORMAT: u64 = 1;

/// Events read from the log per blocking call of a watcher.
const WATCH_BATCH: usize = 256;

/// Time between recovery attempts after a failed write, unless configured.
pub const DEFAULT_RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// The default [`Store`]: one redb file on local disk. See the [module docs](self).
#[derive(Debug)]
pub struct EmbeddedStore {
    handle: Arc<Handle>,
    /// Operations running on the blocking pool (their futures may be gone).
    in_flight: Arc<InFlight>,
    history: History,
    /// The newest committed revision; watchers wake when it moves.
    committed: Arc<watch::Sender<Revision>>,
}

/// The file, the database open on it (if it works) and the store's health.
#[derive(Debug)]
struct Handle {
    path: PathBuf,
    /// The open database, or, after a failed write until it is reopened, why there is none.
    current: RwLock<Result<Arc<Db>, Arc<str>>>,
    health: watch::Sender<StoreHealth>,
    recovery_interval: Duration,
    in_flight: Arc<InFlight>,
}

impl Handle {
    /// The working database, or [`EmbeddedError::Recovering`].
    fn db(&self) -> Result<Arc<Db>, StoreError> {
        match &*self.current.read().unwrap_or_else(PoisonError::into_inner) {
            Ok(db) => Ok(Arc::clone(db)),
            Err(reason) => Err(StoreError::Unavailable(Box::new(EmbeddedError::Recovering {
                path: self.path.clone(),
                reason: reason.to_string(),
            }))),
        }
    }

    /// Takes `db` out of service after an I/O error and starts recovery (once per failure).
    /// Runs on the blocking pool or the runtime, which the recovery task is spawned on.
    fn failed(self: &Arc<Self>, db: &Arc<Db>) {
        let reason = db.failure.read().unwrap_or_else(PoisonError::into_inner).clone();
        let reason: Arc<str> = reason.unwrap_or_else(|| "an I/O error".into()).into();
        {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            match &*current {
                Ok(d) if Arc::ptr_eq(d, db) => *current = Err(Arc::clone(&reason)),
                // already out of service (another operation saw it first) or replaced
                _ => return,
            }
        }
        tracing::error!(path = %self.path.display(), %reason, "the store cannot write; recovering");
        self.health.send_replace(StoreHealth::Unwritable(format!("{}: {reason}", self.path.display())));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!(path = %self.path.display(), "no runtime to recover the store on; reopen it");
            return;
        };
        rt.spawn(recover(Arc::downgrade(self), Arc::downgrade(db)));
    }
}

/// Reopens the file once the failed database `old` is no longer used, and puts it back in
/// service after a successful probe; retries every recovery interval.
async fn recover(handle: Weak<Handle>, old: Weak<Db>) {
    let mut attempts = 0u64;
    loop {
        let Some(h) = handle.upgrade() else { return };
        let interval = h.recovery_interval;
        drop(h);
        tokio::time::sleep(interval).await;
        let Some(h) = handle.upgrade() else { return };
        if old.strong_count() > 0 {
            // an operation that started before the failure is still running on it
            continue;
        }
        attempts += 1;
        let (path, running) = (h.path.clone(), h.in_flight.start());
        let reopened = tokio::task::spawn_blocking(move || {
            let out = reopen(&path);
            drop(running);
            out
        })
        .await;
        match reopened {
            Ok(Ok(db)) => {
                *h.current.write().unwrap_or_else(PoisonError::into_inner) = Ok(Arc::new(db));
                h.health.send_replace(StoreHealth::Writable);
                tracing::info!(path = %h.path.display(), attempts, "the store recovered and takes writes again");
                return;
            }
            Ok(Err(e)) => {
                let reason = opni_metrics_core::error_chain(&e);
                if attempts == 1 || attempts.is_power_of_two() {
                    tracing::warn!(path = %h.path.display(), attempts, error = %reason, "the store is still unwritable");
                }
                *h.current.write().unwrap_or_else(PoisonError::into_inner) = Err(reason.clone().into());
                h.health.send_replace(StoreHealth::Unwritable(format!("{}: {reason}", h.path.display())));
            }
            Err(e) => tracing::warn!(path = %h.path.display(), error = %e, "store recovery task failed"),
        }
    }
}

/// Opens the file again (redb repairs it after a failed commit) and probes that a write of the
/// largest allowed value fits.
fn reopen(path: &Path) -> Result<Db, EmbeddedError> {
    let db = Database::create(path).map_err(|e| EmbeddedError::Open { path: path.to_owned(), source: Box::new(e) })?;
    let db = Db::new(db, path.to_owned());
    init(&db)?;
    let wrap = |e: StoreError| EmbeddedError::Probe { path: path.to_owned(), source: Box::new(e) };
    let txn = db.db.begin_write().or_unavailable(&db).map_err(wrap)?;
    {
        let mut probe = txn.open_table(PROBE).or_unavailable(&db).map_err(wrap)?;
        probe.insert("probe", vec![0u8; MAX_VALUE_LEN].as_slice()).or_unavailable(&db).map_err(wrap)?;
    }
    txn.commit().or_unavailable(&db).map_err(wrap)?;
    let txn = db.db.begin_write().or_unavailable(&db).map_err(wrap)?;
    txn.open_table(PROBE).or_unavailable(&db).map_err(wrap)?.remove("probe").or_unavailable(&db).map_err(wrap)?;
    txn.commit().or_unavailable(&db).map_err(wrap)?;
    Ok(db)
}

#[derive(Debug)]
struct Db {
    db: Database,
    path: PathBuf,
    /// Set by the first I/O error: redb refuses everything after one until reopened.
    broken: AtomicBool,
    /// What that error was.
    failure: RwLock<Option<String>>,
}

impl Db {
    fn new(db: Database, path: PathBuf) -> Self {
        Self { db, path, broken: AtomicBool::new(false), failure: RwLock::new(None) }
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) && !self.broken.swap(true, Ordering::AcqRel) {
            *self.failure.write().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        }
        StoreError::Unavailable(Box::new(EmbeddedError::Database { path: self.path.clone(), source: Box::new(e) }))
    }
}

/// `?` for redb results inside a blocking operation: the error becomes
/// [`StoreError::Unavailable`] naming the file.
trait OrUnavailable<T> {
    fn or_unavailable(self, db: &Db) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrUnavailable<T> for Result<T, E> {
    fn or_unavailable(self, db: &Db) -> Result<T, StoreError> {
        self.map_err(|e| db.err(e))
    }
}

impl EmbeddedStore {
    /// Opens the store file at `path` with the default [`History`], creating the file and its
    /// parent directory when missing. Blocks while the file is opened (startup only).
    ///
    /// # Errors
    /// [`EmbeddedError`] naming the path: the directory cannot be created, the file cannot be
    /// opened (or is open elsewhere), or it has an incompatible format.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EmbeddedError> {
        Self::open_with(path, History::default())
    }

    /// [`open`](Self::open) with a chosen history bound. A smaller bound than the file was
    /// written with takes effect at the next write.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(path: impl AsRef<Path>, history: History) -> Result<Self, EmbeddedError> {
        let path = path.as_ref().to_owned();
        if path.as_os_str().is_empty() {
            return Err(EmbeddedError::EmptyPath);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::CreateDir { path: dir.to_owned(), source })?;
        }
        let db =
            Database::create(&path).map_err(|e| EmbeddedError::Open { path: path.clone(), source: Box::new(e) })?;
        let db = Db::new(db, path.clone());
        let revision = init(&db)?;
        let (committed, _) = watch::channel(revision);
        let in_flight = Arc::new(InFlight::default());
        Ok(Self {
            handle: Arc::new(Handle {
                path,
                current: RwLock::new(Ok(Arc::new(db))),
                health: watch::Sender::new(StoreHealth::Writable),
                recovery_interval: DEFAULT_RECOVERY_INTERVAL,
                in_flight: Arc::clone(&in_flight),
            }),
            in_flight,
            history: History { events: history.events.max(1), ..history },
            committed: Arc::new(committed),
        })
    }

    /// Sets the time between recovery attempts after a failed write (default
    /// [`DEFAULT_RECOVERY_INTERVAL`]; at least 10 ms). See [Recovery](self#recovery).
    #[must_use]
    pub fn with_recovery_interval(mut self, interval: Duration) -> Self {
        if let Some(handle) = Arc::get_mut(&mut self.handle) {
            handle.recovery_interval = interval.max(Duration::from_millis(10));
        }
        self
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }

    /// [`Store::health`] as it changes: a receiver that sees each transition.
    pub fn health_changes(&self) -> watch::Receiver<StoreHealth> {
        self.handle.health.subscribe()
    }

    /// Runs `op` on the blocking pool with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.handle.db()?;
        let handle = Arc::clone(&self.handle);
        let running = self.in_flight.start();
        tokio::task::spawn_blocking(move || {
            let out = op(&db);
            if db.broken.load(Ordering::Acquire) {
                handle.failed(&db);
            }
            // the database (also held through the handle) goes before the operation counts as
            // done: once quiesced, the store's last owner closes the file
            drop(db);
            drop(handle);
            drop(running);
            out
        })
        .await
        .map_err(|source| {
            StoreError::Unavailable(Box::new(EmbeddedError::Task { path: self.handle.path.clone(), source }))
        })?
    }

    /// Runs the write `op` on the blocking pool and, once committed, tells the watchers.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Db, History) -> Result<(T, Option<Revision>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let committed = Arc::clone(&self.committed);
        let history = self.history;
        self.blocking(move |db| {
            let (out, revision) = op(db, history)?;
            if let Some(revision) = revision {
                // Commits are serialised by redb, but two writers may publish out of order.
                committed.send_if_modified(|r| {
                    let newer = revision > *r;
                    if newer {
                        *r = revision;
                    }
                    newer
                });
            }
            Ok(out)
        })
        .await
    }
}

/// Creates the tables of a new file, checks the format of an existing one; returns the
/// persisted revision.
fn init(db: &Db) -> Result<Revision, EmbeddedError> {
    let err = |e: redb::Error| EmbeddedError::Database { path: db.path.clone(), source: Box::new(e) };
    let txn = db.db.begin_write().map_err(|e| err(e.into()))?;
    let revision = {
        txn.open_table(KV).map_err(|e| err(e.into()))?;
        txn.open_table(LOG).map_err(|e| err(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let format = meta.get(META_FORMAT).map_err(|e| err(e.into()))?.map(|g| g.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT).map_err(|e| err(e.into()))?;
            }
            Some(FORMAT) => {}
            Some(found) => return Err(EmbeddedError::Format { path: db.path.clone(), found }),
        }
        meta.get(META_REVISION).map_err(|e| err(e.into()))?.map_or(0, |g| g.value())
    };
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(Revision(revision))
}

fn meta_get(db: &Db, meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(meta.get(key).or_unavailable(db)?.map_or(0, |g| g.value()))
}

fn check(key: &str, pre: Precondition, actual: u64) -> Result<(), StoreError> {
    let actual = Revision(actual);
    let ok = match pre {
        Precondition::None => true,
        Precondition::Absent => actual == Revision::ZERO,
        Precondition::Revision(r) => actual == r,
    };
    if ok { Ok(()) } else { Err(StoreError::Conflict { key: key.to_owned(), expected: pre, actual }) }
}

/// What an event costs in the history budget.
fn event_size(key: &str, value: Option<&[u8]>) -> u64 {
    (key.len() + value.map_or(0, <[u8]>::len) + 16) as u64
}

/// Appends the event of `revision` to the log, records the revision and compacts the log down
/// to `history`. Runs inside the write transaction of the change.
fn append(
    db: &Db,
    txn: &redb::WriteTransaction,
    history: History,
    revision: u64,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    let mut log: Table<'_, u64, (&str, Option<&[u8]>)> = txn.open_table(LOG).or_unavailable(db)?;
    let mut meta = txn.open_table(META).or_unavailable(db)?;
    log.insert(revision, (key, value)).or_unavailable(db)?;
    let mut bytes = meta_get(db, &meta, META_LOG_BYTES)? + event_size(key, value);
    let mut compacted = meta_get(db, &meta, META_COMPACTED)?;
    // log holds revisions compacted + 1 ..= revision, one event each
    while revision - compacted > 1 && (revision - compacted > history.events || bytes > history.bytes) {
        let Some((rev, event)) = log.pop_first().or_unavailable(db)? else { break };
        let (k, v) = event.value();
        bytes = bytes.saturating_sub(event_size(k, v));
        compacted = rev.value();
    }
    meta.insert(META_REVISION, revision).or_unavailable(db)?;
    meta.insert(META_COMPACTED, compacted).or_unavailable(db)?;
    meta.insert(META_LOG_BYTES, bytes).or_unavailable(db)?;
    Ok(())
}

fn put_blocking(
    db: &Db,
    history: History,
    key: &str,
    value: &[u8],
    pre: Precondition,
) -> Result<(Revision, Option<Revision>), StoreError> {
    let txn = db.db.begin_write().or_unavailable(db)?;
    let revision = {
        let mut kv = txn.open_table(KV).or_unavailable(db)?;
        let actual = kv.get(key).or_unavailable(db)?.map_or(0, |g| g.value().0);
        check(key, pre, actual)?;
        let revision = meta_get(db, &txn.open_table(META).or_unavailable(db)?, META_REVISION)? + 1;
        kv.insert(key, (revision, value)).or_unavailable(db)?;
        append(db, &txn, history, revision, key, Some(value))?;
        revision
    };
    txn.commit().or_unavailable(db)?;
    Ok((Revision(revision), Some(Revision(revision))))
}

fn put_all_blocking(
    db: &Db,
    history: History,
    entries: &[(String, Bytes)],
) -> Result<(Option<Revision>, Option<Revision>), StoreError> {
    if entries.is_empty() {
        return Ok((None, None));
    }
    let txn = db.db.begin_write().or_unavailable(db)?;
    let last = {
        let mut kv = txn.open_table(KV).or_unavailable(db)?;
        let mut revision = meta_get(db, &txn.open_table(META).or_unavailable(db)?, META_REVISION)?;
        // one revision per entry, as if written one by one, in one commit
        for (key, value) in entries {
            revision += 1;
            kv.insert(key.as_str(), (revision, &value[..])).or_unavailable(db)?;
            append(db, &txn, history, revision, key, Some(value))?;
        }
        revision
    };
    txn.commit().or_unavailable(db)?;
    Ok((Some(Revision(last)), Some(Revision(last))))
}

fn delete_blocking(
    db: &Db,
    history: History,
    key: &str,
    pre: Precondition,
) -> Result<(Option<Revision>, Option<Revision>), StoreError> {
    let txn = db.db.begin_write().or_unavailable(db)?;
    let revision = {
        let mut kv = txn.open_table(KV).or_unavailable(db)?;
        let actual = kv.get(key).or_unavailable(db)?.map_or(0, |g| g.value().0);
        check(key, pre, actual)?;
        if actual == 0 {
            // nothing to delete: the transaction is dropped, i.e. aborted
            return Ok((None, None));
        }
        let revision = meta_get(db, &txn.open_table(META).or_unavailable(db)?, META_REVISION)? + 1;
        kv.remove(key).or_unavailable(db)?;
        append(db, &txn, history, revision, key, None)?;
        revision
    };
    txn.commit().or_unavailable(db)?;
    Ok((Some(Revision(revision)), Some(Revision(revision))))
}

fn get_blocking(db: &Db, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let txn = db.db.begin_read().or_unavailable(db)?;
    let kv = txn.open_table(KV).or_unavailable(db)?;
    let found = kv.get(key).or_unavailable(db)?;
    Ok(found.map(|g| {
        let (revision, value) = g.value();
        KeyValue { key: key.to_owned(), value: Bytes::copy_from_slice(value), revision: Revision(revision) }
    }))
}

fn list_blocking(db: &Db, prefix: &str) -> Result<Listing, StoreError> {
    // one read transaction: the items and the revision come from the same snapshot
    let txn = db.db.begin_read().or_unavailable(db)?;
    let kv = txn.open_table(KV).or_unavailable(db)?;
    let meta = txn.open_table(META).or_unavailable(db)?;
    let mut items = Vec::new();
    for entry in kv.range(prefix..).or_unavailable(db)? {
        let (k, v) = entry.or_unavailable(db)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        let (revision, value) = v.value();
        items.push(KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value),
            revision: Revision(revision),
        });
    }
    Ok(Listing { items, revision: Revision(meta_get(db, &meta, META_REVISION)?) })
}

/// Up to [`WATCH_BATCH`] events under `prefix` after `cursor`, and the revision scanned up to.
fn read_events(db: &Db, prefix: &str, cursor: Revision) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
    let txn = db.db.begin_read().or_unavailable(db)?;
    let meta = txn.open_table(META).or_unavailable(db)?;
    let compacted = Revision(meta_get(db, &meta, META_COMPACTED)?);
    if cursor < compacted {
        return Err(StoreError::Compacted { requested: cursor, compacted });
    }
    let log = txn.open_table(LOG).or_unavailable(db)?;
    let mut events = Vec::new();
    let mut scanned = cursor;
    for entry in log.range(cursor.0 + 1..).or_unavailable(db)? {
        let (rev, event) = entry.or_unavailable(db)?;
        let revision = Revision(rev.value());
        scanned = revision;
        let (key, value) = event.value();
        if !key.starts_with(prefix) {
            continue;
        }
        let key = key.to_owned();
        events.push(match value {
            Some(v) => WatchEvent::Put(KeyValue { key, value: Bytes::copy_from_slice(v), revision }),
            None => WatchEvent::Delete { key, revision },
        });
        if events.len() >= WATCH_BATCH {
            break;
        }
    }
    Ok((events, scanned))
}

mod config;
mod in_flight;
mod watcher;
pub use config::{EmbeddedConfig, EmbeddedError, History};
use in_flight::InFlight;
use watcher::Watcher;

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            let key = key.to_owned();
            self.blocking(move |db| get_blocking(db, &key)).await
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes, pre: Precondition) -> BoxFuture<'a, Result<Revision, StoreError>> {
        Box::pin(async move {
            validate_write(key, value.len())?;
            let key = key.to_owned();
            self.write(move |db, history| put_blocking(db, history, &key, &value, pre)).await
        })
    }

    fn put_all(&self, entries: Vec<(String, Bytes)>) -> BoxFuture<'_, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            validate_writes(&entries)?;
            self.write(move |db, history| put_all_blocking(db, history, &entries)).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str, pre: Precondition) -> BoxFuture<'a, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            let key = key.to_owned();
            self.write(move |db, history| delete_blocking(db, history, &key, pre)).await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            let prefix = prefix.to_owned();
            self.blocking(move |db| list_blocking(db, &prefix)).await
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>> {
        Box::pin(async move {
            // Subscribe before checking the history, so no commit after the check is missed.
            let committed = self.committed.subscribe();
            let compacted = self
                .blocking(|db| {
                    let txn = db.db.begin_read().or_unavailable(db)?;
                    let meta = txn.open_table(META).or_unavailable(db)?;
                    meta_get(db, &meta, META_COMPACTED)
                })
                .await?;
            if after < Revision(compacted) {
                return Err(StoreError::Compacted { requested: after, compacted: Revision(compacted) });
            }
            let watcher = Watcher {
                handle: Arc::clone(&self.handle),
                in_flight: Arc::clone(&self.in_flight),
                prefix: Arc::from(prefix),
                cursor: after,
                committed,
                ready: Vec::new().into_iter(),
                done: false,
            };
            let events = stream::unfold(watcher, |mut w| async move { w.next().await.map(|item| (item, w)) });
            let events: BoxStream<'static, _> = Box::pin(events);
            Ok(events)
        })
    }

    fn quiesce(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.in_flight.idle().await;
        })
    }

    fn health(&self) -> StoreHealth {
        self.handle.health.borrow().clone()
    }
}

#[cfg(test)]
mod tests;
