//! The contract every [`Store`] implementation must pass.
//!
//! Run it from a test of the implementation with any executor:
//! ```
//! # futures::executor::block_on(async {
//! let store = opni_metrics_core::store::MemoryStore::default();
//! opni_metrics_core::store::contract::run_all(&store, "contract-doc/").await;
//! # });
//! ```
//! Every check works under its own key prefix beneath `namespace`, so one shared server (such
//! as a real etcd) can run the suite repeatedly. Checks panic with a message on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use bytes::Bytes;
use futures::StreamExt;

use super::{Precondition, Store, StoreError, WatchEvent};
use crate::id::Revision;

/// Runs every check.
pub async fn run_all(store: &dyn Store, namespace: &str) {
    get_absent(store, &format!("{namespace}get-absent/")).await;
    put_get(store, &format!("{namespace}put-get/")).await;
    compare_and_put(store, &format!("{namespace}cas/")).await;
    delete(store, &format!("{namespace}delete/")).await;
    list_prefix(store, &format!("{namespace}list/")).await;
    watch_from_listing(store, &format!("{namespace}watch/")).await;
    watch_replays_history(store, &format!("{namespace}replay/")).await;
    concurrent_increments(store, &format!("{namespace}incr/")).await;
    put_all(store, &format!("{namespace}put-all/")).await;
    invalid_input(store).await;
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A missing key reads as `None`.
pub async fn get_absent(store: &dyn Store, ns: &str) {
    assert_eq!(store.get(&format!("{ns}missing")).await.unwrap(), None);
}

/// A write is read back with its revision; later writes get larger revisions.
pub async fn put_get(store: &dyn Store, ns: &str) {
    let k = format!("{ns}a");
    let r1 = store.put(&k, b("1"), Precondition::None).await.unwrap();
    let kv = store.get(&k).await.unwrap().expect("written key must be present");
    assert_eq!((kv.value, kv.revision), (b("1"), r1));
    let r2 = store.put(&k, b("2"), Precondition::None).await.unwrap();
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b("2"));
    let big = Bytes::from(vec![7u8; 1024 * 1024]);
    store.put(&format!("{ns}big"), big.clone(), Precondition::None).await.unwrap();
    assert_eq!(store.get(&format!("{ns}big")).await.unwrap().unwrap().value, big, "1 MiB values round-trip");
}

/// Preconditions: `Absent` and `Revision` are enforced and a conflict names the actual revision.
pub async fn compare_and_put(store: &dyn Store, ns: &str) {
    let k = format!("{ns}k");
    let r1 = store.put(&k, b("1"), Precondition::Absent).await.unwrap();
    match store.put(&k, b("x"), Precondition::Absent).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, r1),
        other => panic!("put Absent on a present key: {other:?}"),
    }
    let r2 = store.put(&k, b("2"), Precondition::Revision(r1)).await.unwrap();
    match store.put(&k, b("y"), Precondition::Revision(r1)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, r2),
        other => panic!("put with a stale revision: {other:?}"),
    }
    match store.put(&format!("{ns}none"), b("z"), Precondition::Revision(r2)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, Revision::ZERO),
        other => panic!("put with a revision on an absent key: {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b("2"), "failed writes change nothing");
}

/// Deletes honour preconditions; deleting an absent key is `None`.
pub async fn delete(store: &dyn Store, ns: &str) {
    let k = format!("{ns}k");
    assert_eq!(store.delete(&k, Precondition::None).await.unwrap(), None);
    let r1 = store.put(&k, b("1"), Precondition::None).await.unwrap();
    assert!(matches!(
        store.delete(&k, Precondition::Revision(Revision(r1.0 + 1000))).await,
        Err(StoreError::Conflict { .. })
    ));
    let d = store.delete(&k, Precondition::Revision(r1)).await.unwrap().expect("present key deleted");
    assert!(d > r1);
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(matches!(store.delete(&k, Precondition::Revision(r1)).await, Err(StoreError::Conflict { .. })));
}

/// Listing returns exactly the keys under the prefix, sorted, at a revision covering them.
pub async fn list_prefix(store: &dyn Store, ns: &str) {
    for k in ["b", "a", "c/d"] {
        store.put(&format!("{ns}{k}"), b(k), Precondition::None).await.unwrap();
    }
    store.put(ns, b("exact"), Precondition::None).await.unwrap();
    store.put(&format!("{}x", ns.trim_end_matches('/')), b("sibling"), Precondition::None).await.unwrap();
    let l = store.list(ns).await.unwrap();
    let keys: Vec<_> = l.items.iter().map(|kv| kv.key.strip_prefix(ns).unwrap_or("?").to_owned()).collect();
    assert_eq!(keys, vec!["", "a", "b", "c/d"]);
    assert!(l.items.iter().all(|kv| kv.revision <= l.revision));
    assert!(store.list(&format!("{ns}nothing/")).await.unwrap().items.is_empty());
}

