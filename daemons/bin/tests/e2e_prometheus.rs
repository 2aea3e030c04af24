//! End to end with real Prometheus processes: an agent-mode Prometheus scrapes a target and
//! remote-writes through the agent and the gateway (over mutual TLS) into a real Prometheus
//! remote-write receiver, with a recording proxy in front of it that checks tenants and can
//! inject faults. The scrape target counts its scrapes, so a receiver holding every value
//! 1..=max has lost nothing, whatever the timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLUSTER, Daemon, Stack, WAIT, certs};
use opni_metrics_tests::http::{eventually, metric_sum};
use opni_metrics_tests::prometheus::{Job, Prometheus, free_port};
use opni_metrics_tests::target::{CounterTarget, contiguous};
use opni_metrics_tests::upstream::{Behaviour, Upstream};

const COUNTER: &str = "test_scrapes_total{job=\"counter\"}";

/// Waits until the receiver holds the counter up to at least `n`, then checks no value is
/// missing (but for scrapes Prometheus itself gave up on, which the receiver's `up` samples
/// show); returns the max.
async fn received_without_gaps(receiver: &Prometheus, n: u64) -> u64 {
    let values = eventually(WAIT, "receiver caught up", || async {
        let values = receiver.raw_values(COUNTER).await?;
        let max = values.iter().copied().filter(|x| x.is_finite()).fold(0.0, f64::max) as u64;
        if max >= n { Ok(values) } else { Err(format!("receiver has up to {max}, waiting for {n}")) }
    })
    .await
    .unwrap();
    let up = receiver.raw_values("up{job=\"counter\"}").await.unwrap();
    contiguous(&values, up.iter().filter(|u| **u == 0.0).count()).unwrap()
}

/// Prometheus gave up on nothing.
async fn sender_lost_nothing(sender: &Prometheus) {
    let m = sender.own_metrics().await.unwrap();
    for name in ["prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_dropped_total"] {
        assert_eq!(metric_sum(&m, name).unwrap_or(0.0), 0.0, "{name}\n{}", sender.log_tail());
    }
}

/// Waits until `target` has been scraped `more` more times.
async fn scrapes_pass(target: &CounterTarget, more: u64) -> u64 {
    let goal = target.scrapes() + more;
    eventually(WAIT, "scrapes", || async {
        let s = target.scrapes();
        if s >= goal { Ok(s) } else { Err(format!("{s} scrapes")) }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_arrive_under_the_certificates_tenant() {
    let receiver = Prometheus::receiver().await.unwrap();
    let stack = Stack::start(Behaviour::Proxy(receiver.write_url())).await;
    let target = CounterTarget::start().await;
    let gw_http = stack.gateway.as_ref().unwrap().http_addr.to_string();
    let jobs = [
        Job { name: "counter".into(), targets: vec![target.addr.to_string()] },
        Job { name: "opni-agent".into(), targets: vec![stack.agent.addr.to_string()] },
        Job { name: "opni-gateway".into(), targets: vec![gw_http] },
    ];
    let sender = Prometheus::agent(&jobs, "1s", &stack.push_url()).await.unwrap();
    let max = received_without_gaps(&receiver, 5).await;
    assert!(max >= 5);
    for job in ["opni-agent", "opni-gateway"] {
        let up = receiver.query(&format!("up{{job=\"{job}\"}}")).await.unwrap();
        assert_eq!(up.len(), 1, "{job} scraped and relayed");
    }
    let agent_series = receiver.query("opni_agent_remote_write_requests_total").await.unwrap();
    assert!(!agent_series.is_empty(), "the agent's own metrics made the trip");
    let reqs = stack.upstream.requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.tenants == [CLUSTER]), "upstream saw only the certificate's tenant");
    sender_lost_nothing(&sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_lose_no_sample() {
    let receiver = Prometheus::receiver().await.unwrap();
    let stack = Stack::start(Behaviour::Proxy(receiver.write_url())).await;
    let target = CounterTarget::start().await;
    let jobs = [Job { name: "counter".into(), targets: vec![target.addr.to_string()] }];
    let sender = Prometheus::agent(&jobs, "1s", &stack.push_url()).await.unwrap();
    received_without_gaps(&receiver, 3).await;
    let faults = [
        Behaviour::status(500),
        Behaviour::status(503),
        Behaviour::Answer { status: 429, headers: vec![("Retry-After".into(), "1".into())], body: "slow down".into() },
        Behaviour::status(401),
        Behaviour::Hang,
    ];
    for fault in faults {
        stack.upstream.set(fault);
        scrapes_pass(&target, 2).await;
    }
    stack.upstream.set(Behaviour::Proxy(receiver.write_url()));
    let healed_at = target.scrapes();
    let refused = stack.upstream.requests().iter().filter(|r| r.status >= 400).count();
    assert!(refused > 0, "the faults were exercised");
    received_without_gaps(&receiver, healed_at).await;
    sender_lost_nothing(&sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_and_restarted_loses_no_sample() {
    let receiver = Prometheus::receiver().await.unwrap();
    let certs = certs();
    let (grpc, http) = (free_port(), free_port());
    let gateway = Daemon::gateway(&certs, grpc, http, &receiver.write_url()).await;
    let agent_port = free_port();
    let agent = Daemon::agent(&certs, agent_port, &format!("127.0.0.1:{grpc}")).await;
    let target = CounterTarget::start().await;
    let jobs = [Job { name: "counter".into(), targets: vec![target.addr.to_string()] }];
    let sender =
        Prometheus::agent(&jobs, "1s", &format!("http://127.0.0.1:{agent_port}/api/agent/push")).await.unwrap();
    received_without_gaps(&receiver, 3).await;

    gateway.kill().await;
    scrapes_pass(&target, 3).await;
    let _gateway = Daemon::gateway(&certs, grpc, http, &receiver.write_url()).await;
    let healed_at = target.scrapes();
    received_without_gaps(&receiver, healed_at).await;
    sender_lost_nothing(&sender).await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarted_loses_no_sample() {
    let receiver = Prometheus::receiver().await.unwrap();
    let upstream = Upstream::start(Behaviour::Proxy(receiver.write_url())).await;
    let certs = certs();
    let (grpc, http) = (free_port(), free_port());
    let _gateway = Daemon::gateway(&certs, grpc, http, &upstream.url()).await;
    let agent_port = free_port();
    let agent = Daemon::agent(&certs, agent_port, &format!("127.0.0.1:{grpc}")).await;
    let target = CounterTarget::start().await;
    let jobs = [Job { name: "counter".into(), targets: vec![target.addr.to_string()] }];
    let sender =
        Prometheus::agent(&jobs, "1s", &format!("http://127.0.0.1:{agent_port}/api/agent/push")).await.unwrap();
    received_without_gaps(&receiver, 3).await;

    let status = agent.terminate().await;
    assert!(status.success(), "SIGTERM drains and exits cleanly: {status}");
    scrapes_pass(&target, 3).await;
    let agent = Daemon::agent(&certs, agent_port, &format!("127.0.0.1:{grpc}")).await;
    let healed_at = target.scrapes();
    received_without_gaps(&receiver, healed_at).await;
    sender_lost_nothing(&sender).await;
    assert!(upstream.requests().iter().all(|r| r.tenants == [CLUSTER]));

    // and once more, killed without a chance to drain
    agent.kill().await;
    scrapes_pass(&target, 2).await;
    let _agent = Daemon::agent(&certs, agent_port, &format!("127.0.0.1:{grpc}")).await;
    let healed_at = target.scrapes();
    received_without_gaps(&receiver, healed_at).await;
    sender_lost_nothing(&sender).await;
}
