//! The in-memory [`Store`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::future::{self, BoxFuture};
use futures::stream::{BoxStream, Stream};

use super::{KeyValue, Listing, Precondition, Store, StoreError, WatchEvent, validate_key, validate_write};
use crate::id::Revision;

/// Events kept for watchers that start in the past, by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// A [`Store`] in memory, with etcd's semantics: global revisions, compare-and-put, watch with a
/// bounded history (older starts get [`StoreError::Compacted`]). Cheap to clone: clones share
/// the data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    data: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// One event per revision, oldest first; `log[0]` has revision `compacted + 1`.
    log: VecDeque<WatchEvent>,
    compacted: Revision,
    history: usize,
    wakers: HashMap<u64, Waker>,
    next_watcher: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }
}

impl MemoryStore {
    /// An empty store keeping the last `history` events for watchers.
    pub fn with_history(history: usize) -> Self {
        let inner = Inner { history: history.max(1), ..Inner::default() };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn check(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        let actual = self.data.get(key).map_or(Revision::ZERO, |kv| kv.revision);
        let ok = match pre {
            Precondition::None => true,
            Precondition::Absent => actual == Revision::ZERO,
            Precondition::Revision(r) => actual == r,
        };
        if ok { Ok(()) } else { Err(StoreError::Conflict { key: key.to_owned(), expected: pre, actual }) }
    }

    fn record(&mut self, event: WatchEvent) {
        self.log.push_back(event);
        while self.log.len() > self.history {
            self.log.pop_front();
            self.compacted = self.compacted.next();
        }
        for (_, w) in self.wakers.drain() {
            w.wake();
        }
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let r = validate_key(key).map(|()| self.lock().data.get(key).cloned());
        Box::pin(future::ready(r))
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes, pre: Precondition) -> BoxFuture<'a, Result<Revision, StoreError>> {
        let r = (|| {
            validate_write(key, value.len())?;
            let mut inner = self.lock();
            inner.check(key, pre)?;
            let revision = inner.revision.next();
            inner.revision = revision;
            let kv = KeyValue { key: key.to_owned(), value, revision };
            inner.data.insert(key.to_owned(), kv.clone());
            inner.record(WatchEvent::Put(kv));
            Ok(revision)
        })();
        Box::pin(future::ready(r))
    }

    fn delete<'a>(&'a self, key: &'a str, pre: Precondition) -> BoxFuture<'a, Result<Option<Revision>, StoreError>> {
        let r = (|| {
            validate_key(key)?;
            let mut inner = self.lock();
            inner.check(key, pre)?;
            if inner.data.remove(key).is_none() {
                return Ok(None);
            }
            let revision = inner.revision.next();
            inner.revision = revision;
            inner.record(WatchEvent::Delete { key: key.to_owned(), revision });
            Ok(Some(revision))
        })();
        Box::pin(future::ready(r))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        let inner = self.lock();
        let items = inner
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Box::pin(future::ready(Ok(Listing { items, revision: inner.revision })))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>> {
        let r = {
            let mut inner = self.lock();
            if after < inner.compacted {
                Err(StoreError::Compacted { requested: after, compacted: inner.compacted })
            } else {
                let id = inner.next_watcher;
                inner.next_watcher += 1;
                let stream: BoxStream<'static, _> = Box::pin(Watch {
                    inner: Arc::clone(&self.inner),
                    prefix: prefix.to_owned(),
                    cursor: after,
                    id,
                    done: false,
                });
                Ok(stream)
            }
        };
        Box::pin(future::ready(r))
    }
}

struct Watch {
    inner: Arc<Mutex<Inner>>,
    prefix: String,
    cursor: Revision,
    id: u64,
    done: bool,
}

impl Stream for Watch {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let mut inner = this.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if this.cursor < inner.compacted {
            this.done = true;
            return Poll::Ready(Some(Err(StoreError::Compacted {
                requested: this.cursor,
                compacted: inner.compacted,
            })));
        }
        // log[i] has revision compacted + 1 + i
        let start = usize::try_from(this.cursor.0 - inner.compacted.0).unwrap_or(usize::MAX);
        for event in inner.log.iter().skip(start) {
            this.cursor = event.revision();
            if event.key().starts_with(&this.prefix) {
                return Poll::Ready(Some(Ok(event.clone())));
            }
        }
        inner.wakers.insert(this.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.wakers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::executor::block_on;

    #[test]
    fn compaction_is_reported() {
        block_on(async {
            let s = MemoryStore::with_history(2);
            for i in 0..5 {
                s.put("k", Bytes::from(vec![i]), Precondition::None).await.unwrap();
            }
            assert!(matches!(s.watch("k", Revision(1)).await, Err(StoreError::Compacted { .. })));
            let mut w = s.watch("k", Revision(3)).await.unwrap();
            assert_eq!(w.next().await.unwrap().unwrap().revision(), Revision(4));
        });
    }
}
