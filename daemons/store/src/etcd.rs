//! The etcd store: core's [`Store`] on an etcd cluster (v3 gRPC API), for gateways with several
//! replicas.
//!
//! # Mapping
//! - The store revision is etcd's revision (the response header's), a key's revision its
//!   `mod_revision`.
//! - Preconditions are transaction compares: `Absent` ⇒ `create_revision == 0`,
//!   `Revision(r)` ⇒ `mod_revision == r`; the failure branch reads the key so a conflict
//!   reports its actual revision.
//! - `list` is a prefix range read in pages of [`LIST_PAGE`] keys, all at the revision of the
//!   first page, so the listing is one consistent snapshot whatever its size.
//! - `watch(prefix, after)` is an etcd watch from `after + 1`; etcd's compaction cancels it with
//!   [`StoreError::Compacted`].
//! - Every key lives under the configured prefix (default [`DEFAULT_PREFIX`]), which is
//!   stripped on the way out, so several installations can share one etcd.
//!
//! # Endpoints and failures
//! Calls go to one endpoint at a time; when it is unreachable (`UNAVAILABLE`, deadline) the next
//! one takes over. Reads are retried on the other endpoints at once; writes are not, because a
//! write whose answer was lost may have been applied: the caller sees
//! [`StoreError::Unavailable`] and decides (a compare-and-put retried blindly could report a
//! conflict with itself). A broken watch ends with an error; watching again from the last
//! revision seen loses nothing.
//!
//! etcd refuses requests above its `--max-request-bytes` (1.5 MiB by default, about what
//! [`MAX_VALUE_LEN`](opni_metrics_core::store::MAX_VALUE_LEN) allows for the value alone): run
//! it with a little more (e.g. 2 MiB) to accept values at the limit. Its history is kept until
//! compacted: use etcd's `--auto-compaction-*` flags or [`EtcdStore::compact`].
//!
//! The gRPC client is generated from `proto/etcd/rpc.proto`, our own minimal subset of etcd's
//! API (KV and Watch only).

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream, StreamExt};
use opni_metrics_core::id::Revision;
use opni_metrics_core::store::{
    KeyValue, Listing, MAX_BATCH_KEYS, Precondition, Store, StoreError, WatchEvent, validate_key, validate_write,
    validate_writes,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;

/// The key prefix used unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/opni-metrics/";

/// Keys per page of a listing.
pub const LIST_PAGE: i64 = 256;

/// Most key and value bytes one `put_all` transaction carries, well below etcd's default
/// request limit (`--max-request-bytes`, 1.5 MiB); a larger single entry goes alone.
const TXN_BYTES: usize = 1 << 20;

/// Largest gRPC response accepted from etcd (a page of large values).
const MAX_RESPONSE: usize = 512 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A listing whose snapshot is compacted between two pages starts over at most this often.
const LIST_ATTEMPTS: usize = 3;

/// The smallest key above every key starting with `prefix` (etcd's prefix range end).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return Bytes::from(end);
        }
        end.pop();
    }
    // every byte is 0xff: "\0" means "to the end of the keyspace"
    Bytes::from_static(&[0])
}

fn to_i64(r: Revision) -> i64 {
    i64::try_from(r.0).unwrap_or(i64::MAX)
}

fn to_revision(r: i64) -> Revision {
    Revision(u64::try_from(r).unwrap_or(0))
}

fn header_revision(header: Option<&pb::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| to_revision(h.revision))
        .ok_or_else(|| StoreError::Unavailable(Box::new(EtcdError::Malformed("response without header"))))
}

/// A failed call, before it becomes a [`StoreError`].
struct Failure {
    op: &'static str,
    endpoint: String,
    status: tonic::Status,
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        let Failure { op, endpoint, status } = f;
        StoreError::Unavailable(Box::new(EtcdError::Rpc { op, endpoint, source: Box::new(status) }))
    }
}

