//! The revisioned key-value store every piece of gateway state lives in.
//!
//! Implementations: [`MemoryStore`] (here, for tests and embedding), the embedded single-file
//! store and the etcd store (in the daemons crate). Every implementation must pass the shared
//! contract suite in `store::contract` (feature `contract`).
//!
//! Semantics follow etcd: one global revision that every write increments; each key remembers
//! the revision of its last write; compare-and-put and delete take a [`Precondition`]; `watch`
//! delivers every change after a revision, in order, with no gaps — so `list` followed by
//! `watch(prefix, listing.revision)` never misses a write.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::id::Revision;

mod memory;
pub use memory::{DEFAULT_HISTORY, MemoryStore};

#[cfg(feature = "contract")]
pub mod contract;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// Largest value accepted (etcd's default request limit).
pub const MAX_VALUE_LEN: usize = 1536 * 1024;

/// Most keys one backend write of [`Store::put_all`] carries (etcd's default `--max-txn-ops`).
pub const MAX_BATCH_KEYS: usize = 128;

/// A stored key, its value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the last write of this key.
    pub revision: Revision,
}

/// A condition a write requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// None: write unconditionally.
    None,
    /// The key must be absent.
    Absent,
    /// The key's last write must be at exactly this revision.
    Revision(Revision),
}

impl Precondition {
    /// The precondition of a write based on what the caller read: `None` writes
    /// unconditionally, [`Revision::ZERO`] (nothing was there) requires the key to be absent,
    /// any other revision requires exactly that one.
    pub fn expecting(revision: Option<Revision>) -> Self {
        match revision {
            None => Self::None,
            Some(Revision::ZERO) => Self::Absent,
            Some(r) => Self::Revision(r),
        }
    }
}

/// Keys under a prefix, as of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Sorted by key.
    pub items: Vec<KeyValue>,
    /// The store revision the listing reflects; watch from here to see every later change.
    pub revision: Revision,
}

/// A change delivered by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(kv) => kv.revision,
            Self::Delete { revision, .. } => *revision,
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold; `actual` is the key's revision (zero when absent).
    #[error("conflict on {key:?}: required {expected:?}, found revision {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The precondition given.
        expected: Precondition,
        /// The key's current revision, zero when absent.
        actual: Revision,
    },
    /// The watch start revision is older than the retained history.
    #[error("revision {requested} is compacted; history starts after {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The newest revision no longer retained.
        compacted: Revision,
    },
    /// The key is empty, too long or not UTF-8-clean.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The value is larger than [`MAX_VALUE_LEN`].
    #[error("value for {key:?} is {len} bytes, the limit is {MAX_VALUE_LEN}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        len: usize,
    },
    /// The backend is unreachable or failed.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back (corrupt or from an incompatible version).
    #[error("corrupt data under {key:?}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Whether a store can take writes, as far as it knows without asking its backend: a cheap,
/// local answer for readiness probes (see [`Store::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// The last write (or recovery probe) succeeded.
    Writable,
    /// A write failed in a way that needs recovery (disk full, I/O error); the store is
    /// recovering on its own and says why it cannot write.
    Unwritable(String),
}

impl StoreHealth {
    /// Whether writes are expected to succeed.
    pub fn is_writable(&self) -> bool {
        matches!(self, Self::Writable)
    }
}

/// Checks a key and value against the limits every store enforces.
///
/// # Errors
/// [`StoreError::InvalidKey`] or [`StoreError::ValueTooLarge`].
pub fn validate_write(key: &str, value_len: usize) -> Result<(), StoreError> {
    validate_key(key)?;
    if value_len > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge { key: key.to_owned(), len: value_len });
    }
    Ok(())
}

/// Checks every entry of a [`Store::put_all`] batch, before any is written.
///
/// # Errors
/// The first entry's [`StoreError::InvalidKey`] or [`StoreError::ValueTooLarge`].
pub fn validate_writes(entries: &[(String, Bytes)]) -> Result<(), StoreError> {
    entries.iter().try_for_each(|(key, value)| validate_write(key, value.len()))
}

/// Checks a key: 1..=[`MAX_KEY_LEN`] bytes, no control characters.
///
/// # Errors
/// [`StoreError::InvalidKey`].
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidKey { key: key.chars().take(64).collect(), reason });
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// A revisioned key-value store. All methods are cancel-safe: dropping a future either leaves
/// the write undone or done, never half done.
pub trait Store: Send + Sync {
    /// The value of `key`, if present.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;

    /// Writes `value` under `key` if `pre` holds; returns the new revision.
    fn put<'a>(&'a self, key: &'a str, value: Bytes, pre: Precondition) -> BoxFuture<'a, Result<Revision, StoreError>>;

    /// Writes every `(key, value)` of `entries` without preconditions, in order (a later entry
    /// for a key wins), in as few backend writes as the store can: one etcd transaction per
    /// [`MAX_BATCH_KEYS`] keys, one embedded transaction. Returns the revision of the last write,
    /// `None` for no entries. Every entry is checked before anything is written; past that the
    /// batch is not atomic as a whole: on an error, a leading part of it may be written. The
    /// default writes one entry at a time.
    fn put_all(&self, entries: Vec<(String, Bytes)>) -> BoxFuture<'_, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            validate_writes(&entries)?;
            let mut last = None;
            for (key, value) in entries {
                last = Some(self.put(&key, value, Precondition::None).await?);
            }
            Ok(last)
        })
    }

    /// Deletes `key` if `pre` holds; returns the revision of the delete, or `None` when the key
    /// was absent (which is not an error unless `pre` required a revision).
    fn delete<'a>(&'a self, key: &'a str, pre: Precondition) -> BoxFuture<'a, Result<Option<Revision>, StoreError>>;

    /// Every key starting with `prefix`, sorted, with the revision of the listing.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>>;

    /// Every change to keys starting with `prefix` with a revision above `after`, in revision
    /// order, then every later change as it happens. The stream ends only on error.
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>>;

    /// Resolves once every operation started before the call has finished, including ones
    /// whose futures were dropped but whose work goes on (an embedded store finishes them on a
    /// blocking pool). An owner calls it at shutdown, after its tasks stopped and its watch
    /// streams were dropped, so that the store can be opened again at once. The default has
    /// nothing to wait for.
    fn quiesce(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Whether the store can take writes, from what it last saw (no I/O: it is polled by
    /// readiness probes). A store whose failures heal by themselves, such as a remote one
    /// answering again, keeps the default, [`StoreHealth::Writable`]; one that must recover
    /// (reopen a file after a failed write) reports [`StoreHealth::Unwritable`] until it has.
    fn health(&self) -> StoreHealth {
        StoreHealth::Writable
    }
}
