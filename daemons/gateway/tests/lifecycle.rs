//! A gateway owns its tasks: `shutdown()` ends the agents' notification streams, drains and
//! joins everything, after which the embedded store's file can be opened again by the same
//! process (redb refuses a second open while any handle to the database lives).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opni_metrics_core::ClusterId;
use opni_metrics_core::registry::Cluster;
use opni_metrics_gateway::ca::Ca;
use opni_metrics_gateway::store::embedded::EmbeddedStore;
use opni_metrics_gateway::{Gateway, GatewaySettings};
use opni_metrics_proto::node::v1::node_sync_client::NodeSyncClient;
use opni_metrics_proto::node::v1::{NotificationsRequest, SyncRequest};
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use opni_metrics_transport::tls::TlsFiles;

/// An agent identity for `cluster`, signed by the gateway's own CA in `dir/pki`.
fn agent_files(dir: &std::path::Path, cluster: &ClusterId) -> TlsFiles {
    let ca = Ca::load_or_create(&dir.join("pki")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let chain = ca.sign_agent(&csr.pem().unwrap(), cluster, Duration::from_secs(3600)).unwrap();
    let files = TlsFiles { cert: dir.join("agent.pem"), key: dir.join("agent-key.pem"), ca: ca.cert_path() };
    std::fs::write(&files.cert, chain).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_store_file_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut settings = GatewaySettings::default();
    settings.data_dir = dir.path().join("gateway");
    settings.listen = opni_metrics_gateway::Listen::ephemeral_loopback();
    settings.drain_timeout = Duration::from_secs(20);
    let store = Arc::new(EmbeddedStore::open(&path).unwrap());
    let mut gateway = Gateway::builder(settings).store(store).build().await.unwrap();
    let addrs = gateway.bind_and_serve().await.unwrap();
    // ready once its registry view has loaded, which follows serving by a moment
    let loaded = tokio::time::timeout(Duration::from_secs(10), gateway.registry_loaded()).await;
    assert!(loaded.is_ok() && gateway.ops().is_ready(), "not ready: {:?}", gateway.ops().readiness());

    // a connected agent: a notification stream open, one Sync answered
    let id = ClusterId::new("c1").unwrap();
    gateway.state().create_cluster(&Cluster::new(id.clone())).await.unwrap();
    let files = agent_files(&dir.path().join("gateway"), &id);
    let tasks = opni_metrics_transport::Tasks::new();
    let tls = files.watch(Duration::from_secs(5), TlsFiles::client_config, &tasks).unwrap();
    let channel = tls_channel(&addrs.grpc.to_string(), "localhost", tls, &ChannelOptions::default()).unwrap();
    let mut client = NodeSyncClient::new(channel);
    let mut stream = client.notifications(NotificationsRequest {}).await.unwrap().into_inner();
    let reply = client.sync(SyncRequest::new(None, Default::default())).await.unwrap().into_inner();
    assert!(reply.config.is_some(), "a node without a digest gets its config");
    // registered before the stream was answered; commands to the hub are handled in order
    assert!(gateway.hub().is_connected(&id).await);

    // the same file cannot be opened while the gateway runs
    assert!(EmbeddedStore::open(&path).is_err());
    tokio::time::timeout(Duration::from_secs(30), gateway.shutdown()).await.expect("shutdown finishes");
    // the agent's stream was ended by the gateway, not cut by a timeout
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = stream.next().await {} }).await;
    assert!(ended.is_ok(), "the notification stream ended at shutdown");
    let reopened = EmbeddedStore::open(&path).expect("the store file is free after shutdown");
    drop(reopened);
    tasks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn building_without_a_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = GatewaySettings::default();
    settings.data_dir = dir.path().to_owned();
    let e = Gateway::builder(settings).build().await.unwrap_err();
    assert!(e.to_string().contains("no store"), "{e}");
    let mut bad = GatewaySettings::default();
    bad.data_dir = dir.path().to_owned();
    bad.upstream.timeout = Duration::from_secs(45);
    let e = Gateway::builder(bad).store(Arc::new(opni_metrics_core::store::MemoryStore::default())).build().await;
    let e = e.unwrap_err();
    assert!(opni_metrics_core::error_chain(&e).contains("upstream.timeout"), "{e}");
}
