//! The store contract suite against the embedded store (a temp file) and a real etcd (the
//! Debian `etcd-server` package, started here on free ports), plus what each adds: the embedded
//! store's persistence across reopen, etcd's compaction and key prefixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opni_metrics_core::store::{Precondition, Store, StoreError, WatchEvent, contract};
use opni_metrics_store::StoreConfig;
use opni_metrics_store::embedded::{EmbeddedConfig, EmbeddedStore};
use opni_metrics_store::etcd::{EtcdConfig, EtcdStore};
use opni_metrics_tests::http::eventually;
use opni_metrics_tests::prometheus::free_port;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // a missing parent directory is created
    let cfg = StoreConfig::Embedded(EmbeddedConfig { path: dir.path().join("data/nested/store.redb") });
    let store = cfg.build().unwrap();
    contract::run_all(store.as_ref(), "contract/").await;
    // the suite is repeatable on the same store, as on a shared server
    contract::run_all(store.as_ref(), "again/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (r_a, r_b, r_del) = {
        let store = EmbeddedStore::open(&path).unwrap();
        let r_a = store.put("p/a", b("1"), Precondition::Absent).await.unwrap();
        let r_b = store.put("p/b", b("2"), Precondition::None).await.unwrap();
        store.put("p/gone", b("x"), Precondition::None).await.unwrap();
        let r_del = store.delete("p/gone", Precondition::None).await.unwrap().unwrap();
        (r_a, r_b, r_del)
    }; // closed: the file lock is released

    let store = EmbeddedStore::open(&path).unwrap();
    let listing = store.list("p/").await.unwrap();
    assert_eq!(listing.revision, r_del, "the global revision persists");
    let got: Vec<_> = listing.items.iter().map(|kv| (kv.key.as_str(), kv.value.clone(), kv.revision)).collect();
    assert_eq!(got, vec![("p/a", b("1"), r_a), ("p/b", b("2"), r_b)], "data and per-key revisions persist");
    assert!(matches!(
        store.put("p/a", b("x"), Precondition::Absent).await,
        Err(StoreError::Conflict { actual, .. }) if actual == r_a
    ));

    // the history persists too: a watch from before the restart replays it, then continues
    // with the writes after the restart, numbered on from the persisted revision
    let mut from_before = store.watch("p/", r_a).await.unwrap();
    let mut from_listing = store.watch("p/", listing.revision).await.unwrap();
    let r_next = store.put("p/a", b("3"), Precondition::Revision(r_a)).await.unwrap();
    assert_eq!(r_next, r_del.next());
    let replayed: Vec<_> = from_before.by_ref().take(4).try_collect().await.unwrap();
    let revisions: Vec<_> = replayed.iter().map(WatchEvent::revision).collect();
    assert_eq!(revisions, vec![r_b, r_b.next(), r_del, r_next]);
    assert_eq!(replayed[2], WatchEvent::Delete { key: "p/gone".into(), revision: r_del });
    let e = from_listing.next().await.unwrap().unwrap();
    assert!(matches!(&e, WatchEvent::Put(kv) if kv.key == "p/a" && kv.value == b("3") && kv.revision == r_next));
}

