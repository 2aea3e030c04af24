//! Agent identity over time: certificates renew before they expire without a failed push, an
//! expired certificate is refused even on a connection made while it was valid, a deleted
//! cluster's certificate is not renewed, and an agent whose `Join` answer was lost joins again
//! with the same token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{BearerAuth, body, certs, management_channel, start_agent, start_gateway};
use opni_metrics_core::duration::PromDuration;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::bootstrap::v1::{JoinRequest, RenewRequest};
use opni_metrics_proto::clusters::v1::DeleteClusterRequest;
use opni_metrics_proto::clusters::v1::clusters_client::ClustersClient;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_tests::http::{get, push};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use opni_metrics_transport::tls::{Leaf, TlsFiles, read_certs};
use tokio::sync::watch;
use tonic::Code;

/// A gateway with its embedded CA issuing agent certificates valid for `cert_validity`.
async fn gateway(
    certs: &common::Certs,
    upstream: &Upstream,
    cert_validity: Duration,
    max_connection_age: Duration,
) -> common::RunningGateway {
    common::embedded_ca_gateway(certs, &upstream.url(), |gc| {
        gc.bootstrap.cert_validity = PromDuration::from_millis(cert_validity.as_millis() as u64);
        gc.grpc.max_connection_age = PromDuration::from_millis(max_connection_age.as_millis() as u64);
    })
    .await
    .0
}

async fn token(gw: &common::RunningGateway) -> String {
    common::create_token(gw, 1).await.token
}

fn cert_period(files: &TlsFiles) -> (SystemTime, SystemTime) {
    Leaf::parse(&read_certs("certificate", &files.cert).unwrap()).unwrap().validity()
}

