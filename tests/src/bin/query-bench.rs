//! `query-bench`: what the gateway's query proxy adds to a query, against the same real
//! Prometheus in the same run.
//!
//! A real Prometheus receiver holds `--series` series (ten labels each, a sample every 15 s for
//! the last hour). Two scenarios run the same query mix with C concurrent clients, each
//! sending one query after another for `--duration`:
//!
//! - `direct`: client → Prometheus `/api/v1/query`;
//! - `proxied`: client → gateway query proxy `/prometheus/api/v1/query` (API key authenticated,
//!   role binding resolved against the registry, tenant header set) → Prometheus.
//!
//! The query mix: `small` (`count(bench_metric)`, a one-sample answer) and `large`
//! (`bench_metric`, every series). Reported per scenario and query: queries/s, latency p50 and
//! p99, and the CPU per query of the gateway (its runtime's threads, `qbgw-*`) and of
//! Prometheus (its process). The added latency and gateway CPU per query are the proxy's cost.
// Benchmark harness: a panic is how a broken fixture reports itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{ApiKeyRecord, Role, RoleBinding, Subject};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_gateway::{Gateway, GatewaySettings, Listen};
use opni_metrics_tests::procstat::{clock_ticks, process_cpu, threads_cpu};
use opni_metrics_tests::prometheus::Prometheus;

/// Measures the query proxy's added latency and CPU per query against direct queries.
#[derive(Debug, Parser)]
struct Args {
    /// Series in the receiver.
    #[arg(long, default_value_t = 2000)]
    series: usize,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    clients: Vec<usize>,
    /// Seconds per scenario and query.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Outcome {
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    seconds: f64,
    bytes: usize,
}

async fn load(url: String, auth: Option<String>, clients: usize, duration: Duration) -> Outcome {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http::<Full<Bytes>>();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let mut b = http::Request::get(&url);
                if let Some(a) = &auth {
                    b = b.header("authorization", a.as_str());
                }
                let t = Instant::now();
                let resp = client.request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                bytes += resp.into_body().collect().await.unwrap().to_bytes().len();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, bytes)
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (l, b) = t.await.unwrap();
        all.extend(l);
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Outcome { queries: all.len(), p50_ms: percentile(&all, 0.5), p99_ms: percentile(&all, 0.99), seconds, bytes }
}

fn main() {
    let args = Args::parse();
    let tick = clock_ticks();
    let gw_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("qbgw").enable_all().build().unwrap();
    let client_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("qbcl").enable_all().build().unwrap();

    let receiver = client_rt.block_on(Prometheus::receiver()).unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    client_rt.block_on(async {
        // an hour of samples every 15 s, oldest first, in requests of at most 500 series
        for step in (0..240).rev() {
            let ts = now_ms - step * 15_000;
            for first in (0..args.series).step_by(500) {
                let n = (args.series - first).min(500);
                let body = opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(
                    first as u64,
                    n,
                    ts,
                    "bench_metric",
                ));
                let r = opni_metrics_tests::http::push(&receiver.write_url(), body).await.unwrap();
                assert!(r.status.is_success(), "{r:?}");
            }
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let (gateway, query_addr, key) = gw_rt.block_on(async {
        let mut s = GatewaySettings::default();
        s.listen = Listen::ephemeral_loopback();
        s.data_dir = dir.path().to_owned();
        s.upstream.url = format!("{}/api/v1/write", receiver.url()).parse().unwrap();
        s.upstream.query_url = Some(receiver.url().parse().unwrap());
        s.upstream.ready_path = "/-/ready".into();
        let mut gw = Gateway::builder(s).store(Arc::new(MemoryStore::default())).build().await.unwrap();
        let addrs = gw.bind_and_serve().await.unwrap();
        let state = gw.state().clone();
        let id = ClusterId::new("bench").unwrap();
        state.create_cluster(&Cluster::new(id.clone())).await.unwrap();
        state.create_role(&Role::new("bench", [id], None).unwrap()).await.unwrap();
        state
            .create_role_binding(&RoleBinding::new("bench", "bench", [Subject::user("apikey:bench").unwrap()]).unwrap())
            .await
            .unwrap();
        let (record, key) =
            ApiKeyRecord::create("bench", None, [], [7; 8], [9; 32], opni_metrics_core::Timestamp(0)).unwrap();
        state.create_api_key(&record).await.unwrap();
        (gw, addrs.query, key)
    });

    let prom_pid = receiver.pid().unwrap();
    println!(
        "query-bench: {} series, {} s per run, Prometheus {} at {}",
        args.series,
        args.duration,
        prom_pid,
        receiver.url()
    );
    println!(
        "{:<8} {:<6} {:>3} {:>9} {:>9} {:>9} {:>10} {:>12} {:>12}",
        "scenario", "query", "C", "q/s", "p50 ms", "p99 ms", "KiB/q", "gw CPU µs/q", "prom CPU µs/q"
    );
    for &clients in &args.clients {
        for (qname, q) in [("small", "count(bench_metric)"), ("large", "bench_metric")] {
            let enc = opni_metrics_tests::prometheus::urlencode(q);
            let mut direct_p50 = 0.0;
            for scenario in ["direct", "proxied"] {
                let (url, auth) = match scenario {
                    "direct" => (format!("{}/api/v1/query?query={enc}", receiver.url()), None),
                    _ => (
                        format!("http://{query_addr}/prometheus/api/v1/query?query={enc}"),
                        Some(format!("Bearer {key}")),
                    ),
                };
                // warm up the connection pools
                client_rt.block_on(load(url.clone(), auth.clone(), clients, Duration::from_millis(500)));
                let (gw0, p0) = (threads_cpu("qbgw", tick), process_cpu(prom_pid, tick));
                let o = client_rt.block_on(load(url, auth, clients, Duration::from_secs(args.duration)));
                let (gw1, p1) = (threads_cpu("qbgw", tick), process_cpu(prom_pid, tick));
                let per = |cpu: f64| cpu / o.queries as f64 * 1e6;
                println!(
                    "{scenario:<8} {qname:<6} {clients:>3} {:>9.1} {:>9.2} {:>9.2} {:>10.1} {:>12.0} {:>12.0}",
                    o.queries as f64 / o.seconds,
                    o.p50_ms,
                    o.p99_ms,
                    o.bytes as f64 / o.queries as f64 / 1024.0,
                    per(gw1 - gw0),
                    per(p1 - p0)
                );
                if scenario == "direct" {
                    direct_p50 = o.p50_ms;
                } else {
                    println!("{:<8} {qname:<6} {clients:>3} added p50 latency {:.2} ms", "", o.p50_ms - direct_p50);
                }
            }
        }
    }
    gw_rt.block_on(gateway.shutdown());
}