/// A real single-member etcd on free loopback ports with its own data directory, killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Self {
        let bin = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
            .expect("etcd is not installed; install it with: apt-get install -y etcd-server");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            // values up to the store's 1.5 MiB limit plus the request around them
            .arg("--max-request-bytes=2097152")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = Self { child, client_url, dir };
        // ready = a linearizable read answers (needs a leader)
        let store = etcd.store("/ready-probe/");
        let ready =
            eventually(Duration::from_secs(30), "etcd answers", || {
                let store = Arc::clone(&store);
                async move {
                    store.list("").await.map(|_| ()).map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
                }
            })
            .await;
        if let Err(e) = ready {
            let exited = etcd.child.try_wait().ok().flatten();
            panic!("{e}; etcd exit status {exited:?}; log:\n{}", etcd.log_tail());
        }
        etcd
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig { endpoints: vec![self.client_url.clone()], prefix: prefix.to_owned(), tls: None }
    }

    fn store(&self, prefix: &str) -> Arc<EtcdStore> {
        Arc::new(EtcdStore::new(&self.config(prefix)).unwrap())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_passes_the_contract() {
    let etcd = Etcd::start().await;
    let store = StoreConfig::Etcd(etcd.config("/opni-metrics/")).build().unwrap();
    contract::run_all(store.as_ref(), "contract/").await;
    contract::run_all(store.as_ref(), "again/").await;

    // keys live under the prefix, stripped on the way out; other prefixes see nothing of them
    let listing = store.list("contract/put-get/").await.unwrap();
    assert_eq!(
        listing.items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["contract/put-get/a", "contract/put-get/big"]
    );
    let other = etcd.store("/someone-else/");
    assert!(other.list("").await.unwrap().items.is_empty());
    assert_eq!(other.get("contract/put-get/a").await.unwrap(), None);
    other.put("contract/put-get/a", b("theirs"), Precondition::Absent).await.unwrap();
    assert_eq!(store.get("contract/put-get/a").await.unwrap().unwrap().value, b("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_listing_spans_pages_at_one_revision() {
    let etcd = Etcd::start().await;
    let store = etcd.store("/opni-metrics/");
    let n = 600; // more than two pages
    futures::stream::iter(0..n)
        .map(|i| {
            let store = Arc::clone(&store);
            async move { store.put(&format!("many/{i:04}"), b(&i.to_string()), Precondition::None).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let listing = store.list("many/").await.unwrap();
    let keys: Vec<_> = listing.items.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<_> = (0..n).map(|i| format!("many/{i:04}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(listing.revision, listing.items.iter().map(|kv| kv.revision).max().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_is_reported() {
    let etcd = Etcd::start().await;
    let store = etcd.store("/opni-metrics/");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(store.put("k", b(&i.to_string()), Precondition::None).await.unwrap());
    }
    let mut running = store.watch("k", revs[4]).await.unwrap();
    store.compact(revs[2]).await.unwrap();

    // after revs[0] needs revs[1], compacted away: refused at once or as the first item
    let compacted = match store.watch("k", revs[0]).await {
        Err(e) => e,
        Ok(mut w) => w.next().await.expect("an item").expect_err("compacted"),
    };
    assert!(
        matches!(compacted, StoreError::Compacted { requested, compacted } if requested == revs[0] && compacted == revs[1]),
        "{compacted:?}"
    );

    // after revs[1] needs revs[2], the oldest kept
    let mut w = store.watch("k", revs[1]).await.unwrap();
    let replayed: Vec<_> = w.by_ref().take(3).map(|e| e.unwrap().revision()).collect().await;
    assert_eq!(replayed, &revs[2..]);

    // a running watch is unaffected by compacting what it has already seen
    let r = store.put("k", b("5"), Precondition::None).await.unwrap();
    assert_eq!(running.next().await.unwrap().unwrap().revision(), r);
    assert_eq!(w.next().await.unwrap().unwrap().revision(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_unavailable() {
    // nothing listens there: a typed error, not a hang or a panic
    let port = free_port();
    let cfg = EtcdConfig { endpoints: vec![format!("127.0.0.1:{port}")], prefix: "/x/".into(), tls: None };
    let store = EtcdStore::new(&cfg).unwrap();
    let err = store.get("k").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(chain.contains(&port.to_string()), "the error names the endpoint: {chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fails_over_to_a_live_endpoint() {
    let etcd = Etcd::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let cfg = EtcdConfig { endpoints: vec![dead, etcd.client_url.clone()], ..etcd.config("/opni-metrics/") };

    // reads are retried on the next endpoint at once
    let store = EtcdStore::new(&cfg).unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    store.put("k", b("1"), Precondition::Absent).await.unwrap();

    // a write is not retried (it may have been applied), but the next call goes elsewhere
    let store = EtcdStore::new(&cfg).unwrap();
    assert!(matches!(store.put("k", b("2"), Precondition::None).await, Err(StoreError::Unavailable(_))));
    store.put("k", b("2"), Precondition::None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b("2"));
}