#[derive(Debug)]
struct Member {
    url: String,
    channel: Channel,
}

/// Strips and checks the store prefix of keys coming back from etcd.
#[derive(Debug, Clone)]
struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    fn full(&self, key: &str) -> Bytes {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        Bytes::from(full)
    }

    fn strip(&self, raw: &[u8]) -> Result<String, StoreError> {
        let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Corrupt {
            key: String::from_utf8_lossy(raw).into_owned(),
            source,
        };
        let rest = raw
            .strip_prefix(self.prefix.as_bytes())
            .ok_or_else(|| corrupt(Box::new(EtcdError::Malformed("key outside the store prefix"))))?;
        String::from_utf8(rest.to_vec()).map_err(|e| corrupt(Box::new(e)))
    }

    fn key_value(&self, kv: pb::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue { key: self.strip(&kv.key)?, value: kv.value, revision: to_revision(kv.mod_revision) })
    }
}

/// A [`Store`] on etcd. See the [module docs](self).
#[derive(Debug)]
pub struct EtcdStore {
    members: Vec<Member>,
    /// Index of the member calls go to.
    current: AtomicUsize,
    keys: Keys,
}

impl EtcdStore {
    /// A store on the etcd cluster `cfg` names. Reads the TLS files now; connects on first use
    /// (so an etcd outage at startup is not fatal). Call it inside a Tokio runtime.
    ///
    /// # Errors
    /// [`EtcdError`]: invalid configuration or unusable TLS files.
    pub fn new(cfg: &EtcdConfig) -> Result<Self, EtcdError> {
        let urls = cfg.urls()?;
        let tls = if cfg.tls.is_some() || urls.iter().any(|u| u.starts_with("https://")) {
            Some(tls_config(cfg.tls.as_ref())?)
        } else {
            None
        };
        let mut members = Vec::with_capacity(urls.len());
        for url in urls {
            let bad = |reason: String| EtcdError::Endpoint { endpoint: url.clone(), reason };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            if let (Some(tls), true) = (&tls, url.starts_with("https://")) {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|source| EtcdError::Tls { endpoint: url.clone(), source })?;
            }
            members.push(Member { channel: endpoint.connect_lazy(), url });
        }
        Ok(Self { members, current: AtomicUsize::new(0), keys: Keys { prefix: Arc::from(cfg.prefix.as_str()) } })
    }

    /// Compacts etcd's history up to `revision`: watches from before it end with
    /// [`StoreError::Compacted`]. Waits until the compaction is applied.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], also when `revision` is already compacted or in the future.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let req = pb::CompactionRequest { revision: to_i64(revision), physical: true };
        self.call("compact", false, |ch| async move { kv_client(ch).compact(req).await }).await?;
        Ok(())
    }

    /// Grants a lease of `ttl`.
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let req = pb::LeaseGrantRequest { ttl: i64::try_from(ttl.as_secs()).unwrap_or(15), id: 0 };
        let lease =
            self.call("lease grant", true, |ch| async move { LeaseClient::new(ch).lease_grant(req).await }).await?;
        if !lease.error.is_empty() || lease.id == 0 {
            return Err(StoreError::Unavailable(Box::new(EtcdError::Malformed("lease grant refused"))));
        }
        Ok(lease.id)
    }

    /// Opens the keep-alive stream of `lease` within `within`, sending its first keep-alive
    /// (etcd answers the stream's headers with its first response): the sender for the next
    /// ones, and the responses.
    async fn keep_alive(
        &self,
        lease: i64,
        within: Duration,
    ) -> Result<
        (tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>, tonic::Streaming<pb::LeaseKeepAliveResponse>),
        StoreError,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.try_send(pb::LeaseKeepAliveRequest { id: lease });
        let mut client = LeaseClient::new(self.channel());
        let open = client.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx));
        let failure = |status| StoreError::from(Failure { op: "lease keepalive", endpoint: self.endpoint(), status });
        match tokio::time::timeout(within, open).await {
            Ok(Ok(r)) => Ok((tx, r.into_inner())),
            Ok(Err(status)) => Err(failure(status)),
            Err(_) => Err(failure(tonic::Status::deadline_exceeded("no answer to the first keep-alive"))),
        }
    }

    /// Revokes `lease` (its keys go with it), waiting at most 2 s.
    async fn revoke_lease(&self, lease: i64) {
        let revoke = self.call("lease revoke", false, |ch| async move {
            LeaseClient::new(ch).lease_revoke(pb::LeaseRevokeRequest { id: lease }).await
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), revoke).await;
    }

    /// The channel of the current member.
    fn channel(&self) -> Channel {
        let i = self.current.load(Ordering::Relaxed) % self.members.len().max(1);
        self.members
            .get(i)
            .map_or_else(|| Endpoint::from_static("http://127.0.0.1:1").connect_lazy(), |m| m.channel.clone())
    }

    /// The URL of the current member.
    fn endpoint(&self) -> String {
        let i = self.current.load(Ordering::Relaxed) % self.members.len().max(1);
        self.members.get(i).map(|m| m.url.clone()).unwrap_or_default()
    }

    /// Runs `f` on the current member; when it is unreachable, moves on to the next one and,
    /// if `retry`, runs `f` there too, once per member.
    async fn call<T, F, Fut>(&self, op: &'static str, retry: bool, f: F) -> Result<T, Failure>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_at(op, retry, f).await.map(|(t, _)| t)
    }

    /// [`call`](Self::call), also returning the URL of the member that answered.
    async fn call_at<T, F, Fut>(&self, op: &'static str, retry: bool, f: F) -> Result<(T, &str), Failure>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.members.len();
        let mut i = self.current.load(Ordering::Relaxed) % n.max(1);
        let attempts = if retry { n } else { 1 };
        let mut failure = None;
        for _ in 0..attempts {
            let Some(member) = self.members.get(i) else { break };
            match f(member.channel.clone()).await {
                Ok(response) => return Ok((response.into_inner(), &member.url)),
                Err(status) => {
                    // tonic reports its own request timeout as CANCELLED
                    let unreachable =
                        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled);
                    let next = (i + 1) % n;
                    failure = Some(Failure { op, endpoint: member.url.clone(), status });
                    if !unreachable {
                        break;
                    }
                    if n > 1 {
                        let _ = self.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
                        tracing::warn!(op, from = %member.url, to = %self.members[next].url, "etcd endpoint unreachable, failing over");
                    }
                    i = next;
                }
            }
        }
        Err(failure.unwrap_or_else(|| Failure {
            op,
            endpoint: String::new(),
            status: tonic::Status::unavailable("no etcd endpoints"),
        }))
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Failure> {
        self.call("range", true, |ch| {
            let req = req.clone();
            async move { kv_client(ch).range(req).await }
        })
        .await
    }

    async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, Failure> {
        self.call("txn", false, |ch| {
            let req = req.clone();
            async move { kv_client(ch).txn(req).await }
        })
        .await
    }

    /// Unconditional puts as one transaction; the revision it made.
    async fn put_txn(&self, ops: Vec<pb::RequestOp>) -> Result<Revision, StoreError> {
        let resp = self.txn(pb::TxnRequest { compare: Vec::new(), success: ops, failure: Vec::new() }).await?;
        header_revision(resp.header.as_ref())
    }

    /// One attempt at a consistent paged listing; `Ok(None)` when its snapshot got compacted.
    async fn list_once(&self, start: Bytes, end: Bytes) -> Result<Option<Listing>, StoreError> {
        let mut items = Vec::new();
        let mut revision = 0;
        let mut from = start;
        loop {
            let req = pb::RangeRequest {
                key: from,
                range_end: end.clone(),
                limit: LIST_PAGE,
                revision,
                ..Default::default()
            };
            let resp = match self.range(req).await {
                Ok(resp) => resp,
                Err(f) if revision != 0 && f.status.code() == Code::OutOfRange => return Ok(None),
                Err(f) => return Err(f.into()),
            };
            if revision == 0 {
                revision = to_i64(header_revision(resp.header.as_ref())?);
            }
            let Some(last) = resp.kvs.last().map(|kv| kv.key.clone()) else { break };
            for kv in resp.kvs {
                items.push(self.keys.key_value(kv)?);
            }
            if !resp.more {
                break;
            }
            let mut next = last.to_vec();
            next.push(0);
            from = Bytes::from(next);
        }
        Ok(Some(Listing { items, revision: to_revision(revision) }))
    }
}

