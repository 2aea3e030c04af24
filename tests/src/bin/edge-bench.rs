//! `edge-bench`: what strangers, a flooding tenant and slow clients cost the relays, measured
//! on the real release binaries (the figures of `docs/benchmarks.md`, "Hardened edges").
//!
//! One gateway (mutual TLS, a 64 MiB in-flight budget with the default 0.25 tenant share) in
//! front of an in-process upstream that answers 204 after `--upstream-delay-ms`, and two agents:
//! `steady` (tenant `steady`) and `flood` (tenant `flood`). Throughout every phase a steady
//! sender pushes 100 series through the `steady` agent every 50 ms; each phase reports what that
//! sender saw (non-2xx answers, p99 latency), the gateway's (or agent's) resident memory at its
//! peak during the phase, and what the attack got:
//!
//! 1. `connections`: N TCP connections from one address to the gateway's gRPC port that never
//!    send a byte. Over the address's handshake quota (or the listener's cap) they are closed at
//!    once, the others at the handshake timeout. Meanwhile a newcomer from another address
//!    (127.0.0.2, an agent restarting elsewhere) makes a TLS handshake: how long it took, or
//!    that it was refused.
//! 2. `streams`: one stranger (TLS without a client certificate) opens N `Push` streams at once.
//! 3. `big`: M strangers each send a 16 MiB `Push`.
//! 4. `flood`: the `flood` agent's tenant pushes ~1 MiB bodies flat out from F senders.
//! 5. `slow`: S connections each to the `steady` agent that send nothing, trickle a request line,
//!    or open HTTP/2 and go silent; the time until each is closed (header timeout, and keepalive
//!    interval + timeout for HTTP/2; all three set by `--header-timeout`).
//!
//! The load generator runs in this process on the same machine: where it is CPU-heavy (the
//! 16 MiB messages, the flood), the steady sender's latency includes its own contention.
// Benchmark harness: a panic is how a broken fixture reports itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opni_metrics_proto::remote::v1::PushRequest;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_tests::http::{get, metric_sum, push};
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::procstat::{Proc, rss_mib};
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::rw;
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Load tests of the hardened edges on the real binaries.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Silent TCP connections to the gateway.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Concurrent `Push` streams of one stranger.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Strangers sending 16 MiB each.
    #[arg(long, default_value_t = 64)]
    big: usize,
    /// Senders of the flooding tenant.
    #[arg(long, default_value_t = 128)]
    flood_senders: usize,
    /// Seconds the flood lasts.
    #[arg(long, default_value_t = 10)]
    flood_seconds: u64,
    /// Slow connections of each kind to the agent.
    #[arg(long, default_value_t = 300)]
    slow: usize,
    /// The agent's header read timeout, and its HTTP/2 keepalive interval and timeout, seconds.
    #[arg(long, default_value_t = 5)]
    header_timeout: u64,
    /// The gateway's TLS handshake timeout, seconds.
    #[arg(long, default_value_t = 5)]
    handshake_timeout: u64,
    /// The gateway's `grpc.maxHandshakesPerAddress` (its default is 64; a value at or above 256,
    /// the listener's cap, shows the gateway as it was without the quota).
    #[arg(long, default_value_t = 64)]
    max_handshakes_per_address: usize,
    /// How long the upstream takes to answer, ms.
    #[arg(long, default_value_t = 20)]
    upstream_delay_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// upstream

async fn upstream(listener: TcpListener, delay: Duration, per_tenant: Arc<Mutex<BTreeMap<String, u64>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let per_tenant = Arc::clone(&per_tenant);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let per_tenant = Arc::clone(&per_tenant);
                async move {
                    let tenant =
                        req.headers().get("x-scope-orgid").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                    let _ = req.into_body().collect().await;
                    tokio::time::sleep(delay).await;
                    *per_tenant.lock().unwrap().entry(tenant).or_default() += 1;
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::NO_CONTENT;
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// the steady sender and memory sampling

#[derive(Default)]
struct Seen {
    ok: u64,
    other: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

impl Seen {
    fn summary(&mut self) -> String {
        self.latencies_ms.sort_by(f64::total_cmp);
        let p99 = self.latencies_ms.get(((self.latencies_ms.len() as f64 - 1.0) * 0.99) as usize).copied();
        let other: u64 = self.other.values().sum();
        format!("steady: {} ok, {other} not 2xx {:?}, p99 {:.1} ms", self.ok, self.other, p99.unwrap_or(f64::NAN))
    }
}

/// Pushes through `url` every 50 ms until `stop`; returns what it saw.
fn steady(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !stop.load(Ordering::Acquire) {
            tick.tick().await;
            n += 1;
            let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            let body = rw::encode(&rw::request(n * 100, 100, ts, "steady_metric"));
            let t = Instant::now();
            match push(&url, body).await {
                Ok(r) if r.status.is_success() => seen.ok += 1,
                Ok(r) => *seen.other.entry(r.status.as_u16().to_string()).or_default() += 1,
                Err(e) => {
                    *seen.other.entry(format!("error {}", e.chars().take(40).collect::<String>())).or_default() += 1
                }
            }
            seen.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        seen
    })
}

/// Samples a process's RSS every 20 ms until `stop`; returns the peak, MiB.
fn rss_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Acquire) {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    })
}

