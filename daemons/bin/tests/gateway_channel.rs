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
    let mut settings = gateway_config(&certs, "http://127.0.0.1:9/api/v1/push").validate().unwrap().settings;
    // the gateway comes back on the same address: one from bind(0), released meanwhile, could
    // be taken by any outgoing connection
    settings.listen.grpc = format!("127.0.0.1:{}", opni_metrics_tests::prometheus::free_port()).parse().unwrap();
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

/// A TCP relay to `target` whose connections can be frozen: from then on, nothing more passes
/// in either direction and nothing is closed, as with a gateway host that stopped answering;
/// thawing closes the frozen connections (new ones pass again).
async fn freezable_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (frozen, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                ),
                (Box::new(sr), Box::new(cw)),
            ] {
                let frozen = watch.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if *frozen.borrow() {
                            // hold the connection open, silently, until thawed; then close it
                            let _ = frozen.clone().wait_for(|f| !*f).await;
                            return;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_answering_is_dropped_by_keepalive_and_redialed() {
    let certs = certs();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let settings = gateway_config(&certs, "http://127.0.0.1:9/api/v1/push").validate().unwrap().settings;
    let gw = start_gateway(settings, store).await;
    let (proxy, frozen) = freezable_proxy(gw.grpc_addr).await;
    let (_keep, rx) = tokio::sync::watch::channel(Arc::new(files(&certs.agent).client_config().unwrap()));
    let opts = ChannelOptions {
        keepalive_interval: std::time::Duration::from_millis(500),
        keepalive_timeout: std::time::Duration::from_secs(1),
        ..ChannelOptions::default()
    };
    let channel = GatewayChannel::new(&proxy.to_string(), "localhost", rx, &opts).unwrap();
    sync(&channel).await.unwrap();
    assert!(channel.is_connected());

    // the path goes silent: a call in flight fails UNAVAILABLE once a PING goes unanswered
    // (the call itself has no deadline: only the keep-alive can end it)
    frozen.send_replace(true);
    let failed = tokio::time::timeout(std::time::Duration::from_secs(60), sync(&channel))
        .await
        .expect("the keep-alive never gave up on the silent connection");
    assert_eq!(failed.unwrap_err().code(), Code::Unavailable);
    assert!(!channel.is_connected());

    // the next call dials a new connection, which works
    frozen.send_replace(false);
    sync(&channel).await.unwrap();
    assert!(channel.is_connected());
    gw.shutdown().await;
}
