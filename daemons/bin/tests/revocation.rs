//! Push gating and revocation: the gateway admits pushes only from registered clusters whose
//! capability is installed (the agent answers Prometheus 503, so nothing is dropped), and a
//! deleted cluster's open connections are closed, its notification stream ended and its
//! certificates refused, even after a cluster of the same id joins again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BearerAuth, WAIT, body, certs, management_channel, start_agent};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_proto::bootstrap::v1::RenewRequest;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::clusters::v1::DeleteClusterRequest;
use opni_metrics_proto::clusters::v1::clusters_client::ClustersClient;
use opni_metrics_proto::node::v1::NotificationsRequest;
use opni_metrics_proto::node::v1::node_sync_client::NodeSyncClient;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_tests::http::{eventually, get, metric_sum, push};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::tls::TlsFiles;
use tonic::Code;

/// Joins an agent as `cluster` (keeping its identity under `dir`), and returns the identity's
/// files once the agent has stopped.
async fn join(gw: &common::RunningGateway, certs: &common::Certs, dir: &std::path::Path, cluster: &str) -> TlsFiles {
    let token = common::create_token(gw, 1).await.token;
    start_agent(&common::joining_agent_config(certs, gw, dir, &token, Some(cluster))).await.shutdown().await;
    opni_metrics_agent::identity::files(&dir.join("identity"))
}

/// Pushes with `client` until the answer is not a transport failure of a closed connection.
async fn push_code(
    client: &mut RemoteWriteClient<opni_metrics_transport::channel::GatewayChannel>,
) -> Result<u32, tonic::Status> {
    eventually(WAIT, "a push answered", || async {
        match client.clone().push(common::push_request()).await {
            Ok(r) => Ok(Ok(r.into_inner().http_status)),
            Err(s) if matches!(s.code(), Code::Unavailable | Code::Cancelled | Code::Unknown) => {
                Err(format!("{:?}: {}", s.code(), s.message()))
            }
            Err(s) => Ok(Err(s)),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_installed_clusters_write_and_a_deleted_cluster_is_cut_off() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let (gw, _store) = common::embedded_ca_gateway(&certs, &upstream.url(), |_| {}).await;
    let files = join(&gw, &certs, &certs.dir.path().join("one"), "c1").await;
    let mut client = RemoteWriteClient::new(common::identity_channel(&gw, &files));

    // joined, capability not installed: refused, and the agent tells Prometheus to retry (once
    // the gateway's view, which follows the store watch, has the new cluster)
    let e = eventually(WAIT, "refused as not installed", || async {
        match client.clone().push(common::push_request()).await {
            Err(e) if e.code() == Code::FailedPrecondition => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(e.message().contains("not installed"), "{e}");
    let mut ac = common::agent_config(&certs.agent, &gw.grpc_addr.to_string());
    ac.gateway.tls = Some(files.clone());
    let agent = start_agent(&ac).await;
    let r = push(&format!("http://{}/api/agent/push", agent.addr), body(1)).await.unwrap();
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    assert!(r.text().contains("not installed"), "{}", r.text());
    agent.shutdown().await;
    let m = get(&format!("http://{}/metrics", gw.http_addr)).await.unwrap().text();
    assert!(
        metric_sum(&m, "opni_gateway_remote_write_refused_total{reason=\"not_installed\"}").unwrap_or(0.0) >= 2.0,
        "{m}"
    );

    // installed: admitted (the view follows the store watch)
    common::install(&gw, "c1").await;
    eventually(WAIT, "admitted", || async {
        match client.clone().push(common::push_request()).await {
            Ok(r) if r.get_ref().http_status == 204 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    // being uninstalled: refused again
    let state = gw.gateway.state().clone();
    let c1 = ClusterId::new("c1").unwrap();
    state.update_cluster(&c1, |c| c.mark_for_uninstall(&CapabilityName::metrics(), Timestamp(1))).await.unwrap();
    eventually(WAIT, "refused while uninstalling", || async {
        match client.clone().push(common::push_request()).await {
            Err(s) if s.code() == Code::FailedPrecondition && s.message().contains("being uninstalled") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    state.update_cluster(&c1, |c| c.remove(&CapabilityName::metrics()).map(|_| ())).await.unwrap();

    // an open notification stream and connection, then the cluster is deleted
    let mut stream = NodeSyncClient::new(common::identity_channel(&gw, &files))
        .notifications(NotificationsRequest {})
        .await
        .unwrap()
        .into_inner();
    eventually(WAIT, "the agent is connected", || async {
        if gw.hub().is_connected(&c1).await { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();
    ClustersClient::with_interceptor(management_channel(gw.management_addr).await, BearerAuth(gw.admin_token.clone()))
        .delete(DeleteClusterRequest { id: "c1".into() })
        .await
        .unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue, // a SyncNow for the change may come first
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ends");
    // the connection under it was closed (not only the stream ended by the hub)
    assert!(ended.is_err(), "{ended:?}");
    assert_eq!(push_code(&mut client).await.unwrap_err().code(), Code::PermissionDenied);

    // a cluster of the same id joins again: the new identity writes, the old one stays refused
    let files2 = join(&gw, &certs, &certs.dir.path().join("two"), "c1").await;
    common::install(&gw, "c1").await;
    let client2 = RemoteWriteClient::new(common::identity_channel(&gw, &files2));
    eventually(WAIT, "the new identity writes", || async {
        match client2.clone().push(common::push_request()).await {
            Ok(r) if r.get_ref().http_status == 204 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let e = push_code(&mut client).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("revoked"), "{e}");
    let e = BootstrapClient::new(common::identity_channel(&gw, &files))
        .renew(RenewRequest { csr_pem: "unused".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(upstream.requests().iter().all(|r| r.tenants == ["c1"]));
    gw.shutdown().await;
}