/// A phase: the steady sender and the memory sampler run while `attack` runs.
async fn phase<F, Fut>(name: &str, steady_url: &str, watched: (&str, u32), attack: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let before = rss_mib(watched.1);
    let s = steady(steady_url.to_owned(), Arc::clone(&stop));
    let m = rss_peak(watched.1, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let outcome = attack().await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let mut seen = s.await.unwrap();
    let peak = m.await.unwrap();
    let after = rss_mib(watched.1);
    println!("== {name} ({:.1} s)", took.as_secs_f64());
    println!("   {outcome}");
    println!("   {} RSS: {before:.1} MiB before, {peak:.1} MiB peak, {after:.1} MiB after", watched.0);
    println!("   {}", seen.summary());
}

// ---------------------------------------------------------------------------------------------
// attacks

fn percentiles(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    format!("n={} p50 {:.3} s, p99 {:.3} s, max {:.3} s", v.len(), p(0.5), p(0.99), v[v.len() - 1])
}

/// Seconds until the peer closes `tcp` (at most `limit`; `None` if it stayed open).
async fn time_to_close(mut tcp: TcpStream, since: Instant, limit: Duration) -> Option<f64> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed().as_secs_f64(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A TLS handshake with the gateway from local address `from`: its duration, or why it failed.
async fn newcomer_handshake(from: &str, addr: &str, ca: &Path) -> String {
    let cfg = opni_metrics_transport::tls::anonymous_client_config(ca).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let since = Instant::now();
    let tcp = match opni_metrics_tests::prometheus::connect_from(from, addr.parse().unwrap()).await {
        Ok(t) => t,
        Err(e) => return format!("newcomer from {from}: connect failed: {e}"),
    };
    match tokio::time::timeout(Duration::from_secs(30), connector.connect(name, tcp)).await {
        Ok(Ok(_)) => format!("newcomer from {from}: handshake done in {:.1} ms", since.elapsed().as_secs_f64() * 1e3),
        Ok(Err(e)) => {
            format!("newcomer from {from}: refused after {:.1} ms ({e})", since.elapsed().as_secs_f64() * 1e3)
        }
        Err(_) => format!("newcomer from {from}: no handshake within 30 s"),
    }
}

async fn silent_connections(addr: String, n: usize, limit: Duration, ca: PathBuf) -> String {
    let mut tasks = Vec::with_capacity(n);
    let mut refused = 0;
    for _ in 0..n {
        match TcpStream::connect(&addr).await {
            Ok(tcp) => {
                let since = Instant::now();
                tasks.push(tokio::spawn(time_to_close(tcp, since, limit)));
            }
            Err(_) => refused += 1,
        }
    }
    // every silent connection is open or already closed: does a newcomer get in?
    let newcomer = newcomer_handshake("127.0.0.2", &addr, &ca).await;
    let (mut at_once, mut later, mut open) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Some(s) if s < 1.0 => at_once.push(s),
            Some(s) => later.push(s),
            None => open += 1,
        }
    }
    format!(
        "{n} silent connections: {refused} refused on connect; closed at once: {}; closed later: {}; still open after {:?}: {open}; {newcomer}",
        percentiles(at_once),
        percentiles(later),
        limit
    )
}

fn anonymous_channel(addr: &str, ca: &Path) -> tonic::transport::Channel {
    let cfg = opni_metrics_transport::tls::anonymous_client_config(ca).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(cfg));
    std::mem::forget(tx);
    tls_channel(addr, "localhost", rx, &ChannelOptions::default()).unwrap()
}

