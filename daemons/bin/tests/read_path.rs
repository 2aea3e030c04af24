//! The read path end to end: a real agent-mode Prometheus pushes through the agent and the
//! gateway into real Prometheus receivers (one per tenant) behind the Cortex-semantics test
//! upstream; readers query through the gateway's query proxy with promtool (a client no one
//! here wrote) and plain HTTP, authenticated by API keys and OpenID Connect tokens, and see
//! exactly the tenants their role bindings grant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{WAIT, agent_config, certs, gateway_config, start_agent, start_gateway};
use opni_metrics_core::ClusterId;
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_proto::rbac::v1 as rbac;
use opni_metrics_proto::rbac::v1::rbac_client::RbacClient;
use opni_metrics_tests::cortex::CortexUpstream;
use opni_metrics_tests::http::eventually;
use opni_metrics_tests::oidc::{Issuer, epoch_now};
use opni_metrics_tests::prometheus::{Job, Prometheus};
use opni_metrics_tests::target::CounterTarget;
use serde_json::json;

const A: &str = "cluster-a";
const B: &str = "cluster-b";

async fn rbac_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> RbacClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, common::BearerAuth>> {
    RbacClient::with_interceptor(common::management_channel(addr).await, common::BearerAuth(token.to_owned()))
}

/// `promtool query <kind> <server> <expr> [flags]`, trusting `ca`; stdout or the failure.
async fn promtool(server: &str, ca: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let o = tokio::process::Command::new("promtool")
        .arg("query")
        .args(args.iter().take(1))
        .arg(server)
        .args(args.iter().skip(1))
        .env("SSL_CERT_FILE", ca)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

/// The headers the upstream saw on query requests since `from`.
fn org_ids_since(up: &CortexUpstream, from: usize) -> Vec<Vec<String>> {
    up.seen_at("/prometheus/api/v1/").into_iter().skip(from).map(|s| s.org_ids).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_exactly_their_tenants() {
    let certs = certs();
    let (cortex, _receivers) = common::cortex_with_receivers(&[A, B]).await;
    let issuer = Issuer::start().await;

    let mut gc = gateway_config(&certs, &format!("{}/api/v1/push", cortex.url()));
    gc.query.tls = opni_metrics_daemons::config::readers::QueryTlsConfig::Mode(
        opni_metrics_daemons::config::readers::TlsMode::Gateway,
    );
    gc.readers.oidc = Some(opni_metrics_daemons::config::readers::OidcConfig::new(&issuer.url(), "grafana"));
    let mut plan = gc.validate().unwrap();
    // a rotation test follows: look up unknown key ids at once
    plan.settings.readers.oidc.as_mut().unwrap().min_refresh_interval = std::time::Duration::ZERO;
    let gw = start_gateway(plan.settings, Arc::new(MemoryStore::default())).await;
    let state = gw.gateway.state().clone();
    for (id, env) in [(A, "prod"), (B, "dev")] {
        let mut c = Cluster::new(ClusterId::new(id).unwrap());
        c.set_labels([("env".to_owned(), env.to_owned())].into()).unwrap();
        c.install(opni_metrics_core::CapabilityName::metrics(), opni_metrics_core::Timestamp(1)).unwrap();
        state.create_cluster(&c).await.unwrap();
    }

    // cluster A: a real agent-mode Prometheus scrapes a target and pushes through its agent
    let agent_a = start_agent(&agent_config(&certs.agent, &gw.grpc_addr.to_string())).await;
    let target = CounterTarget::start().await;
    let jobs = [Job { name: "counter".into(), targets: vec![target.addr.to_string()] }];
    let _sender = Prometheus::agent(&jobs, "1s", &format!("http://{}/api/agent/push", agent_a.addr)).await.unwrap();
    // cluster B: one series of its own through its agent
    let agent_b_cert = certs.pki.agent("agent-b", B);
    let agent_b = start_agent(&agent_config(&agent_b_cert, &gw.grpc_addr.to_string())).await;
    let now_ms = epoch_now() * 1000;
    let body = opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(0, 1, now_ms, "only_in_b"));
    let r = opni_metrics_tests::http::push(&format!("http://{}/api/agent/push", agent_b.addr), body).await.unwrap();
    assert!(r.status.is_success(), "{r:?}");

    // roles: alice reads A by id; the sre group reads env=prod by selector
    let mut admin = rbac_client(gw.management_addr, &gw.admin_token).await;
    admin.create_role(rbac::Role { name: "a-only".into(), cluster_ids: vec![A.into()], selector: None }).await.unwrap();
    let prod = opni_metrics_proto::common::v1::LabelSelector {
        match_labels: [("env".to_owned(), "prod".to_owned())].into(),
        match_expressions: vec![],
    };
    admin.create_role(rbac::Role { name: "prod".into(), cluster_ids: vec![], selector: Some(prod) }).await.unwrap();
    let bind = |name: &str, role: &str, subject: &str| rbac::RoleBinding {
        name: name.into(),
        role: role.into(),
        subjects: vec![subject.into()],
    };
    admin.create_role_binding(bind("alice", "a-only", "user:alice")).await.unwrap();
    admin.create_role_binding(bind("sre", "prod", "group:sre")).await.unwrap();
    admin.create_role_binding(bind("script", "a-only", "user:apikey:script")).await.unwrap();
    let key = admin
        .create_api_key(rbac::CreateApiKeyRequest { name: "script".into(), subject: String::new(), groups: vec![] })
        .await
        .unwrap()
        .into_inner()
        .key;

    // promtool (basic auth with the API key as password, TLS verified against the CA) reads
    // what the agent-mode Prometheus pushed
    let port = gw.query_addr.port();
    let server = format!("https://x:{key}@localhost:{port}/prometheus");
    let out = eventually(WAIT, "promtool sees the pushed counter", || async {
        let o = promtool(&server, &certs.gateway.ca, &["instant", "test_scrapes_total"]).await?;
        if o.contains("test_scrapes_total") { Ok(o) } else { Err(format!("promtool printed {o:?}")) }
    })
    .await
    .unwrap();
    assert!(out.contains("job=\"counter\""), "{out}");
    // a little ahead: the newest sample may be younger than the current whole second
    let end = (epoch_now() + 5).to_string();
    let start = (epoch_now() - 60).to_string();
    let range = promtool(
        &server,
        &certs.gateway.ca,
        &["range", "test_scrapes_total", &format!("--start={start}"), &format!("--end={end}"), "--step=1s"],
    )
    .await
    .unwrap();
    assert!(range.contains("test_scrapes_total"), "{range}");
    // the same key sees nothing of B
    let b = promtool(&server, &certs.gateway.ca, &["instant", "only_in_b"]).await.unwrap();
    assert!(!b.contains("only_in_b"), "{b}");
    let seen = org_ids_since(&cortex, 0);
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|ids| ids == &[A.to_owned()]), "{seen:?}");
    assert!(cortex.seen_at("/prometheus/").iter().all(|s| !s.had_authorization), "credentials stay at the gateway");

    // plain HTTPS from here on: a client trusting the gateway's CA
    let https = opni_metrics_tests::http::TlsClient::new(&certs.gateway.ca);
    let url = |q: &str| format!("https://localhost:{port}/prometheus/api/v1/query?query={q}");
    let get = |cred: String, extra: Vec<(&'static str, String)>, q: &'static str| {
        let https = https.clone();
        let url = url(q);
        async move {
            let mut h = vec![("authorization".to_owned(), format!("Bearer {cred}"))];
            h.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            https.get(&url, &h).await.unwrap()
        }
    };
    // a spoofed tenant header is dropped; exactly one header, the caller's tenant, goes up
    let before = org_ids_since(&cortex, 0).len();
    let alice = issuer.token("alice", &[]);
    let r = get(alice.clone(), vec![("X-Scope-OrgID", B.into()), ("x-scope-orgid", B.into())], "only_in_b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("only_in_b"), "{}", r.text());
    assert_eq!(org_ids_since(&cortex, before), vec![vec![A.to_owned()]]);
    // nor can a query parameter name one
    let before = org_ids_since(&cortex, 0).len();
    let r = get(alice.clone(), vec![], "only_in_b&X-Scope-OrgID=cluster-b&orgId=cluster-b&tenant=cluster-b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("only_in_b"), "{}", r.text());
    assert_eq!(org_ids_since(&cortex, before), vec![vec![A.to_owned()]]);

    // tokens that must not pass: 401, and nothing forwarded
    let before = org_ids_since(&cortex, 0).len();
    let t = epoch_now();
    let mut expired = issuer.claims("alice", &[]);
    expired["exp"] = json!(t - 3600);
    expired["nbf"] = json!(t - 7200);
    let mut early = issuer.claims("alice", &[]);
    early["nbf"] = json!(t + 3600);
    let mut audience = issuer.claims("alice", &[]);
    audience["aud"] = json!("someone-else");
    let stranger = opni_metrics_tests::oidc::Key::generate("k1");
    for (what, cred) in [
        ("expired", issuer.key().sign(&expired)),
        ("not yet valid", issuer.key().sign(&early)),
        ("other audience", issuer.key().sign(&audience)),
        ("unknown signer", stranger.sign(&issuer.claims("alice", &[]))),
        ("malformed", "a.b.c".to_owned()),
        ("garbage", "nonsense".to_owned()),
    ] {
        let r = get(cred, vec![], "up").await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(r.headers.contains_key("www-authenticate"), "{what}");
    }
    let none = https.get(&url("up"), &[]).await.unwrap();
    assert_eq!(none.status, 401);
    // a valid caller without a role: 403
    let r = get(issuer.token("mallory", &["nobody"]), vec![], "up").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(org_ids_since(&cortex, 0).len(), before, "nothing was forwarded for refused callers");

    // a selector role follows labels: bob (group sre) reads env=prod clusters
    let bob = issuer.token("bob", &["sre"]);
    let before = org_ids_since(&cortex, 0).len();
    assert_eq!(get(bob.clone(), vec![], "up").await.status, 200);
    assert_eq!(org_ids_since(&cortex, before), vec![vec![A.to_owned()]]);
    state
        .update_cluster(&ClusterId::new(B).unwrap(), |c| c.set_labels([("env".to_owned(), "prod".to_owned())].into()))
        .await
        .unwrap();
    let before = org_ids_since(&cortex, 0).len();
    let r = get(bob, vec![], "only_in_b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(org_ids_since(&cortex, before), vec![vec![format!("{A}|{B}")]]);
    assert!(r.text().contains("only_in_b") && r.text().contains(&format!("\"__tenant_id__\":\"{B}\"")), "{}", r.text());

    // key rotation at the issuer: a token signed with the new key is accepted after a refetch
    let fetches = issuer.fetches();
    let new_key = issuer.rotate("k2");
    let r = get(new_key.sign(&issuer.claims("alice", &[])), vec![], "up").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // and a token signed with the withdrawn key is refused
    assert_eq!(get(alice, vec![], "up").await.status, 401);
    assert!(issuer.fetches() > fetches, "the unknown key id made the gateway fetch the JWKS again");

    // the query proxy serves only the read API, only with GET/POST
    let r = https.get(&format!("https://localhost:{port}/prometheus/api/v1/admin/tsdb/snapshot"), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    // the Grafana datasource the controller renders points at this listener's path and port
    let mut spec = opni_metrics_kube::crd::MonitoringClusterSpec::default();
    spec.cortex.enabled = true;
    spec.grafana.enabled = true;
    let mut mc = opni_metrics_kube::crd::MonitoringCluster::new("opni", spec);
    mc.metadata.namespace = Some("opni-system".to_owned());
    mc.metadata.uid = Some("9c5a1d1e-0000-4000-8000-000000000001".to_owned());
    let objects = opni_metrics_kube::render::desired_objects(&mc, &Default::default()).unwrap();
    let ds = objects
        .iter()
        .find_map(|o| o.object.pointer("/spec/datasource/url").and_then(serde_json::Value::as_str))
        .expect("a datasource");
    let ds: http::Uri = ds.parse().unwrap();
    assert_eq!(ds.scheme_str(), Some("https"));
    let default_port = opni_metrics_gateway::Listen::default().query.port();
    assert_eq!(ds.port_u16(), Some(default_port), "the rendered port is the query listener's default");
    let grafana_url = format!("https://localhost:{port}{}/api/v1/query?query=up", ds.path());
    let alice = issuer.token("alice", &[]);
    let r = https.get(&grafana_url, &[("authorization".to_owned(), format!("Bearer {alice}"))]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"status\":\"success\""), "{}", r.text());

    // a revoked key stops working
    admin.revoke_api_key(rbac::Reference { name: "script".into() }).await.unwrap();
    let r = get(key, vec![], "up").await;
    assert_eq!(r.status, 401);

    // the gateway's own metrics count what the proxy answered
    let m = opni_metrics_tests::http::get(&format!("http://{}/metrics", gw.http_addr)).await.unwrap().text();
    assert!(m.contains("opni_gateway_query_requests_total{endpoint=\"query\",code=\"403\"}"), "{m}");
    assert!(m.contains("opni_gateway_reader_auth_failures_total{reason=\"token\"}"), "{m}");

    agent_a.shutdown().await;
    agent_b.shutdown().await;
    gw.shutdown().await;
}
