//! A watch's state between items, and how it reads the next ones.

use super::*;

/// A watch's state between items.
pub(super) struct Watcher {
    pub(super) responses: tonic::Streaming<pb::WatchResponse>,
    pub(super) ready: VecDeque<WatchEvent>,
    pub(super) keys: Keys,
    /// Revision of the last event received.
    pub(super) cursor: Revision,
    pub(super) endpoint: String,
    pub(super) done: bool,
}

impl Watcher {
    pub(super) async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if let Some(Err(e)) = self.receive().await {
                return Some(Err(e));
            }
        }
    }

    /// Reads one response into `ready`. `Some(Err)` ends the watch; `None` means it already
    /// ended.
    pub(super) async fn receive(&mut self) -> Option<Result<(), StoreError>> {
        if self.done {
            return None;
        }
        let result = match self.responses.message().await {
            Ok(Some(resp)) => self.absorb(resp),
            Ok(None) => Err(StoreError::Unavailable(Box::new(EtcdError::WatchEnded {
                endpoint: self.endpoint.clone(),
                reason: "stream closed by etcd".to_owned(),
            }))),
            Err(status) => Err(Failure { op: "watch", endpoint: self.endpoint.clone(), status }.into()),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    fn absorb(&mut self, resp: pb::WatchResponse) -> Result<(), StoreError> {
        if resp.compact_revision > 0 {
            // etcd keeps revisions from compact_revision on; the one before is the newest lost
            let compacted = Revision(to_revision(resp.compact_revision).0.saturating_sub(1));
            return Err(StoreError::Compacted { requested: self.cursor, compacted });
        }
        if resp.canceled {
            return Err(StoreError::Unavailable(Box::new(EtcdError::WatchEnded {
                endpoint: self.endpoint.clone(),
                reason: resp.cancel_reason,
            })));
        }
        for event in resp.events {
            let is_put = event.r#type() == pb::event::EventType::Put;
            let kv =
                event.kv.ok_or_else(|| StoreError::Unavailable(Box::new(EtcdError::Malformed("event without kv"))))?;
            let event = if is_put {
                WatchEvent::Put(self.keys.key_value(kv)?)
            } else {
                WatchEvent::Delete { key: self.keys.strip(&kv.key)?, revision: to_revision(kv.mod_revision) }
            };
            self.cursor = event.revision();
            self.ready.push_back(event);
        }
        Ok(())
    }
}