fn kv_client(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE)
}

fn compare(key: &Bytes, pre: Precondition) -> Option<pb::Compare> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let (target, value) = match pre {
        Precondition::None => return None,
        Precondition::Absent => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        Precondition::Revision(r) => (CompareTarget::Mod, TargetUnion::ModRevision(to_i64(r))),
    };
    Some(pb::Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.clone(),
        target_union: Some(value),
    })
}

/// A transaction: `op` if `cmp` holds, otherwise read the key (for the conflict's revision).
fn guarded(key: &Bytes, cmp: pb::Compare, op: pb::request_op::Request) -> pb::TxnRequest {
    let read = pb::RangeRequest { key: key.clone(), keys_only: true, ..Default::default() };
    pb::TxnRequest {
        compare: vec![cmp],
        success: vec![pb::RequestOp { request: Some(op) }],
        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(read)) }],
    }
}

/// The conflict a failed guarded transaction reports.
fn conflict(key: &str, pre: Precondition, resp: &pb::TxnResponse) -> StoreError {
    let actual = resp
        .responses
        .first()
        .and_then(|r| match &r.response {
            Some(pb::response_op::Response::ResponseRange(range)) => range.kvs.first(),
            _ => None,
        })
        .map_or(Revision::ZERO, |kv| to_revision(kv.mod_revision));
    StoreError::Conflict { key: key.to_owned(), expected: pre, actual }
}