async fn stranger_pushes(channels: Vec<tonic::transport::Channel>, per_channel: usize, body_len: usize) -> String {
    let body = Bytes::from(vec![0u8; body_len]);
    let mut tasks = Vec::new();
    for ch in channels {
        for _ in 0..per_channel {
            let mut client = RemoteWriteClient::new(ch.clone()).max_encoding_message_size(64 << 20);
            let req = PushRequest {
                body: body.clone(),
                content_type: "application/x-protobuf".into(),
                content_encoding: "snappy".into(),
                remote_write_version: "0.1.0".into(),
            };
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let code = match client.push(req).await {
                    Ok(_) => "OK".to_owned(),
                    Err(e) => format!("{:?}", e.code()),
                };
                (code, t.elapsed().as_secs_f64())
            }));
        }
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut times = Vec::new();
    for t in tasks {
        let (code, s) = t.await.unwrap();
        *codes.entry(code).or_default() += 1;
        times.push(s);
    }
    format!("answers {codes:?}; time to answer {}", percentiles(times))
}

async fn flood(url: String, senders: usize, seconds: u64, gateway_metrics: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let peak_in_flight = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let gauge = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak_in_flight));
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                if let Ok(r) = get(&gateway_metrics).await {
                    let v = metric_sum(&r.text(), "opni_gateway_remote_write_in_flight_bytes").unwrap_or(0.0);
                    peak.fetch_max(v as u64, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // encoded once: the load generator shares the 2 cores with the relays
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..8u64).map(|i| Bytes::from(rw::encode(&rw::request(i << 14, 10_000, 1, "flood_metric")))).collect(),
    );
    let mut tasks = Vec::new();
    for i in 0..senders {
        let (url, statuses, bodies) = (url.clone(), Arc::clone(&statuses), Arc::clone(&bodies));
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while Instant::now() < deadline {
                n += 1;
                let body = bodies[n % bodies.len()].clone();
                let key = match push(&url, body).await {
                    Ok(r) => r.status.as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                *statuses.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Release);
    gauge.await.unwrap();
    let statuses = statuses.lock().unwrap().clone();
    format!(
        "flood of {senders} senders ({:.0} KiB bodies) answered {statuses:?}; gateway in-flight bytes peaked at {:.1} MiB",
        bodies[0].len() as f64 / 1024.0,
        peak_in_flight.load(Ordering::Acquire) as f64 / 1048576.0
    )
}

async fn slow_clients(addr: String, n: usize, limit: Duration) -> String {
    let mut kinds: Vec<(&str, Vec<tokio::task::JoinHandle<Option<f64>>>)> = Vec::new();
    for kind in ["silent", "trickle", "h2-silent"] {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let Ok(mut tcp) = TcpStream::connect(&addr).await else { continue };
            let since = Instant::now();
            match kind {
                "trickle" => {
                    let _ = tcp.write_all(b"POST /api/agent/push HTTP/1.1\r\n").await;
                }
                "h2-silent" => {
                    let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                }
                _ => {}
            }
            tasks.push(tokio::spawn(time_to_close(tcp, since, limit)));
        }
        kinds.push((kind, tasks));
    }
    let mut out = Vec::new();
    for (kind, tasks) in kinds {
        let (mut closed, mut open) = (Vec::new(), 0);
        for t in tasks {
            match t.await.unwrap() {
                Some(s) => closed.push(s),
                None => open += 1,
            }
        }
        out.push(format!("{kind}: closed {}, open {open}", percentiles(closed)));
    }
    out.join("; ")
}

// ---------------------------------------------------------------------------------------------
// the relays

