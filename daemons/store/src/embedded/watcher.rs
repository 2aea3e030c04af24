//! A watch's state between items, and how it reads the next ones.

use super::*;

/// A watcher's state between items.
pub(super) struct Watcher {
    pub(super) handle: Arc<Handle>,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) prefix: Arc<str>,
    /// Every event up to here has been delivered or filtered out.
    pub(super) cursor: Revision,
    pub(super) committed: watch::Receiver<Revision>,
    pub(super) ready: std::vec::IntoIter<WatchEvent>,
    pub(super) done: bool,
}

impl Watcher {
    pub(super) async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.ready.next() {
                return Some(Ok(event));
            }
            // Mark the published revision seen before reading, so a commit after the read
            // wakes us: no lost wake-up.
            let published = *self.committed.borrow_and_update();
            if published <= self.cursor {
                if self.committed.changed().await.is_err() && *self.committed.borrow() <= self.cursor {
                    self.done = true;
                    return Some(Err(StoreError::Unavailable(Box::new(EmbeddedError::Closed {
                        path: self.handle.path.clone(),
                    }))));
                }
                continue;
            }
            let db = match self.handle.db() {
                Ok(db) => db,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let (handle, prefix, cursor) = (Arc::clone(&self.handle), Arc::clone(&self.prefix), self.cursor);
            let running = self.in_flight.start();
            let read = tokio::task::spawn_blocking(move || {
                let out = read_events(&db, &prefix, cursor);
                if db.broken.load(Ordering::Acquire) {
                    handle.failed(&db);
                }
                drop(db);
                drop(running);
                out
            })
            .await;
            match read {
                Ok(Ok((events, scanned))) => {
                    self.cursor = scanned.max(self.cursor);
                    self.ready = events.into_iter();
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(source) => {
                    self.done = true;
                    let path = self.handle.path.clone();
                    return Some(Err(StoreError::Unavailable(Box::new(EmbeddedError::Task { path, source }))));
                }
            }
        }
    }
}
