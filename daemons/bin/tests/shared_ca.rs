//! Several gateway replicas share the operator's CA: an agent that joined through one replica is
//! trusted by another (before, each replica minted its own CA and refused the others' agents),
//! and the CA's key is checked on start (permissions, that it belongs to the certificate, that
//! the certificate is a CA's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{WAIT, body, certs, gateway_config, start_agent, start_gateway};
use opni_metrics_core::store::{MemoryStore, Store};
use opni_metrics_gateway::Gateway;
use opni_metrics_gateway::ca::CaError;
use opni_metrics_gateway::settings::CaFiles;
use opni_metrics_tests::http::{eventually, push};
use opni_metrics_tests::upstream::{Behaviour, Upstream};

/// A CA certificate and key as an operator would mount them (`tls.crt`, `tls.key`, 0600).
fn operator_ca(dir: &Path, is_ca: bool) -> CaFiles {
    std::fs::create_dir_all(dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "operator CA");
    if is_ca {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    }
    let cert = p.self_signed(&key).unwrap();
    let files = CaFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    files
}

fn settings(dir: &Path, upstream: &str, ca: &CaFiles, name: &str) -> opni_metrics_gateway::GatewaySettings {
    let certs = certs();
    let mut gc = gateway_config(&certs, upstream);
    gc.grpc.tls = None; // the (shared) CA issues each replica's serving certificate
    gc.data_dir = dir.join(name);
    let mut s = gc.validate().unwrap().settings;
    s.ca = Some(ca.clone());
    s
}

async fn build_error(s: opni_metrics_gateway::GatewaySettings) -> CaError {
    match Gateway::builder(s).store(Arc::new(MemoryStore::default())).build().await {
        Err(opni_metrics_gateway::StartError::Ca(e)) => e,
        Err(e) => panic!("not a CA error: {e}"),
        Ok(_) => panic!("the gateway started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joined_through_one_replica_is_trusted_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let ca = operator_ca(&dir.path().join("secret"), true);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let one = start_gateway(settings(dir.path(), &upstream.url(), &ca, "one"), Arc::clone(&store)).await;
    let two = start_gateway(settings(dir.path(), &upstream.url(), &ca, "two"), Arc::clone(&store)).await;
    let pem = std::fs::read_to_string(&ca.cert).unwrap();
    assert_eq!(std::fs::read_to_string(&one.ca_path).unwrap().trim(), pem.trim(), "agents get the operator's CA");

    // join through replica one
    let token = common::create_token(&one, 1).await.token;
    let ac = common::joining_agent_config(&certs(), &one, &dir.path().join("agent"), &token, Some("shared"));
    let agent = start_agent(&ac).await;
    common::install(&one, "shared").await;
    common::push_until_ok(&format!("http://{}/api/agent/push", agent.addr)).await;
    agent.shutdown().await;

    // the same identity (no token any more) through replica two
    let mut ac = ac.clone();
    ac.gateway.address = two.grpc_addr.to_string();
    ac.bootstrap.token = None;
    let agent = start_agent(&ac).await;
    let url = format!("http://{}/api/agent/push", agent.addr);
    eventually(WAIT, "pushes through replica two", || async {
        let r = push(&url, body(3)).await?;
        if r.status == 204 { Ok(()) } else { Err(format!("{} {}", r.status, r.text())) }
    })
    .await
    .unwrap();
    assert!(upstream.requests().iter().all(|r| r.tenants == ["shared"]), "{:?}", upstream.requests());
    assert_eq!(upstream.requests().len(), 2);
    agent.shutdown().await;
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_is_refused_on_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = operator_ca(&dir.path().join("ok"), true);
    let up = "http://127.0.0.1:9/api/v1/push";

    // a key others can read
    std::fs::set_permissions(&ca.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = build_error(settings(dir.path(), up, &ca, "a")).await;
    assert!(matches!(&e, CaError::Permissions { path, mode: 0o644 } if *path == ca.key), "{e}");
    assert!(e.to_string().contains("readable by others"), "{e}");
    std::fs::set_permissions(&ca.key, std::fs::Permissions::from_mode(0o440)).unwrap();
    Gateway::builder(settings(dir.path(), up, &ca, "b")).store(Arc::new(MemoryStore::default())).build().await.unwrap();

    // another CA's key
    let other = operator_ca(&dir.path().join("other"), true);
    let mixed = CaFiles { cert: ca.cert.clone(), key: other.key.clone() };
    let e = build_error(settings(dir.path(), up, &mixed, "c")).await;
    assert!(matches!(&e, CaError::KeyMismatch { .. }), "{e}");

    // a certificate that is not a CA's
    let leaf = operator_ca(&dir.path().join("leaf"), false);
    let e = build_error(settings(dir.path(), up, &leaf, "d")).await;
    assert!(matches!(&e, CaError::NotCa { path } if *path == leaf.cert), "{e}");

    // the embedded CA's own key, and the admin token, are checked too
    let embedded = dir.path().join("embedded");
    let mut s = settings(dir.path(), up, &ca, "embedded");
    s.ca = None;
    s.data_dir = embedded.clone();
    Gateway::builder(s.clone()).store(Arc::new(MemoryStore::default())).build().await.unwrap();
    let key: PathBuf = embedded.join("pki/ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = build_error(s).await;
    assert!(matches!(&e, CaError::Permissions { path, .. } if *path == key), "{e}");
}
