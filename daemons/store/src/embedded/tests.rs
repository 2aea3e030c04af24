#![allow(clippy::unwrap_used)]
use futures::StreamExt;

use super::*;

#[tokio::test]
async fn history_is_bounded_by_events_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path().join("s.redb"), History { events: 3, bytes: 1 << 20 }).unwrap();
    for i in 0..6u8 {
        store.put("k", Bytes::from(vec![i]), Precondition::None).await.unwrap();
    }
    // revisions 4..=6 retained: watching after 3 works, after 2 is compacted
    assert!(matches!(store.watch("k", Revision(2)).await, Err(StoreError::Compacted { .. })));
    let mut w = store.watch("k", Revision(3)).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), Revision(4));

    let big = Bytes::from(vec![0u8; 600 << 10]);
    store.put("big", big.clone(), Precondition::None).await.unwrap(); // 7
    let r = store.put("big", big, Precondition::None).await.unwrap(); // 8: 1.2 MiB > budget
    assert!(matches!(store.watch("", Revision(r.0 - 2)).await, Err(StoreError::Compacted { .. })));
    assert!(store.watch("", Revision(r.0 - 1)).await.is_ok(), "the newest event is always kept");
}

#[tokio::test]
async fn a_watcher_left_behind_gets_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path().join("s.redb"), History { events: 2, bytes: 1 << 20 }).unwrap();
    let mut w = store.watch("k", Revision::ZERO).await.unwrap();
    for i in 0..5u8 {
        store.put("k", Bytes::from(vec![i]), Precondition::None).await.unwrap();
    }
    assert!(matches!(w.next().await, Some(Err(StoreError::Compacted { .. }))));
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn dropping_the_store_ends_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
    let mut w = store.watch("", Revision::ZERO).await.unwrap();
    drop(store);
    assert!(matches!(w.next().await, Some(Err(StoreError::Unavailable(_)))));
    assert!(w.next().await.is_none());
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = EmbeddedStore::open(file.join("sub/s.redb")).unwrap_err();
    assert!(matches!(err, EmbeddedError::CreateDir { .. }));
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");

    let err = EmbeddedStore::open(&file).unwrap_err();
    assert!(matches!(err, EmbeddedError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

#[test]
fn a_file_can_be_open_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _first = EmbeddedStore::open(&path).unwrap();
    assert!(matches!(EmbeddedStore::open(&path), Err(EmbeddedError::Open { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_waits_for_work_whose_future_was_dropped() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    // polled once: the write is handed to the blocking pool; then its future is dropped
    let started = store.put("k", Bytes::from_static(b"v"), Precondition::None).now_or_never();
    assert!(started.is_none(), "the write runs on the blocking pool");
    store.quiesce().await;
    drop(store);
    // the file is free, and the write whose future was dropped is done, not half done
    let again = EmbeddedStore::open(&path).unwrap();
    assert_eq!(again.get("k").await.unwrap().map(|kv| kv.value), Some(Bytes::from_static(b"v")));
}