/// `list` then `watch(prefix, listing.revision)` sees every later change, in order, filtered.
pub async fn watch_from_listing(store: &dyn Store, ns: &str) {
    store.put(&format!("{ns}old"), b("0"), Precondition::None).await.unwrap();
    let listing = store.list(ns).await.unwrap();
    let mut w = store.watch(ns, listing.revision).await.unwrap();
    let r1 = store.put(&format!("{ns}a"), b("1"), Precondition::None).await.unwrap();
    store.put(&format!("other-{ns}"), b("x"), Precondition::None).await.unwrap();
    let r2 = store.delete(&format!("{ns}old"), Precondition::None).await.unwrap().unwrap();
    let r3 = store.put(&format!("{ns}a"), b("2"), Precondition::Revision(r1)).await.unwrap();
    let e1 = w.next().await.unwrap().unwrap();
    assert!(matches!(&e1, WatchEvent::Put(kv) if kv.value == b("1") && kv.revision == r1), "{e1:?}");
    let e2 = w.next().await.unwrap().unwrap();
    assert_eq!(e2, WatchEvent::Delete { key: format!("{ns}old"), revision: r2 });
    let e3 = w.next().await.unwrap().unwrap();
    assert_eq!(e3.revision(), r3);
}

/// A watch from an older revision replays the changes after it first.
pub async fn watch_replays_history(store: &dyn Store, ns: &str) {
    let r0 = store.put(&format!("{ns}k"), b("0"), Precondition::None).await.unwrap();
    let r1 = store.put(&format!("{ns}k"), b("1"), Precondition::None).await.unwrap();
    let r2 = store.put(&format!("{ns}k"), b("2"), Precondition::None).await.unwrap();
    let mut w = store.watch(ns, r0).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), r1);
    assert_eq!(w.next().await.unwrap().unwrap().revision(), r2);
}

/// Compare-and-put loops from many tasks lose no increment.
pub async fn concurrent_increments(store: &dyn Store, ns: &str) {
    let k = format!("{ns}counter");
    store.put(&k, b("0"), Precondition::None).await.unwrap();
    let tasks = (0..8).map(|_| {
        let k = k.clone();
        async move {
            for _ in 0..10 {
                loop {
                    let kv = store.get(&k).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store.put(&k, b(&(n + 1).to_string()), Precondition::Revision(kv.revision)).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("increment: {e}"),
                    }
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b("80"));
}

/// `put_all` writes a batch larger than one backend write, a repeated key ending with its last
/// value, and returns the last revision; a watch sees every write of a batch; an empty batch
/// writes nothing; a batch with one bad entry writes none of it.
pub async fn put_all(store: &dyn Store, ns: &str) {
    let before = store.list(ns).await.unwrap().revision;
    let n = super::MAX_BATCH_KEYS * 2 + 3;
    let mut entries: Vec<(String, Bytes)> = (0..n).map(|i| (format!("{ns}k{i:04}"), b(&i.to_string()))).collect();
    entries.insert(5, (format!("{ns}k0007"), b("first")));
    let last = store.put_all(entries).await.unwrap().expect("a revision for a non-empty batch");
    let listing = store.list(ns).await.unwrap();
    assert_eq!(listing.items.len(), n);
    for (i, kv) in listing.items.iter().enumerate() {
        assert_eq!((kv.key.as_str(), &kv.value), (format!("{ns}k{i:04}").as_str(), &b(&i.to_string())));
        assert!(kv.revision > before && kv.revision <= last, "{} at {}", kv.key, kv.revision);
    }
    // a small batch, so that a store keeping little history replays it whole
    let mut w = store.watch(ns, listing.revision).await.unwrap();
    let small: Vec<(String, Bytes)> = (0..3).map(|i| (format!("{ns}w{i}"), b("w"))).collect();
    let last = store.put_all(small).await.unwrap().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Put(kv) => {
                assert!(kv.revision > listing.revision && kv.revision <= last);
                seen.push(kv.key);
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(seen, [format!("{ns}w0"), format!("{ns}w1"), format!("{ns}w2")]);
    assert_eq!(store.put_all(Vec::new()).await.unwrap(), None);
    let bad = vec![(format!("{ns}fine"), b("1")), (format!("{ns}bad\0key"), b("2"))];
    assert!(matches!(store.put_all(bad).await, Err(StoreError::InvalidKey { .. })));
    assert_eq!(store.get(&format!("{ns}fine")).await.unwrap(), None, "nothing of a refused batch is written");
}

/// Empty keys, control characters and oversize values are refused with typed errors.
pub async fn invalid_input(store: &dyn Store) {
    assert!(matches!(store.put("", b("x"), Precondition::None).await, Err(StoreError::InvalidKey { .. })));
    assert!(matches!(store.get("a\0b").await, Err(StoreError::InvalidKey { .. })));
    let huge = Bytes::from(vec![0u8; super::MAX_VALUE_LEN + 1]);
    assert!(matches!(
        store.put("contract-huge", huge, Precondition::None).await,
        Err(StoreError::ValueTooLarge { .. })
    ));
}
