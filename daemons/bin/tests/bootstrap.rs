//! Joining: bad tokens and bad requests are refused with clear errors, and a good join yields a
//! certificate that works for remote write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use opni_metrics_core::store::{MemoryStore, Precondition, Store};
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::bootstrap::v1::{CreateTokenRequest, JoinRequest, RevokeTokenRequest};
use opni_metrics_tests::upstream::{Behaviour, Upstream};
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use tokio::sync::watch;
use tonic::Code;

fn csr() -> String {
    csr_for(&rcgen::KeyPair::generate().unwrap())
}

fn csr_for(key: &rcgen::KeyPair) -> String {
    rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(key).unwrap().pem().unwrap()
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

struct Clients {
    public: BootstrapClient<tonic::transport::Channel>,
    admin:
        BootstrapClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, common::BearerAuth>>,
    mgmt: tonic::transport::Channel,
}

async fn clients(gw: &common::RunningGateway) -> Clients {
    let (_keep, rx) =
        watch::channel(Arc::new(opni_metrics_transport::tls::anonymous_client_config(&gw.ca_path).unwrap()));
    let public = BootstrapClient::new(
        tls_channel(&gw.grpc_addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap(),
    );
    let mgmt = common::management_channel(gw.management_addr).await;
    let admin = BootstrapClient::with_interceptor(mgmt.clone(), common::BearerAuth(gw.admin_token.clone()));
    Clients { public, admin, mgmt }
}

fn join(token: &str, cluster: &str, csr: String) -> JoinRequest {
    JoinRequest { token: token.into(), csr_pem: csr, cluster_id: cluster.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_bad_tokens_and_requests() {
    let certs = common::certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let mut gc = common::gateway_config(&certs, &upstream.url());
    gc.grpc.tls = None; // the embedded CA serves and signs
    let gw = common::start_gateway(gc.validate().unwrap().settings, Arc::clone(&store)).await;

    let Clients { mut public, mut admin, mgmt } = clients(&gw).await;

    // management needs the admin token, and is not served to agents
    let e = BootstrapClient::new(mgmt).list_tokens(()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = public.list_tokens(()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let token = admin
        .create_token(CreateTokenRequest { ttl: None, max_uses: 2, labels: Default::default() })
        .await
        .unwrap()
        .into_inner();
    let e = public.join(join("nodot", "c1", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = public.join(join(&format!("{}.wrong", token.id), "c1", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = public.join(join(&token.token, "a|b", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("cluster_id"), "{e}");
    let e = public.join(join(&token.token, "c1", "not a csr".into())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("csr_pem"), "{e}");

    // a good join, then the same cluster again is refused
    let ok = public.join(join(&token.token, "c1", csr())).await.unwrap().into_inner();
    assert_eq!(ok.cluster_id, "c1");
    assert!(ok.certificate_chain_pem.contains("BEGIN CERTIFICATE"));
    let e = public.join(join(&token.token, "c1", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // an expired token
    let secret = "00112233445566778899aabbccddeeff0011223344556677";
    let expired = serde_json::json!({
        "id": "abcdef", "secretSha256": sha256_hex(secret), "createdAt": 0, "expiresAt": 1,
        "maxUses": 0, "uses": 0, "labels": {}
    });
    store.put("tokens/abcdef", serde_json::to_vec(&expired).unwrap().into(), Precondition::None).await.unwrap();
    let e = public.join(join(&format!("abcdef.{secret}"), "c2", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("expired"), "{e}");

    // a revoked token
    admin.revoke_token(RevokeTokenRequest { id: token.id.clone() }).await.unwrap();
    let e = public.join(join(&token.token, "c3", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    gw.shutdown().await;
}

/// A join whose answer was lost can be retried: the same token and the same key get the same
/// identity back, even after the token's single use; a different key does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_join_gets_the_same_identity() {
    let certs = common::certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let (gw, store) = common::embedded_ca_gateway(&certs, &upstream.url(), |_| {}).await;
    let Clients { mut public, mut admin, .. } = clients(&gw).await;
    let single = || CreateTokenRequest { ttl: None, max_uses: 1, labels: Default::default() };

    // a named cluster: the retry (a new CSR over the same key) answers the same chain
    let token = admin.create_token(single()).await.unwrap().into_inner();
    let key = rcgen::KeyPair::generate().unwrap();
    let first = public.join(join(&token.token, "c1", csr_for(&key))).await.unwrap().into_inner();
    let again = public.join(join(&token.token, "c1", csr_for(&key))).await.unwrap().into_inner();
    assert_eq!(again.cluster_id, "c1");
    assert_eq!(again.certificate_chain_pem, first.certificate_chain_pem);
    assert_eq!(again.ca_pem, first.ca_pem);
    // the used token with another key is refused, for the same cluster and for a new one
    let e = public.join(join(&token.token, "c1", csr())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = public.join(join(&token.token, "c9", csr_for(&key))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // a wrong secret with the right token id and key is not a retry
    let e = public.join(join(&format!("{}.{}", token.id, "0".repeat(48)), "c1", csr_for(&key))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // a generated cluster id: the retry gets the same one, not a second tenant
    let token = admin.create_token(single()).await.unwrap().into_inner();
    let key = rcgen::KeyPair::generate().unwrap();
    let first = public.join(join(&token.token, "", csr_for(&key))).await.unwrap().into_inner();
    assert!(first.cluster_id.starts_with("cluster-"), "{}", first.cluster_id);
    let again = public.join(join(&token.token, "", csr_for(&key))).await.unwrap().into_inner();
    assert_eq!(again.cluster_id, first.cluster_id);
    assert_eq!(again.certificate_chain_pem, first.certificate_chain_pem);
    let clusters: Vec<String> = store.list("clusters/").await.unwrap().items.into_iter().map(|kv| kv.key).collect();
    assert_eq!(clusters.len(), 2, "{clusters:?}");

    // a deleted cluster is not brought back by a retry
    store.delete("clusters/c1", Precondition::None).await.unwrap();
    let e = public.join(join(&token.token, "c1", csr_for(&key))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    gw.shutdown().await;
}

/// An agent given only the CA's pin (as `tokens create` prints it), not the CA file, verifies
/// the gateway by the CA in the gateway's own chain; a wrong pin refuses the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_the_ca_pin_alone() {
    let certs = common::certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let (gw, _store) = common::embedded_ca_gateway(&certs, &upstream.url(), |_| {}).await;
    let token = common::create_token(&gw, 1).await;
    let ca = std::fs::read_to_string(&gw.ca_path).unwrap();
    assert_eq!(Some(token.ca_pin.clone()), opni_metrics_transport::tls::ca_pin_of_pem(&ca));
    assert!(token.ca_pin.starts_with("sha256:") && token.ca_pin.len() == 7 + 64, "{}", token.ca_pin);

    let config = |pin: &str, dir: &str| {
        let mut ac =
            common::joining_agent_config(&certs, &gw, &certs.dir.path().join(dir), &token.token, Some("pinned"));
        ac.bootstrap.ca_file = None;
        ac.bootstrap.ca_pin = Some(pin.to_owned());
        ac
    };
    // a pin of another key: the gateway is not trusted, nothing is joined
    let other = format!("sha256:{}", "ab".repeat(32));
    let e = opni_metrics_daemons::start_agent(config(&other, "wrong").validate().unwrap()).await.unwrap_err();
    let msg = format!("{e:?}");
    assert!(msg.contains("pin"), "{msg}");
    // a malformed pin is a config error naming the field
    let e = config("md5:abc", "bad").validate().unwrap_err();
    assert!(e.to_string().contains("bootstrap.caPin"), "{e}");
    // the right pin
    let agent = common::start_agent(&config(&token.ca_pin, "right")).await;
    let written = std::fs::read_to_string(certs.dir.path().join("right/identity/ca.pem")).unwrap();
    assert_eq!(written.trim(), ca.trim(), "the CA the gateway sent is kept");
    agent.shutdown().await;
    gw.shutdown().await;
}
