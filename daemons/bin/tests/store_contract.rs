//! The store contract suite against the embedded store (a temp file) and a real etcd (the
//! Debian `etcd-server` package, started here on free ports), plus what each adds: the embedded
//! store's persistence across reopen, etcd's compaction and key prefixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// The real etcd of the tests, with this file's store helpers.
struct Etcd(opni_metrics_tests::etcd::Etcd);

impl Etcd {
    async fn start() -> Self {
        Self(opni_metrics_tests::etcd::Etcd::start().await)
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig { endpoints: vec![self.0.client_url().to_owned()], prefix: prefix.to_owned(), tls: None }
    }

    fn store(&self, prefix: &str) -> Arc<EtcdStore> {
        Arc::new(EtcdStore::new(&self.config(prefix)).unwrap())
    }

    fn client_url(&self) -> &str {
        self.0.client_url()
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
    let cfg = EtcdConfig { endpoints: vec![dead, etcd.client_url().to_owned()], ..etcd.config("/opni-metrics/") };

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

/// Records when an election's leadership changed, as seen by a watcher.
fn record(mut rx: tokio::sync::watch::Receiver<bool>) -> Arc<std::sync::Mutex<Vec<(bool, tokio::time::Instant)>>> {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let v = *rx.borrow_and_update();
            l.lock().unwrap().push((v, tokio::time::Instant::now()));
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_elects_one_leader_hands_over_on_stop_and_a_partitioned_leader_stops_first() {
    use opni_metrics_store::etcd::{Election, ElectionSettings};
    let etcd = Etcd::start().await;
    // candidate "a" reaches etcd through a proxy that can be cut; "b" directly
    let target: std::net::SocketAddr = etcd.client_url().trim_start_matches("http://").parse().unwrap();
    let proxy = opni_metrics_tests::proxy::Proxy::start(target).await;
    let via_proxy =
        EtcdConfig { endpoints: vec![format!("http://{}", proxy.addr())], prefix: "/election-test/".into(), tls: None };
    let settings = |id: &str| {
        let mut s = ElectionSettings::new("uninstall", id);
        s.ttl = Duration::from_secs(3);
        s.margin = Duration::from_secs(1);
        s
    };
    let a = Election::new(Arc::new(EtcdStore::new(&via_proxy).unwrap()), settings("a")).unwrap();
    let (a_leads, a_log) = (a.leading(), record(a.leading()));
    let (stop_a, a_stopped) = tokio::sync::oneshot::channel::<()>();
    let a_task = tokio::spawn(a.run(async move {
        let _ = a_stopped.await;
    }));
    eventually(Duration::from_secs(30), "a leads", || async {
        if *a_leads.borrow() { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();
    let b = Election::new(etcd.store("/election-test/"), settings("b")).unwrap();
    let (b_leads, b_log) = (b.leading(), record(b.leading()));
    let (stop_b, b_stopped) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn(b.run(async move {
        let _ = b_stopped.await;
    }));
    // one leader: b waits while a renews (several lease lifetimes of renewals)
    let key = etcd.store("/election-test/").get("elections/uninstall").await.unwrap().unwrap();
    assert_eq!(key.value, Bytes::from_static(b"a"));
    assert!(*a_leads.borrow() && !*b_leads.borrow(), "exactly one leader");
    let (mut a_watch, mut b_watch) = (a_leads.clone(), b_leads.clone());
    let changed = tokio::time::timeout(Duration::from_secs(7), async {
        tokio::select! {
            _ = a_watch.wait_for(|leads| !*leads) => "a stopped leading",
            _ = b_watch.wait_for(|leads| *leads) => "b started leading",
        }
    })
    .await;
    assert!(changed.is_err(), "exactly one leader throughout, but {changed:?}");

    // a is cut off from etcd: it stops leading before b starts
    proxy.block(true);
    eventually(Duration::from_secs(30), "b leads", || async {
        if *b_leads.borrow() { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();
    let a_stopped_at = a_log.lock().unwrap().iter().find(|(v, _)| !v).map(|(_, t)| *t).expect("a stepped down");
    let b_started_at = b_log.lock().unwrap().iter().find(|(v, _)| *v).map(|(_, t)| *t).unwrap();
    assert!(a_stopped_at < b_started_at, "a stopped {:?} before b started", b_started_at - a_stopped_at);
    eprintln!("partition: a stopped leading {:?} before b started", b_started_at - a_stopped_at);

    // the route comes back: a campaigns again and waits; b stops (revoking): a takes over at once
    proxy.block(false);
    let mut a_watch = a_leads.clone();
    let took_over = tokio::time::timeout(Duration::from_secs(1), a_watch.wait_for(|leads| *leads)).await;
    assert!(took_over.is_err(), "a waits while b leads");
    let handover = tokio::time::Instant::now();
    let _ = stop_b.send(());
    b_task.await.unwrap();
    eventually(Duration::from_secs(30), "a leads again", || async {
        if *a_leads.borrow() { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();
    eprintln!("handover after a stop: {:?}", handover.elapsed());
    let _ = stop_a.send(());
    a_task.await.unwrap();
    assert!(!*a_leads.borrow());
}