/// Sleeps until the wall clock passes `t` (certificate validity is wall-clock time; there is no
/// event to await).
async fn until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_its_certificate_before_it_expires_and_no_push_fails() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    // agents renew at two thirds (8 s); connections live 2 s, so none outlives its certificate
    let gw = gateway(&certs, &upstream, Duration::from_secs(12), Duration::from_secs(2)).await;
    let dir = certs.dir.path().join("agent");
    let ac = common::joining_agent_config(&certs, &gw, &dir, &token(&gw).await, Some("renewing"));
    let agent = start_agent(&ac).await;
    let files = opni_metrics_agent::identity::files(&dir.join("identity"));
    let first = std::fs::read_to_string(&files.cert).unwrap();
    let (_, first_end) = cert_period(&files);
    let url = format!("http://{}/api/agent/push", agent.addr);
    common::install(&gw, "renewing").await;
    common::push_until_ok(&url).await;

    // push steadily until well past the first certificate's end
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut after_first_end = 0;
    while SystemTime::now() < first_end + Duration::from_secs(2) {
        let r = push(&url, body(2)).await.unwrap();
        *statuses.entry(r.status.as_u16()).or_default() += 1;
        if SystemTime::now() > first_end {
            after_first_end += 1;
        }
        if r.status != 204 {
            eprintln!("push answered {}: {}", r.status, r.text());
            let m = get(&format!("http://{}/metrics", agent.addr)).await.unwrap().text();
            eprintln!("{}", m.lines().filter(|l| l.contains("certificate")).collect::<Vec<_>>().join("\n"));
            eprintln!("changed: {}", std::fs::read_to_string(&files.cert).unwrap() != first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [204], "every push succeeded: {statuses:?}");
    assert!(after_first_end > 0, "pushes went on after the first certificate ended: {statuses:?}");
    let renewed = std::fs::read_to_string(&files.cert).unwrap();
    assert_ne!(renewed, first, "the certificate was renewed");
    let (_, end) = cert_period(&files);
    assert!(end > first_end, "the new certificate ends later");
    let metrics = get(&format!("http://{}/metrics", agent.addr)).await.unwrap().text();
    assert!(metrics.contains("opni_agent_certificate_renewals_total{result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("opni_agent_certificate_expiry_timestamp_seconds"), "{metrics}");
    assert!(upstream.requests().iter().all(|r| r.tenants == ["renewing"]));
    agent.shutdown().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_even_on_a_connection_made_while_it_was_valid() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let gc = common::gateway_config(&certs, &upstream.url());
    let store = opni_metrics_tests::registry::store_with(&[common::CLUSTER]).await;
    let gw = start_gateway(gc.validate().unwrap().settings, store).await;
    let short = certs.pki.short_lived_agent("short", common::CLUSTER, Duration::from_secs(3));
    let files = common::files(&short);
    let mut client = RemoteWriteClient::new(common::identity_channel(&gw, &files));
    let req = common::push_request;
    let ok = client.push(req()).await.unwrap().into_inner();
    assert_eq!(ok.http_status, 204);
    until(cert_period(&files).1 + Duration::from_secs(1)).await;
    // the same channel, the same connection: refused on this request
    let e = client.push(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("expired"), "{e}");
    assert_eq!(upstream.requests().len(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_needs_the_current_certificate_and_a_registered_cluster() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let gw = gateway(&certs, &upstream, Duration::from_secs(3600), Duration::from_secs(60)).await;
    let dir = certs.dir.path().join("agent");
    let ac = common::joining_agent_config(&certs, &gw, &dir, &token(&gw).await, Some("c1"));
    let agent = start_agent(&ac).await;
    agent.shutdown().await;
    let id_dir = dir.join("identity");
    let files = opni_metrics_agent::identity::files(&id_dir);

    // with the current certificate: a new one, for a new key, written in place
    let before = std::fs::read_to_string(&files.key).unwrap();
    opni_metrics_agent::identity::renew(&id_dir, common::identity_channel(&gw, &files)).await.unwrap();
    assert_ne!(std::fs::read_to_string(&files.key).unwrap(), before);
    assert!(files.client_config().is_ok(), "the new key and certificate match");

    // without a certificate (the anonymous join channel), or on the management listener
    let (_keep, rx) =
        watch::channel(Arc::new(opni_metrics_transport::tls::anonymous_client_config(&gw.ca_path).unwrap()));
    let anon = tls_channel(&gw.grpc_addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap();
    let csr = || {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap().pem().unwrap()
    };
    let e = BootstrapClient::new(anon).renew(RenewRequest { csr_pem: csr() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = BootstrapClient::with_interceptor(
        management_channel(gw.management_addr).await,
        BearerAuth(gw.admin_token.clone()),
    )
    .renew(RenewRequest { csr_pem: csr() })
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = BootstrapClient::new(common::identity_channel(&gw, &files))
        .renew(RenewRequest { csr_pem: "not a csr".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // a deleted cluster's certificate is not renewed; the identity on disk is left as it was
    ClustersClient::with_interceptor(management_channel(gw.management_addr).await, BearerAuth(gw.admin_token.clone()))
        .delete(DeleteClusterRequest { id: "c1".into() })
        .await
        .unwrap();
    let cert = std::fs::read_to_string(&files.cert).unwrap();
    let e = opni_metrics_agent::identity::renew(&id_dir, common::identity_channel(&gw, &files)).await.unwrap_err();
    match e {
        opni_metrics_agent::identity::RenewError::Refused { code, message } => {
            assert_eq!(code, Code::PermissionDenied);
            assert!(message.contains("revoked"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), cert);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_join_answer_was_lost_joins_again_with_the_same_token() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let gw = gateway(&certs, &upstream, Duration::from_secs(3600), Duration::from_secs(60)).await;
    let token = token(&gw).await;
    // the agent wrote its key, sent Join, and the gateway answered, but the answer was lost
    let id_dir = certs.dir.path().join("agent").join("identity");
    std::fs::create_dir_all(&id_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(id_dir.join("key.pem"), key.serialize_pem()).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let (_keep, rx) =
        watch::channel(Arc::new(opni_metrics_transport::tls::anonymous_client_config(&gw.ca_path).unwrap()));
    let anon = tls_channel(&gw.grpc_addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap();
    let lost = BootstrapClient::new(anon)
        .join(JoinRequest { token: token.clone(), csr_pem: csr.pem().unwrap(), cluster_id: String::new() })
        .await
        .unwrap()
        .into_inner();

    // restarted with the same (now used up) token: the same identity, no second tenant
    let ac = common::joining_agent_config(&certs, &gw, &certs.dir.path().join("agent"), &token, None);
    let agent = start_agent(&ac).await;
    assert_eq!(std::fs::read_to_string(id_dir.join("cert.pem")).unwrap(), lost.certificate_chain_pem);
    common::install(&gw, &lost.cluster_id).await;
    common::push_until_ok(&format!("http://{}/api/agent/push", agent.addr)).await;
    assert_eq!(upstream.requests()[0].tenants, std::slice::from_ref(&lost.cluster_id));
    agent.shutdown().await;
    gw.shutdown().await;
}
