//! The agent's channel to the gateway (`GatewayChannel`): lazy dial, calls straight into the
//! HTTP/2 connection, `UNAVAILABLE` while the gateway is down, and a new connection after the
//! old one ended, all over real mutual TLS against a real gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{certs, files, gateway_config, start_gateway};
use opni_metrics_core::store::{MemoryStore, Store};
use opni_metrics_proto::node::v1::SyncRequest;
use opni_metrics_proto::node::v1::node_sync_client::NodeSyncClient;
use opni_metrics_transport::channel::GatewayChannel;
use opni_metrics_transport::grpc::ChannelOptions;
use tonic::Code;

async fn sync(channel: &GatewayChannel) -> Result<(), tonic::Status> {
    NodeSyncClient::new(channel.clone()).sync(SyncRequest::new(None, Default::default())).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_lazily_fails_fast_while_down_and_reconnects() {
    let certs = certs();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let settings = gateway_config(&certs, "http://127.0.0.1:9/api/v1/push").validate().unwrap().settings;
    let gw = start_gateway(settings.clone(), Arc::clone(&store)).await;
    let addr = gw.grpc_addr;
    let (_keep, rx) = tokio::sync::watch::channel(Arc::new(files(&certs.agent).client_config().unwrap()));
    let channel = GatewayChannel::new(&addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap();
    assert!(!channel.is_connected(), "nothing is dialed before the first call");

    // concurrent calls share the one connection the first of them dials
    let calls: Vec<_> = (0..8).map(|_| sync(&channel)).collect();
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert!(channel.is_connected());

    // the gateway goes away: calls fail UNAVAILABLE (retryable), the concurrent ones too
    gw.shutdown().await;
    let calls: Vec<_> = (0..8).map(|_| sync(&channel)).collect();
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
    }
    assert!(!channel.is_connected());

    // a gateway on the same address again: the same channel dials a new connection
    let mut again = settings;
    again.listen.grpc = addr;
    let gw = start_gateway(again, store).await;
    sync(&channel).await.unwrap();
    assert!(channel.is_connected());
    gw.shutdown().await;
}

#[test]
fn refuses_addresses_without_a_port_and_bad_server_names() {
    let (_keep, rx) = tokio::sync::watch::channel(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    ));
    let opts = ChannelOptions::default();
    assert!(GatewayChannel::new("gateway.example", "localhost", rx.clone(), &opts).is_err());
    assert!(GatewayChannel::new("not an address:1", "localhost", rx.clone(), &opts).is_err());
    assert!(GatewayChannel::new("gateway.example:9090", "not a name!", rx.clone(), &opts).is_err());
    assert!(GatewayChannel::new("gateway.example:9090", "gateway.example", rx, &opts).is_ok());
}
