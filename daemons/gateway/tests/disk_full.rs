//! The embedded store on a really full file system (a small tmpfs mounted for the test): a
//! write that does not fit fails cleanly, the store says it cannot write and refuses work
//! until it has recovered, and once space is freed it reopens the file by itself and takes
//! writes again, with nothing committed lost and its watchers carrying on.
//!
//! The gateway's `/readyz` follows: unready while its store cannot write, ready again after.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`), which CI has; elsewhere the tests say so and
//! pass without running.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with the failure

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opni_metrics_core::store::{MAX_VALUE_LEN, Precondition, Store, StoreError, StoreHealth, WatchEvent};
use opni_metrics_gateway::store::embedded::EmbeddedStore;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_tests::disk::{Tmpfs, fill};

/// Bound on every wait, so a broken recovery fails the test instead of hanging it.
const T: Duration = Duration::from_secs(60);

fn value(tag: u8) -> Bytes {
    Bytes::from(vec![tag; MAX_VALUE_LEN / 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_unwritable_until_space_is_freed() {
    let Some(fs) = Tmpfs::mount("24m") else { return };
    let store =
        EmbeddedStore::open(fs.path().join("store.redb")).unwrap().with_recovery_interval(Duration::from_millis(50));
    let mut health = store.health_changes();
    let r1 = store.put("clusters/a", Bytes::from_static(b"alpha"), Precondition::Absent).await.unwrap();
    let mut watch = store.watch("clusters/", r1).await.unwrap();
    let filler = fill(fs.path());

    // writes fit in the file's free pages for a while; then one needs the file to grow and fails
    let mut last_ok = r1;
    let mut failure = None;
    for i in 0..64 {
        match store.put(&format!("big/{i}"), value(1), Precondition::None).await {
            Ok(r) => last_ok = r,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("64 writes of 768 KiB fit in a full 24 MiB file system");
    assert!(matches!(failure, StoreError::Unavailable(_)), "{failure:?}");
    assert!(!store.health().is_writable(), "a failed write left the store writable: {:?}", store.health());

    // while the disk stays full, recovery attempts fail and the store refuses work in words
    for _ in 0..3 {
        tokio::time::timeout(T, health.changed()).await.unwrap().unwrap();
        let StoreHealth::Unwritable(why) = store.health() else { panic!("recovered on a full disk") };
        assert!(why.contains("store.redb"), "{why}");
    }
    let refused = store.get("clusters/a").await.unwrap_err();
    let text = opni_metrics_core::error_chain(&refused);
    assert!(text.contains("cannot be used until it is recovered"), "{text}");
    assert!(store.put("clusters/b", Bytes::from_static(b"beta"), Precondition::Absent).await.is_err());

    // space freed: the store reopens the file by itself and takes writes again
    std::fs::remove_file(&filler).unwrap();
    tokio::time::timeout(T, health.wait_for(StoreHealth::is_writable)).await.unwrap().unwrap();
    let r = store.put("clusters/b", Bytes::from_static(b"beta"), Precondition::Absent).await.unwrap();
    assert_eq!(r.0, last_ok.0 + 1, "the revision after recovery skipped or repeated one");
    assert_eq!(store.get("clusters/a").await.unwrap().unwrap().value, Bytes::from_static(b"alpha"));
    let listing = store.list("big/").await.unwrap();
    assert!(listing.items.iter().all(|kv| kv.value == value(1)));

    // the watch opened before the failure goes on with the next change
    let event = tokio::time::timeout(T, watch.next()).await.unwrap().unwrap().unwrap();
    let WatchEvent::Put(kv) = event else { panic!("{event:?}") };
    assert_eq!((kv.key.as_str(), kv.revision), ("clusters/b", r));
    drop(watch);
    store.quiesce().await;
}

/// Fills the disk under `store` and writes until a write fails (it needs the file to grow).
async fn exhaust(store: &EmbeddedStore, dir: &std::path::Path) -> std::path::PathBuf {
    let filler = fill(dir);
    for i in 0..64 {
        if store.put(&format!("big/{i}"), value(2), Precondition::None).await.is_err() {
            return filler;
        }
    }
    panic!("64 writes of 768 KiB fit in a full file system");
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let reply = opni_metrics_tests::http::get(&format!("http://{addr}/readyz")).await.unwrap();
    (reply.status.as_u16(), String::from_utf8_lossy(&reply.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_unready_while_its_store_cannot_write() {
    let Some(fs) = Tmpfs::mount("24m") else { return };
    let work = tempfile::tempdir().unwrap();
    let mut settings = GatewaySettings::default();
    settings.data_dir = work.path().join("gateway");
    settings.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    let store = Arc::new(
        EmbeddedStore::open(fs.path().join("store.redb")).unwrap().with_recovery_interval(Duration::from_millis(50)),
    );
    let mut health = store.health_changes();
    let mut gateway = Gateway::builder(settings).store(Arc::clone(&store) as Arc<dyn Store>).build().await.unwrap();
    let addrs = gateway.bind_and_serve().await.unwrap();
    // readiness includes the registry view, loaded from the store just after the listeners
    gateway.registry_loaded().await;
    assert_eq!(readyz(addrs.http).await.0, 200);

    let filler = exhaust(&store, fs.path()).await;
    let (status, body) = readyz(addrs.http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: store: ") && body.contains("store.redb"), "{body}");
    // the gateway's own writes are refused in words meanwhile
    let id = opni_metrics_core::ClusterId::new("c1").unwrap();
    let refused = gateway.state().create_cluster(&opni_metrics_core::registry::Cluster::new(id.clone())).await;
    assert!(refused.is_err());

    std::fs::remove_file(&filler).unwrap();
    tokio::time::timeout(T, health.wait_for(StoreHealth::is_writable)).await.unwrap().unwrap();
    assert_eq!(readyz(addrs.http).await, (200, "ready\n".to_owned()));
    gateway.state().create_cluster(&opni_metrics_core::registry::Cluster::new(id)).await.unwrap();
    gateway.shutdown().await;
}
