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
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap().pem().unwrap()
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_bad_tokens_and_requests() {
    let certs = common::certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let mut gc = common::gateway_config(&certs, &upstream.url());
    gc.grpc.tls = None; // the embedded CA serves and signs
    let gw = common::start_gateway(gc.validate().unwrap().settings, Arc::clone(&store)).await;

    let (_keep, rx) =
        watch::channel(Arc::new(opni_metrics_transport::tls::anonymous_client_config(&gw.ca_path).unwrap()));
    let mut public = BootstrapClient::new(
        tls_channel(&gw.grpc_addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap(),
    );
    let mgmt = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.management_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", gw.admin_token).parse().unwrap();
    let mut admin = BootstrapClient::with_interceptor(mgmt.clone(), move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });

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
    let join = |token: &str, cluster: &str, csr: String| JoinRequest {
        token: token.into(),
        csr_pem: csr,
        cluster_id: cluster.into(),
    };

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
