//! The in-flight budgets hold at any load and are fair: one tenant flooding a slow upstream is
//! refused fast once over its share, while another tenant pushing steadily sees no 5xx; when the
//! flood ends, nothing is left held.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLUSTER, WAIT, agent_config, body, certs, gateway_config, start_agent, start_gateway};
use opni_metrics_tests::http::{eventually, push};
use opni_metrics_tests::upstream::{Behaviour, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_cannot_starve_a_steady_one() {
    let certs = certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    // the flooding tenant's upstream never answers (its requests hold their budget until the
    // upstream deadline)
    upstream.set_for(CLUSTER, Behaviour::Hang);
    let mut gc = gateway_config(&certs, &upstream.url());
    gc.remote_write.max_in_flight_bytes = 64 << 20;
    gc.remote_write.tenant_share = 0.5;
    gc.remote_write.max_requests_per_tenant = 4;
    // longer than the agent's request deadline (5 s): the held pushes end by cancellation
    gc.upstream.timeout = opni_metrics_core::duration::PromDuration::from_secs(20);
    let store = opni_metrics_tests::registry::store_with(&[CLUSTER, "steady"]).await;
    let gw = start_gateway(gc.validate().unwrap().settings, store).await;
    let flooder = start_agent(&agent_config(&certs.agent, &gw.grpc_addr.to_string())).await;
    let steady_cert = certs.pki.agent("steady", "steady");
    let steady = start_agent(&agent_config(&steady_cert, &gw.grpc_addr.to_string())).await;

    // 12 concurrent pushes of the flooder: 4 are held upstream, the rest are refused at once
    let url = format!("http://{}/api/agent/push", flooder.addr);
    let flood: Vec<_> = (0..12).map(|_| tokio::spawn(push_owned(url.clone()))).collect();
    let metrics = format!("http://{}/metrics", gw.http_addr);
    eventually(WAIT, "the flooder is over its budget", || async {
        let m = opni_metrics_tests::http::get(&metrics).await?.text();
        if m.contains("opni_gateway_remote_write_budget_refusals_total{reason=\"tenant_requests\"} 8") {
            Ok(())
        } else {
            Err(m.lines().filter(|l| l.contains("budget")).collect::<Vec<_>>().join("\n"))
        }
    })
    .await
    .unwrap();
    // meanwhile the steady tenant is served every time
    let steady_url = format!("http://{}/api/agent/push", steady.addr);
    for _ in 0..10 {
        let r = push(&steady_url, body(5)).await.unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let statuses: Vec<u16> = futures::future::join_all(flood).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 8, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        4,
        "the held ones hit the agent's deadline: {statuses:?}"
    );
    // the agent gave up on them, cancelling the calls: nothing is left held at the gateway
    eventually(WAIT, "the cancelled pushes give their budget back", || async {
        let m = opni_metrics_tests::http::get(&metrics).await?.text();
        if m.contains("opni_gateway_remote_write_in_flight_bytes 0") { Ok(()) } else { Err(m) }
    })
    .await
    .unwrap();
    // and the flooder is served again once its pushes are answered
    upstream.set_for(CLUSTER, Behaviour::status(204));
    assert_eq!(push(&url, body(5)).await.unwrap().status, 204);

    flooder.shutdown().await;
    steady.shutdown().await;
    gw.shutdown().await;
}

async fn push_owned(url: String) -> u16 {
    push(&url, body(5)).await.unwrap().status.as_u16()
}
