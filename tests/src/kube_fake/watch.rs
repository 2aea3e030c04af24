//! WATCH: newline-delimited events, replay from the bounded history, bookmarks, timeouts, 410.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::FakeState;
use super::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{ApiError, Change, ChangeKind};

/// What the live-event channel carries.
#[derive(Debug, Clone)]
pub(crate) enum WatchMsg {
    /// A change.
    Event(Arc<Change>),
    /// End every watch stream (test hook).
    Disconnect,
    /// A type stopped being served: end its watch streams.
    TypeRemoved(String, String),
}

/// Which objects a watch (or list) sees and how it renders them.
#[derive(Debug, Clone)]
pub(crate) struct WatchFilter {
    pub(crate) rt: ResourceType,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// `Accept: ...;as=PartialObjectMetadata`: send only apiVersion/kind/metadata.
    pub(crate) partial_metadata: bool,
}

/// Turns an object into a `PartialObjectMetadata`.
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        self.namespace.as_deref().is_none_or(|n| n == ns) && self.labels.matches(object) && self.fields.matches(object)
    }

    fn render(&self, object: &Value) -> Value {
        if self.partial_metadata { partial_metadata(object) } else { object.clone() }
    }

    /// The event a watcher with this filter sees for a change, if any. An object that starts or
    /// stops matching the selectors is seen as ADDED or DELETED, like the real server does.
    fn translate(&self, change: &Change) -> Option<Bytes> {
        if change.group != self.rt.group || change.plural != self.rt.plural {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
        let kind = match change.kind {
            ChangeKind::Added if now => "ADDED",
            ChangeKind::Modified if now && before => "MODIFIED",
            ChangeKind::Modified if now => "ADDED",
            ChangeKind::Modified if before => "DELETED",
            ChangeKind::Deleted if now => "DELETED",
            _ => return None,
        };
        Some(line(kind, &self.render(&change.object)))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = if self.partial_metadata {
            ("PartialObjectMetadata".to_owned(), "meta.k8s.io/v1".to_owned())
        } else {
            (self.rt.kind.clone(), self.rt.api_version())
        };
        line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The query parameters of a watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchParams {
    pub(crate) resource_version: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) bookmarks: bool,
    pub(crate) send_initial_events: bool,
}

/// A watch ready to stream: what to send first and the live channel.
pub(crate) struct PreparedWatch {
    initial: Vec<Bytes>,
    /// The stream ends after `initial` (the 410 case).
    finished: bool,
    live: broadcast::Receiver<WatchMsg>,
    last_rv: u64,
    filter: WatchFilter,
    params: WatchParams,
    bookmark_interval: Duration,
}

/// Sets a watch up under the state lock so that no event is lost or duplicated between the replay
/// and the live channel.
pub(crate) fn prepare(
    state: &FakeState,
    live: broadcast::Receiver<WatchMsg>,
    filter: WatchFilter,
    params: WatchParams,
) -> Result<PreparedWatch, ApiError> {
    let current = state.store.rv;
    let mut initial = Vec::new();
    let mut finished = false;
    match params.resource_version.as_deref().filter(|rv| !rv.is_empty() && *rv != "0") {
        None => {
            for object in state.store.all(&filter.rt.group, &filter.rt.plural) {
                if filter.matches(object) {
                    initial.push(line("ADDED", &filter.render(object)));
                }
            }
            if params.send_initial_events && params.bookmarks {
                initial.push(filter.bookmark(current, true));
            }
        }
        Some(rv) => {
            let from: u64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}: invalid resource version"))
            })?;
            // Every event after `oldest_replayable` is retained.
            let oldest_replayable = state.history.front().map_or(current, |e| e.rv.saturating_sub(1));
            if from < oldest_replayable {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", oldest_replayable + 1),
                )
                .status();
                initial.push(line("ERROR", &status));
                finished = true;
            } else {
                initial.extend(state.history.iter().filter(|e| e.rv > from).filter_map(|e| filter.translate(e)));
            }
        }
    }
    Ok(PreparedWatch {
        initial,
        finished,
        live,
        last_rv: current,
        filter,
        params,
        bookmark_interval: state.bookmark_interval,
    })
}

impl PreparedWatch {
    /// The streaming response. The stream ends at `timeoutSeconds`, on a 410, when the client goes
    /// away, when it falls behind the live channel, or on [`WatchMsg::Disconnect`].
    pub(crate) fn into_response(self) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(self.run(tx));
        let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<Bytes, Infallible>));
        ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    async fn run(mut self, tx: mpsc::Sender<Bytes>) {
        for line in std::mem::take(&mut self.initial) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if self.finished {
            return;
        }
        let deadline = self.params.timeout.map(|t| Instant::now() + t);
        let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut next_bookmark = Instant::now() + self.bookmark_interval;
        loop {
            // Biased: queued live events go before a bookmark. A bookmark carries the
            // resourceVersion of the last event this stream received (matching or not).
            tokio::select! {
                biased;
                () = tx.closed() => return,
                () = tokio::time::sleep_until(deadline.unwrap_or(far_future)) => return,
                msg = self.live.recv() => match msg {
                    Ok(WatchMsg::Event(change)) => {
                        self.last_rv = change.rv;
                        if let Some(line) = self.filter.translate(&change) {
                            if tx.send(line).await.is_err() {
                                return;
                            }
                            next_bookmark = Instant::now() + self.bookmark_interval;
                        }
                    }
                    Ok(WatchMsg::TypeRemoved(group, plural)) => {
                        if group == self.filter.rt.group && plural == self.filter.rt.plural {
                            return;
                        }
                    }
                    // Disconnect, lagging behind (the client re-watches from its last
                    // resourceVersion and gets a replay), or the server is gone.
                    Ok(WatchMsg::Disconnect) | Err(_) => return,
                },
                () = tokio::time::sleep_until(next_bookmark), if self.params.bookmarks => {
                    if tx.send(self.filter.bookmark(self.last_rv, false)).await.is_err() {
                        return;
                    }
                    next_bookmark = Instant::now() + self.bookmark_interval;
                }
            }
        }
    }
}