async fn start_agent(args: &Args, dir: &Path, name: &'static str, certs: &CertFiles, grpc: u16) -> (Proc, u16) {
    let port = free_port();
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "dataDir: {}\ndriver: {{kind: none}}\nhttp: {{listen: 127.0.0.1:{port}, headerReadTimeout: {}s, keepaliveInterval: {}s, keepaliveTimeout: {}s}}\ngateway: {{address: 127.0.0.1:{grpc}, serverName: localhost, tls: {}}}\nremoteWrite: {{maxInFlightBytes: 268435456}}\nlog: {{level: warn}}\n",
            dir.join(name).display(),
            args.header_timeout,
            args.header_timeout,
            args.header_timeout,
            certs.tls_yaml()
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        name,
        &args.bin_dir.join("opni-metrics-agent"),
        &[format!("--config={}", config.display())],
        &[],
        dir,
    )
    .await
    .unwrap();
    p.wait_ok(&format!("http://127.0.0.1:{port}/readyz")).await.unwrap();
    (p, port)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = Pki::new(dir, "edge-bench");
    let gw_certs = pki.gateway("gateway");
    let per_tenant = Arc::new(Mutex::new(BTreeMap::new()));
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(upstream(up, Duration::from_millis(args.upstream_delay_ms), Arc::clone(&per_tenant)));

    let (grpc, ops, mgmt) = (free_port(), free_port(), free_port());
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {}\ngrpc: {{listen: 127.0.0.1:{grpc}, tls: {}, handshakeTimeout: {}s, maxHandshakesPerAddress: {}}}\nhttp: {{listen: 127.0.0.1:{ops}}}\nmanagement: {{listen: 127.0.0.1:{mgmt}}}\nquery: {{listen: 127.0.0.1:0}}\nupstream: {{url: http://{up_addr}/api/v1/push}}\nremoteWrite: {{maxInFlightBytes: 67108864}}\nlog: {{level: warn}}\n",
            dir.join("gw").display(),
            gw_certs.tls_yaml(),
            args.handshake_timeout,
            args.max_handshakes_per_address
        ),
    )
    .unwrap();
    let mut gw = Proc::spawn(
        "gateway",
        &args.bin_dir.join("opni-metrics-gateway"),
        &[format!("--config={}", config.display())],
        &[],
        dir,
    )
    .await
    .unwrap();
    gw.wait_ok(&format!("http://127.0.0.1:{ops}/readyz")).await.unwrap();
    for id in ["steady", "flood"] {
        opni_metrics_tests::registry::install_with_cli(
            &args.bin_dir,
            &format!("127.0.0.1:{mgmt}"),
            &dir.join("gw").join("admin.token"),
            id,
        )
        .await
        .unwrap();
    }
    let (steady_agent, steady_port) = start_agent(&args, dir, "steady", &pki.agent("steady", "steady"), grpc).await;
    let (flood_agent, flood_port) = start_agent(&args, dir, "flood", &pki.agent("flood", "flood"), grpc).await;
    let steady_url = format!("http://127.0.0.1:{steady_port}/api/agent/push");
    let gw_watch = ("gateway", gw.pid);
    let grpc_addr = format!("127.0.0.1:{grpc}");
    println!(
        "edge-bench: gateway budget 64 MiB (tenant share 0.25), upstream delay {} ms, handshake timeout {} s, handshakes per address {}, agent header timeout {} s",
        args.upstream_delay_ms, args.handshake_timeout, args.max_handshakes_per_address, args.header_timeout
    );
    let limit = Duration::from_secs(args.handshake_timeout.max(args.header_timeout) * 4);

    phase("baseline", &steady_url, gw_watch, || async { "nothing".to_owned() }).await;
    phase("connections", &steady_url, gw_watch, || {
        silent_connections(grpc_addr.clone(), args.connections, limit, pki.ca_path().to_owned())
    })
    .await;
    let ch = anonymous_channel(&grpc_addr, pki.ca_path());
    phase("streams", &steady_url, gw_watch, || stranger_pushes(vec![ch], args.streams, 64)).await;
    let channels = (0..args.big).map(|_| anonymous_channel(&grpc_addr, pki.ca_path())).collect();
    phase("big", &steady_url, gw_watch, || stranger_pushes(channels, 1, 16 << 20)).await;
    let flood_url = format!("http://127.0.0.1:{flood_port}/api/agent/push");
    let metrics = format!("http://127.0.0.1:{ops}/metrics");
    phase("flood", &steady_url, gw_watch, || flood(flood_url, args.flood_senders, args.flood_seconds, metrics)).await;
    let agent_watch = ("steady agent", steady_agent.pid);
    phase("slow", &steady_url, agent_watch, || slow_clients(format!("127.0.0.1:{steady_port}"), args.slow, limit))
        .await;
    println!("upstream requests per tenant: {:?}", per_tenant.lock().unwrap());
    for p in [flood_agent, steady_agent, gw] {
        p.stop().await;
    }
}
