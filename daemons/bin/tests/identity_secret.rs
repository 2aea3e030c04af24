//! The agent binary keeps its joined identity in a Kubernetes Secret (the fake API server,
//! through a generated kubeconfig): an agent restarted with its data directory gone (an
//! `emptyDir`) comes back as the same cluster without a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BearerAuth, Daemon, certs, management_channel};
use opni_metrics_proto::bootstrap::v1::RevokeTokenRequest;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_tests::kube_fake::FakeApiServer;
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::upstream::{Behaviour, Upstream};

const NAMESPACE: &str = "opni-agent";
const SECRET: &str = "opni-metrics-agent-identity";

fn secret_data(api: &FakeApiServer) -> Option<serde_json::Value> {
    api.get("", "secrets", Some(NAMESPACE), SECRET).map(|s| s["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_without_its_data_directory_keeps_its_identity() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let (gw, store) = common::embedded_ca_gateway(&certs, &upstream.url(), |_| {}).await;
    let token = common::create_token(&gw, 1).await;
    let mut tokens = BootstrapClient::with_interceptor(
        management_channel(gw.management_addr).await,
        BearerAuth(gw.admin_token.clone()),
    );

    let api = FakeApiServer::new();
    let served = api.serve().await.unwrap();
    let kubeconfig = certs.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, served.kubeconfig_yaml(NAMESPACE)).unwrap();
    let data = certs.dir.path().join("agent-data");
    let port = free_port();
    let config = certs.dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {data}\nhttp: {{listen: 127.0.0.1:{port}}}\ngateway: {{address: {gw}, serverName: localhost}}\nbootstrap:\n  token: {token}\n  clusterId: kc1\n  caFile: {ca}\n  identitySecret: {SECRET}\ndriver:\n  kind: none\n  kubernetes: {{kubeconfig: {kubeconfig}}}\nlog: {{level: warn}}\n",
            data = data.display(),
            gw = gw.grpc_addr,
            token = token.token,
            ca = gw.ca_path.display(),
            kubeconfig = kubeconfig.display(),
        ),
    )
    .unwrap();
    let start = || {
        Daemon::spawn_raw(
            env!("CARGO_BIN_EXE_opni-metrics-agent"),
            vec![format!("--config={}", config.display())],
            format!("http://127.0.0.1:{port}/readyz"),
        )
    };

    // the first start joins and keeps the identity in the Secret
    let mut agent = start().await;
    let kept = secret_data(&api).expect("the identity Secret");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(kept[key].is_string(), "{key} kept: {kept}");
    }
    // written like every object this project owns: labelled, by its field manager
    let secret = api.get("", "secrets", Some(NAMESPACE), SECRET).unwrap();
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "opni-metrics", "{secret}");
    assert_eq!(secret["type"], "Opaque");
    let managers: Vec<&str> =
        secret["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert_eq!(managers, ["opni-metrics"], "{secret}");
    let cert = std::fs::read_to_string(data.join("identity").join("cert.pem")).unwrap();
    common::install(&gw, "kc1").await;
    let url = format!("http://127.0.0.1:{port}/api/agent/push");
    common::push_until_ok(&url).await;
    assert!(agent.terminate_ref().await.success());

    // the data directory is gone and the token revoked: the agent comes back from the Secret
    std::fs::remove_dir_all(&data).unwrap();
    tokens.revoke_token(RevokeTokenRequest { id: token.id.clone() }).await.unwrap();
    let agent = start().await;
    assert_eq!(std::fs::read_to_string(data.join("identity").join("cert.pem")).unwrap(), cert);
    common::push_until_ok(&url).await;
    let clusters = store.list("clusters/").await.unwrap().items;
    assert_eq!(clusters.len(), 1, "no second tenant");
    assert!(upstream.requests().iter().all(|r| r.tenants == ["kc1"]));
    assert!(agent.terminate().await.success());
    gw.shutdown().await;
}