/// etcd's own request size limit, reported as the store's.
fn too_large(f: Failure, key: &str, len: usize) -> StoreError {
    if f.status.code() == Code::InvalidArgument && f.status.message().contains("too large") {
        StoreError::ValueTooLarge { key: key.to_owned(), len }
    } else {
        f.into()
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            let resp = self.range(pb::RangeRequest { key: self.keys.full(key), ..Default::default() }).await?;
            resp.kvs.into_iter().next().map(|kv| self.keys.key_value(kv)).transpose()
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes, pre: Precondition) -> BoxFuture<'a, Result<Revision, StoreError>> {
        Box::pin(async move {
            validate_write(key, value.len())?;
            let len = value.len();
            let full = self.keys.full(key);
            let put = pb::PutRequest { key: full.clone(), value, ..Default::default() };
            let Some(cmp) = compare(&full, pre) else {
                let resp = self
                    .call("put", false, |ch| {
                        let put = put.clone();
                        async move { kv_client(ch).put(put).await }
                    })
                    .await
                    .map_err(|f| too_large(f, key, len))?;
                return header_revision(resp.header.as_ref());
            };
            let resp = self
                .txn(guarded(&full, cmp, pb::request_op::Request::RequestPut(put)))
                .await
                .map_err(|f| too_large(f, key, len))?;
            if !resp.succeeded {
                return Err(conflict(key, pre, &resp));
            }
            header_revision(resp.header.as_ref())
        })
    }

    fn put_all(&self, entries: Vec<(String, Bytes)>) -> BoxFuture<'_, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            validate_writes(&entries)?;
            // one transaction per MAX_BATCH_KEYS keys and TXN_BYTES bytes; etcd refuses a key twice
            // in one transaction, so a repeated key starts the next one
            let mut last = None;
            let (mut ops, mut bytes, mut keys) = (Vec::new(), 0usize, std::collections::HashSet::new());
            for (key, value) in entries {
                let size = key.len() + value.len();
                if !ops.is_empty() && (ops.len() == MAX_BATCH_KEYS || bytes + size > TXN_BYTES || keys.contains(&key)) {
                    last = Some(self.put_txn(std::mem::take(&mut ops)).await?);
                    (bytes, keys) = (0, std::collections::HashSet::new());
                }
                let put = pb::PutRequest { key: self.keys.full(&key), value, ..Default::default() };
                ops.push(pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put)) });
                bytes += size;
                keys.insert(key);
            }
            if !ops.is_empty() {
                last = Some(self.put_txn(ops).await?);
            }
            Ok(last)
        })
    }

    fn delete<'a>(&'a self, key: &'a str, pre: Precondition) -> BoxFuture<'a, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.keys.full(key);
            let del = pb::DeleteRangeRequest { key: full.clone(), ..Default::default() };
            let Some(cmp) = compare(&full, pre) else {
                let resp = self
                    .call("delete", false, |ch| {
                        let del = del.clone();
                        async move { kv_client(ch).delete_range(del).await }
                    })
                    .await?;
                return if resp.deleted == 0 { Ok(None) } else { header_revision(resp.header.as_ref()).map(Some) };
            };
            let resp = self.txn(guarded(&full, cmp, pb::request_op::Request::RequestDeleteRange(del))).await?;
            if !resp.succeeded {
                return Err(conflict(key, pre, &resp));
            }
            let deleted = resp.responses.first().is_some_and(
                |r| matches!(&r.response, Some(pb::response_op::Response::ResponseDeleteRange(d)) if d.deleted > 0),
            );
            if deleted { header_revision(resp.header.as_ref()).map(Some) } else { Ok(None) }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            let start = self.keys.full(prefix);
            let end = prefix_end(&start);
            for _ in 0..LIST_ATTEMPTS {
                if let Some(listing) = self.list_once(start.clone(), end.clone()).await? {
                    return Ok(listing);
                }
            }
            Err(StoreError::Unavailable(Box::new(EtcdError::Malformed(
                "listing compacted between pages on every attempt",
            ))))
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>> {
        Box::pin(async move {
            let key = self.keys.full(prefix);
            let create = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    range_end: prefix_end(&key),
                    key,
                    start_revision: to_i64(Revision(after.0.saturating_add(1))),
                    ..Default::default()
                })),
            };
            let (responses, endpoint) = self
                .call_at("watch", true, |ch| {
                    // The request stream stays open: closing it would ask etcd to end the watch.
                    let requests = stream::once(future::ready(create.clone())).chain(stream::pending());
                    let mut request = tonic::Request::new(requests);
                    // a member cut off from its cluster's leader ends the watch (etcd's
                    // require-leader), instead of silently serving no more events
                    request.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
                    async move { WatchClient::new(ch).max_decoding_message_size(MAX_RESPONSE).watch(request).await }
                })
                .await?;
            let mut watcher = Watcher {
                responses,
                ready: VecDeque::new(),
                keys: self.keys.clone(),
                cursor: after,
                endpoint: endpoint.to_owned(),
                done: false,
            };
            // etcd confirms the watch (or refuses it) first.
            if let Some(Err(e)) = watcher.receive().await {
                return Err(e);
            }
            let events = stream::unfold(watcher, |mut w| async move { w.next().await.map(|item| (item, w)) });
            let events: BoxStream<'static, _> = Box::pin(events);
            Ok(events)
        })
    }
}

mod config;
mod election;
mod session;
mod watcher;
use config::tls_config;
pub use config::{EtcdConfig, EtcdError, EtcdTls};
pub use election::{DEFAULT_LEASE_TTL, Election, ElectionSettings, MIN_LEASE_TTL};
pub use session::Session;
use watcher::Watcher;

#[cfg(test)]
mod tests;
