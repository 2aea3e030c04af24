//! `rw-bench`: the end-to-end remote-write benchmark of DESIGN §8.
//!
//! One process run measures, for each requested run (`saturation/4`, `rate/4`, …), up to three
//! scenarios against the same receiver:
//!
//! - `direct`: senders → receiver;
//! - `relay`: senders → `opni-metrics-agent` → (gRPC, mutual TLS) → `opni-metrics-gateway` →
//!   receiver, the real release binaries with certificates generated into a temporary directory;
//! - `vmagent`: senders → `vmagent` → receiver, when `vmagent` is installed.
//!
//! The load generator runs C concurrent senders, each sending pre-encoded remote-write 1.0
//! requests (500 series of ten labels with one sample each by default, ≈ 52 KiB snappy) one
//! after another, like Prometheus's shards: flat out (`saturation`) or at a target rate spread
//! over the senders (`rate`). Every scenario is bounded by time (warm-up + duration) and
//! optionally by a request count per sender.
//!
//! The default receiver is in this process: a hyper server that decompresses every body and walks
//! the protobuf wire format (no allocation per sample) to count samples exactly, then answers
//! 204. Exact counts give "samples lost = acknowledged to senders − arrived at the receiver".
//! `--receiver prometheus` uses a real `prometheus --web.enable-remote-write-receiver` instead
//! (counted with `prometheus_tsdb_head_samples_appended_total`; senders then encode each request
//! with fresh timestamps so nothing is a duplicate).
//!
//! CPU is read from `/proc`: whole processes for agent, gateway, vmagent (and a Prometheus
//! receiver); for the counting receiver and the load generator, the threads of their own tokio
//! runtimes (`rwb-rx-*`, `rwb-gen-*`) in this process. Peak RSS is each relay's `VmHWM`; every
//! scenario starts fresh relay processes.
// Benchmark harness: a panic is how a broken fixture reports itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opni_metrics_tests::http::{get, metric_sum};
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::procstat::{Proc, clock_ticks, peak_rss_mib, threads_cpu};
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::rw;
use tokio::net::TcpListener;

/// End-to-end remote-write benchmark: direct vs agent→gateway vs vmagent, one receiver.
#[derive(Debug, Clone, Parser)]
#[command(name = "rw-bench", long_about = None, args_override_self = true)]
struct Args {
    /// Runs, comma-separated MODE/SENDERS: MODE `saturation` (no rate limit) or `rate`
    /// (--rate samples/s spread over the senders), e.g. saturation/4,saturation/32,rate/4.
    #[arg(long, value_delimiter = ',', default_value = "saturation/4", action = clap::ArgAction::Set)]
    runs: Vec<RunSpec>,
    /// Scenarios of every run, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "direct,relay,vmagent", action = clap::ArgAction::Set)]
    scenarios: Vec<Scenario>,
    /// Target rate of `rate` runs, samples per second over all senders.
    #[arg(long, default_value_t = 250_000)]
    rate: u64,
    /// Samples per request (series with eleven labels and one sample each).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Leave out the high-entropy `container_id` label (64 hex digits, as kube-state-metrics and
    /// cAdvisor series carry): bodies then compress about 2.7× better (≈ 19 KiB instead of ≈ 52
    /// KiB for 500 samples), which flatters every per-byte cost.
    #[arg(long)]
    compressible: bool,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per scenario (load applied, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Most requests per sender per scenario, warm-up included (0: bounded by time only).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// The receiver every scenario writes to.
    #[arg(long, value_enum, default_value = "counting")]
    receiver: ReceiverKind,
    /// Counting receiver: wait this long before answering each request (DESIGN §8's concurrency
    /// target uses an upstream answering after 20 ms).
    #[arg(long, default_value_t = 0)]
    receiver_delay_ms: u64,
    /// Worker threads of the counting receiver's runtime and of the load generator's, each.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Directory holding the `opni-metrics-agent` and `opni-metrics-gateway` binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Extra environment for the agent and gateway processes, KEY=VALUE, repeatable (e.g.
    /// TOKIO_WORKER_THREADS=1 to try a one-thread runtime without rebuilding).
    #[arg(long, value_parser = parse_env)]
    relay_env: Vec<(String, String)>,
    /// One more agent→gateway scenario per variant, run right after the plain one in every run, so
    /// that a change is measured before and after in the same run. `NAME[@BIN_DIR][=ITEM;ITEM…]`,
    /// repeatable: BIN_DIR holds other binaries (e.g. a build of the previous commit); each ITEM
    /// is `agent:`, `gateway:` or `both:` followed by a flag (`--x=y`) or an environment variable
    /// (`KEY=VALUE`) for those processes. Example:
    /// `--variant 'agent1=agent:TOKIO_WORKER_THREADS=1' --variant 'before@/tmp/before'`.
    #[arg(long, value_parser = parse_variant)]
    variant: Vec<Variant>,
    /// The vmagent binary (the scenario is skipped when it cannot be found).
    #[arg(long, default_value = "vmagent")]
    vmagent: String,
    /// The prometheus binary, for --receiver prometheus.
    #[arg(long, default_value = "prometheus")]
    prometheus: String,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the temporary directory (certificates, daemon logs) and print its path.
    #[arg(long)]
    keep_tmp: bool,
}

/// A named change to the agent→gateway scenario (see `--variant`).
#[derive(Debug, Clone, Default)]
struct Variant {
    name: String,
    bin_dir: Option<PathBuf>,
    agent_args: Vec<String>,
    agent_env: Vec<(String, String)>,
    gateway_args: Vec<String>,
    gateway_env: Vec<(String, String)>,
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    let (head, items) = s.split_once('=').unwrap_or((s, ""));
    let (name, bin_dir) = match head.split_once('@') {
        Some((n, d)) => (n, Some(PathBuf::from(d))),
        None => (head, None),
    };
    if name.is_empty() {
        return Err(format!("{s:?}: a variant needs a name"));
    }
    let mut v = Variant { name: name.to_owned(), bin_dir, ..Variant::default() };
    for item in items.split(';').filter(|i| !i.is_empty()) {
        let (who, what) =
            item.split_once(':').ok_or_else(|| format!("{item:?}: expected agent:, gateway: or both:"))?;
        let targets: &[bool] = match who {
            "agent" => &[true],
            "gateway" => &[false],
            "both" => &[true, false],
            _ => return Err(format!("{item:?}: expected agent:, gateway: or both:")),
        };
        for &agent in targets {
            let (args, env) =
                if agent { (&mut v.agent_args, &mut v.agent_env) } else { (&mut v.gateway_args, &mut v.gateway_env) };
            if what.starts_with("--") {
                args.push(what.to_owned());
            } else {
                env.push(parse_env(what)?);
            }
        }
    }
    Ok(v)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Senders → receiver.
    Direct,
    /// Senders → agent → gateway → receiver.
    Relay,
    /// Senders → vmagent → receiver.
    Vmagent,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "agent→gateway",
            Self::Vmagent => "vmagent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReceiverKind {
    /// The in-process counting receiver.
    Counting,
    /// A real Prometheus with the remote-write receiver enabled.
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Saturation,
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunSpec {
    mode: Mode,
    senders: usize,
}

impl FromStr for RunSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (m, c) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected MODE/SENDERS"))?;
        let mode = match m {
            "saturation" | "sat" => Mode::Saturation,
            "rate" => Mode::Rate,
            _ => return Err(format!("{m:?}: mode is saturation or rate")),
        };
        let senders = c.parse::<usize>().map_err(|e| format!("{c:?}: {e}"))?;
        if senders == 0 || senders > 1024 {
            return Err("senders must be 1..=1024".into());
        }
        Ok(Self { mode, senders })
    }
}

// ---------------------------------------------------------------------------------------------
// the counting receiver

#[derive(Debug, Default)]
struct RxCounters {
    requests: AtomicU64,
    samples: AtomicU64,
    bad: AtomicU64,
}

thread_local! {
    static DECOMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

/// Calls `f(field, payload)` for every length-delimited field of `buf`, skipping the others.
fn each_len_field(buf: &[u8], mut f: impl FnMut(u64, &[u8]) -> Result<(), &'static str>) -> Result<(), &'static str> {
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        match tag & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos.checked_add(len).filter(|&e| e <= buf.len()).ok_or("field runs past the end")?;
                f(tag >> 3, &buf[pos..end])?;
                pos = end;
            }
            5 => pos += 4,
            _ => return Err("unsupported wire type"),
        }
        if pos > buf.len() {
            return Err("fixed field runs past the end");
        }
    }
    Ok(())
}

/// Samples in a snappy-compressed `prometheus.WriteRequest`: `timeseries` (1) → `samples` (2).
fn count_samples(body: &[u8]) -> Result<u64, &'static str> {
    if body.is_empty() {
        return Ok(0);
    }
    let len = snap::raw::decompress_len(body).map_err(|_| "bad snappy preamble")?;
    if len > 64 << 20 {
        return Err("declared length over 64 MiB");
    }
    DECOMPRESSED.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let n = snap::raw::Decoder::new().decompress(body, &mut buf[..len]).map_err(|_| "corrupt snappy")?;
        let mut samples = 0u64;
        each_len_field(&buf[..n], |field, series| {
            if field == 1 {
                each_len_field(series, |f, _| {
                    samples += u64::from(f == 2);
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(samples)
    })
}

async fn rx_handle(req: Request<Incoming>, c: Arc<RxCounters>, delay: Duration) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::POST {
        return reply(StatusCode::OK, "counting receiver\n");
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "body read failed\n"),
    };
    match count_samples(&body) {
        Ok(n) => {
            c.requests.fetch_add(1, Ordering::Relaxed);
            c.samples.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            c.bad.fetch_add(1, Ordering::Relaxed);
            eprintln!("receiver: refusing a body: {e}");
            return reply(StatusCode::BAD_REQUEST, "bad body\n");
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    reply(StatusCode::NO_CONTENT, "")
}

async fn rx_serve(listener: TcpListener, c: Arc<RxCounters>, delay: Duration) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("receiver: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let c = Arc::clone(&c);
                async move { Ok::<_, Infallible>(rx_handle(req, c, delay).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::var("PATH").ok()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// the receiver as the scenarios see it

enum Receiver {
    Counting { port: u16, counters: Arc<RxCounters> },
    Prometheus { port: u16, proc: Box<Proc> },
}

impl Receiver {
    fn write_url(&self) -> String {
        match self {
            Self::Counting { port, .. } | Self::Prometheus { port, .. } => {
                format!("http://127.0.0.1:{port}/api/v1/write")
            }
        }
    }

    async fn samples(&self) -> u64 {
        match self {
            Self::Counting { counters, .. } => counters.samples.load(Ordering::Relaxed),
            Self::Prometheus { port, .. } => {
                let text = get(&format!("http://127.0.0.1:{port}/metrics")).await.map(|r| r.text()).unwrap_or_default();
                metric_sum(&text, "prometheus_tsdb_head_samples_appended_total").unwrap_or(0.0) as u64
            }
        }
    }

    fn cpu(&self, tick: f64) -> f64 {
        match self {
            Self::Counting { .. } => threads_cpu("rwb-rx", tick),
            Self::Prometheus { proc, .. } => proc.cpu(tick),
        }
    }

    fn peak_rss(&self) -> Option<f64> {
        match self {
            Self::Counting { .. } => None,
            Self::Prometheus { proc, .. } => Some(peak_rss_mib(proc.pid)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// load generation

/// Where a sender's request bodies come from.
#[derive(Clone)]
enum Bodies {
    /// Pre-encoded bodies, cycled through.
    Pool(Arc<Vec<Bytes>>),
    /// Encoded per request with a fresh timestamp (for a real TSDB receiver, which would drop
    /// repeated samples as duplicates): series `[base, base + slots × samples)`.
    Fresh { base: u64, slots: u64, samples: usize, ts0: i64, compressible: bool },
}

/// splitmix64: deterministic pseudo-random label values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One encoded request: `rw::request`'s ten labels per series plus, unless `compressible`, a
/// `container_id` of 64 pseudo-random hex digits.
fn body(first: u64, samples: usize, ts: i64, compressible: bool) -> Bytes {
    let mut req = rw::request(first, samples, ts, "rwbench_load");
    if !compressible {
        for (id, series) in (first..).zip(req.timeseries.iter_mut()) {
            let hex: String = (0..4).map(|j| format!("{:016x}", mix(id * 4 + j))).collect();
            // labels stay sorted by name: after `container`
            series.labels.insert(2, rw::Label { name: "container_id".into(), value: format!("containerd://{hex}") });
        }
    }
    Bytes::from(rw::encode(&req))
}

impl Bodies {
    fn get(&self, sender: usize, k: u64) -> Bytes {
        match self {
            Self::Pool(pool) => {
                let per = (pool.len() / POOL_PER_SENDER).max(1);
                let idx = (sender % per) * POOL_PER_SENDER + (k as usize % POOL_PER_SENDER);
                pool[idx % pool.len()].clone()
            }
            Self::Fresh { base, slots, samples, ts0, compressible } => {
                let first = base + (k % slots) * (*samples as u64);
                let ts = ts0 + i64::try_from(k).unwrap_or(i64::MAX);
                body(first, *samples, ts, *compressible)
            }
        }
    }
}

const POOL_PER_SENDER: usize = 4;

struct Load {
    url: String,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    /// Per-sender gap between requests in `rate` mode.
    interval: Option<Duration>,
    senders: usize,
    samples: u64,
    max_requests: u64,
}

#[derive(Debug, Default)]
struct SenderStats {
    /// Latencies (µs) of requests started in the measured window.
    latencies_us: Vec<u32>,
    /// 2xx requests and their samples started in the measured window.
    ok_requests: u64,
    ok_samples: u64,
    /// Samples acknowledged (2xx) over the whole scenario, warm-up included.
    acked_samples_total: u64,
    /// Non-2xx answers over the whole scenario, by status.
    statuses: BTreeMap<u16, u64>,
    /// Transport errors and timeouts over the whole scenario.
    errors: u64,
    /// Times a rate-mode sender fell more than ten intervals behind its schedule.
    behind: u64,
}

async fn sender(i: usize, load: Arc<Load>, bodies: Bodies) -> SenderStats {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(2).build_http();
    let mut stats = SenderStats::default();
    let mut next = load.start + load.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / load.senders as f64));
    tokio::time::sleep_until(next.into()).await;
    let mut k = 0u64;
    loop {
        if let Some(iv) = load.interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
            let now = Instant::now();
            if now > next + iv * 10 {
                stats.behind += u64::from(now >= load.measure_start);
                next = now;
            }
        }
        if Instant::now() >= load.end || (load.max_requests > 0 && k >= load.max_requests) {
            break;
        }
        let body = bodies.get(i, k);
        k += 1;
        let req = Request::post(load.url.as_str())
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header("user-agent", "rw-bench")
            .body(Full::new(body))
            .expect("request");
        let t0 = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            resp.into_body().collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(status)
        })
        .await;
        let elapsed = t0.elapsed();
        let measured = t0 >= load.measure_start;
        match res {
            Ok(Ok(status)) if status.is_success() => {
                stats.acked_samples_total += load.samples;
                if measured {
                    stats.ok_requests += 1;
                    stats.ok_samples += load.samples;
                    stats.latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok(Ok(status)) => {
                *stats.statuses.entry(status.as_u16()).or_default() += 1;
                if measured {
                    stats.latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok(Err(_)) | Err(_) => {
                stats.errors += 1;
                // a refused connection must not become a busy loop
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}

// ---------------------------------------------------------------------------------------------
// one scenario

struct Ctx {
    args: Args,
    tick: f64,
    dir: PathBuf,
    gateway_certs: CertFiles,
    agent_certs: CertFiles,
    receiver: Receiver,
    pool: Arc<Vec<Bytes>>,
    vmagent: Option<PathBuf>,
    ts_next: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct Measured {
    scenario: String,
    requests_per_s: f64,
    samples_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// (process name, CPU-s per million samples, peak RSS MiB)
    relays: Vec<(&'static str, f64, f64)>,
    receiver_cpu_per_m: f64,
    generator_cpu_per_m: f64,
    non_2xx: u64,
    non_2xx_detail: String,
    errors: u64,
    lost: i64,
    behind: u64,
    drain_s: f64,
}

impl Measured {
    fn relay_cpu_per_m(&self) -> f64 {
        self.relays.iter().map(|r| r.1).sum()
    }
    fn relay_rss(&self) -> f64 {
        self.relays.iter().map(|r| r.2).sum()
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[idx]) / 1000.0
}

/// The cluster (tenant) of the relay scenario's agent.
const CLUSTER: &str = "rw-bench-cluster";
async fn start_relays(ctx: &Ctx, scenario: Scenario, variant: &Variant) -> Result<(String, Vec<Proc>), String> {
    let upstream = ctx.receiver.write_url();
    match scenario {
        Scenario::Direct => Ok((upstream, Vec::new())),
        Scenario::Relay => {
            let bin = |n: &str| variant.bin_dir.as_ref().unwrap_or(&ctx.args.bin_dir).join(n);
            let env = |extra: &[(String, String)]| ctx.args.relay_env.iter().chain(extra).cloned().collect::<Vec<_>>();
            let (grpc, ops, mgmt) = (free_port(), free_port(), free_port());
            let g = &ctx.gateway_certs;
            let s = |p: &Path| p.display().to_string();
            let data = ctx.dir.join(format!("gateway-{grpc}"));
            let gw_args = vec![
                format!("--grpc-listen=127.0.0.1:{grpc}"),
                format!("--http-listen=127.0.0.1:{ops}"),
                format!("--management-listen=127.0.0.1:{mgmt}"),
                format!("--data-dir={}", s(&data)),
                format!("--tls-cert={}", s(&g.cert)),
                format!("--tls-key={}", s(&g.key)),
                format!("--tls-ca={}", s(&g.ca)),
                format!("--upstream-url={upstream}"),
                "--log-level=warn".into(),
            ]
            .into_iter()
            .chain(variant.gateway_args.iter().cloned())
            .collect::<Vec<_>>();
            let mut gw =
                Proc::spawn("gateway", &bin("opni-metrics-gateway"), &gw_args, &env(&variant.gateway_env), &ctx.dir)
                    .await?;
            gw.wait_ok(&format!("http://127.0.0.1:{ops}/readyz")).await?;
            opni_metrics_tests::registry::install_with_cli(
                &ctx.args.bin_dir,
                &format!("127.0.0.1:{mgmt}"),
                &data.join("admin.token"),
                CLUSTER,
            )
            .await?;
            let listen = free_port();
            let a = &ctx.agent_certs;
            let agent_args = vec![
                format!("--listen=127.0.0.1:{listen}"),
                format!("--gateway=127.0.0.1:{grpc}"),
                "--gateway-server-name=localhost".into(),
                format!("--tls-cert={}", s(&a.cert)),
                format!("--tls-key={}", s(&a.key)),
                format!("--tls-ca={}", s(&a.ca)),
                "--log-level=warn".into(),
                // the generator plays the local Prometheus: a real one (the process driver)
                // would add its own self-scrape pushes to the receiver's count, and its CPU
                "--driver=none".into(),
            ]
            .into_iter()
            .chain(variant.agent_args.iter().cloned())
            .collect::<Vec<_>>();
            let mut agent =
                Proc::spawn("agent", &bin("opni-metrics-agent"), &agent_args, &env(&variant.agent_env), &ctx.dir)
                    .await?;
            agent.wait_ok(&format!("http://127.0.0.1:{listen}/readyz")).await?;
            Ok((format!("http://127.0.0.1:{listen}/api/agent/push"), vec![agent, gw]))
        }
        Scenario::Vmagent => {
            let bin = ctx.vmagent.as_ref().ok_or("vmagent is not installed")?;
            let port = free_port();
            let tmp = ctx.dir.join(format!("vmagent-{port}"));
            let args = vec![
                format!("-remoteWrite.url={upstream}"),
                format!("-remoteWrite.tmpDataPath={}", tmp.display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                "-loggerLevel=WARN".into(),
            ];
            let mut vm = Proc::spawn("vmagent", bin, &args, &[], &ctx.dir).await?;
            vm.wait_ok(&format!("http://127.0.0.1:{port}/health")).await?;
            Ok((format!("http://127.0.0.1:{port}/api/v1/write"), vec![vm]))
        }
    }
}

async fn run_scenario(ctx: &Ctx, run: RunSpec, scenario: Scenario, variant: &Variant) -> Result<Measured, String> {
    let (url, procs) = start_relays(ctx, scenario, variant).await?;
    let args = &ctx.args;
    let samples = args.samples as u64;
    let interval = match run.mode {
        Mode::Saturation => None,
        Mode::Rate => Some(Duration::from_secs_f64(samples as f64 * run.senders as f64 / args.rate.max(1) as f64)),
    };
    let bodies = match ctx.receiver {
        Receiver::Counting { .. } => None,
        Receiver::Prometheus { .. } => {
            // strictly increasing timestamps across scenarios: a TSDB refuses out-of-order samples
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let now_ms = u64::try_from(now.as_millis()).unwrap_or(0);
            let ts0 = ctx.ts_next.load(Ordering::Relaxed).max(now_ms);
            ctx.ts_next.store(ts0 + 1_000_000, Ordering::Relaxed);
            Some(i64::try_from(ts0).unwrap_or(0))
        }
    };
    let rx0 = ctx.receiver.samples().await;
    let start = Instant::now() + Duration::from_millis(100);
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.duration);
    let load = Arc::new(Load {
        url,
        start,
        measure_start,
        end,
        interval,
        senders: run.senders,
        samples,
        max_requests: args.max_requests,
    });
    let handles: Vec<_> = (0..run.senders)
        .map(|i| {
            let b = match bodies {
                None => Bodies::Pool(Arc::clone(&ctx.pool)),
                Some(ts0) => Bodies::Fresh {
                    base: (i * POOL_PER_SENDER * args.samples) as u64,
                    slots: POOL_PER_SENDER as u64,
                    samples: args.samples,
                    ts0,
                    compressible: args.compressible,
                },
            };
            tokio::spawn(sender(i, Arc::clone(&load), b))
        })
        .collect();

    tokio::time::sleep_until(measure_start.into()).await;
    let cpu0: Vec<f64> = procs.iter().map(|p| p.cpu(ctx.tick)).collect();
    let (rx_cpu0, gen_cpu0) = (ctx.receiver.cpu(ctx.tick), threads_cpu("rwb-gen", ctx.tick));
    let rx_m0 = ctx.receiver.samples().await;

    let mut stats = Vec::new();
    for h in handles {
        stats.push(h.await.map_err(|e| format!("sender panicked: {e}"))?);
    }
    let load_end = Instant::now();
    let rx_end = ctx.receiver.samples().await;
    let gen_cpu1 = threads_cpu("rwb-gen", ctx.tick);

    // drain: relays that acknowledge before forwarding (vmagent) deliver after the load stops
    let acked: u64 = stats.iter().map(|s| s.acked_samples_total).sum();
    let expected = rx0 + acked;
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut last_change) = (rx_end, Instant::now());
    let mut rx_final = rx_end;
    while rx_final < expected && Instant::now() < drain_deadline && last_change.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rx_final = ctx.receiver.samples().await;
        if rx_final != last {
            (last, last_change) = (rx_final, Instant::now());
        }
    }
    let drain_s = load_end.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = procs.iter().map(|p| p.cpu(ctx.tick)).collect();
    let rx_cpu1 = ctx.receiver.cpu(ctx.tick);

    let window = load_end.duration_since(measure_start).as_secs_f64();
    let ok_requests: u64 = stats.iter().map(|s| s.ok_requests).sum();
    let ok_samples: u64 = stats.iter().map(|s| s.ok_samples).sum();
    let per_m = |cpu: f64| if ok_samples == 0 { f64::NAN } else { cpu / (ok_samples as f64 / 1e6) };
    let mut lat: Vec<u32> = stats.iter().flat_map(|s| s.latencies_us.iter().copied()).collect();
    lat.sort_unstable();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for s in &stats {
        for (k, v) in &s.statuses {
            *statuses.entry(*k).or_default() += v;
        }
    }
    let relays = procs
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|(p, (a, b))| (p.name, per_m(b - a), peak_rss_mib(p.pid)))
        .collect();
    let result = Measured {
        scenario: if variant.name.is_empty() {
            scenario.name().to_owned()
        } else {
            format!("{} [{}]", scenario.name(), variant.name)
        },
        requests_per_s: ok_requests as f64 / window,
        samples_per_s: ok_samples as f64 / window,
        delivered_per_s: rx_end.saturating_sub(rx_m0) as f64 / window,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        max_ms: lat.last().map_or(f64::NAN, |&v| f64::from(v) / 1000.0),
        relays,
        receiver_cpu_per_m: per_m(rx_cpu1 - rx_cpu0),
        generator_cpu_per_m: per_m(gen_cpu1 - gen_cpu0),
        non_2xx: statuses.values().sum(),
        non_2xx_detail: statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect::<Vec<_>>().join(" "),
        errors: stats.iter().map(|s| s.errors).sum(),
        lost: i64::try_from(acked).unwrap_or(i64::MAX) - i64::try_from(rx_final - rx0).unwrap_or(i64::MAX),
        behind: stats.iter().map(|s| s.behind).sum(),
        drain_s,
    };
    for p in procs {
        p.stop().await;
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// report

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() { "–".into() } else { format!("{v:.digits$}") }
}

fn run_title(args: &Args, run: RunSpec) -> String {
    match run.mode {
        Mode::Saturation => format!("saturation, {} senders", run.senders),
        Mode::Rate => format!("rate {} samples/s, {} senders", args.rate, run.senders),
    }
}

fn table(args: &Args, run: RunSpec, results: &[Measured]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {} ({} samples/request, {} s measured after {} s warm-up)\n",
        run_title(args, run),
        args.samples,
        args.duration,
        args.warmup
    );
    s.push_str(
        "| scenario | req/s | samples/s acked | samples/s delivered | p50 ms | p99 ms | p99.9 ms | max ms | relay CPU-s / M samples | relay peak RSS MiB | receiver CPU-s / M | generator CPU-s / M | non-2xx | errors | samples lost |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|\n");
    for r in results {
        let relay_cpu = if r.relays.is_empty() {
            "–".to_owned()
        } else if r.relays.len() == 1 {
            f(r.relays[0].1, 3)
        } else {
            let parts: Vec<_> = r.relays.iter().map(|(n, c, _)| format!("{n} {}", f(*c, 3))).collect();
            format!("**{}** ({})", f(r.relay_cpu_per_m(), 3), parts.join(" + "))
        };
        let relay_rss = if r.relays.is_empty() {
            "–".to_owned()
        } else if r.relays.len() == 1 {
            f(r.relays[0].2, 1)
        } else {
            let parts: Vec<_> = r.relays.iter().map(|(n, _, m)| format!("{n} {}", f(*m, 1))).collect();
            format!("**{}** ({})", f(r.relay_rss(), 1), parts.join(" + "))
        };
        let non2xx = if r.non_2xx == 0 { "0".to_owned() } else { format!("{} ({})", r.non_2xx, r.non_2xx_detail) };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            f(r.requests_per_s, 0),
            f(r.samples_per_s, 0),
            f(r.delivered_per_s, 0),
            f(r.p50_ms, 2),
            f(r.p99_ms, 2),
            f(r.p999_ms, 2),
            f(r.max_ms, 1),
            relay_cpu,
            relay_rss,
            f(r.receiver_cpu_per_m, 3),
            f(r.generator_cpu_per_m, 3),
            non2xx,
            r.errors,
            r.lost
        );
    }
    let notes: Vec<String> = results
        .iter()
        .filter(|r| r.behind > 0 || r.drain_s > 0.5)
        .map(|r| {
            let mut n = format!("{}:", r.scenario);
            if r.behind > 0 {
                let _ = write!(n, " fell behind the target rate {} times;", r.behind);
            }
            if r.drain_s > 0.5 {
                let _ = write!(n, " delivered its backlog {:.1} s after the load stopped;", r.drain_s);
            }
            n
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNotes: {}", notes.join(" "));
    }
    s
}

fn mark(v: f64, digits: usize, ok: bool) -> String {
    if v.is_nan() { "–".into() } else { format!("{} {}", f(v, digits), if ok { "✓" } else { "✗" }) }
}

/// One row per agent→gateway scenario of every run: its absolute figures against DESIGN §8 and
/// its ratios against vmagent measured in the same run (issue #15's targets), which is what
/// compares across machines.
fn summary(args: &Args, all: &[(RunSpec, Vec<Measured>)]) -> String {
    let mut s = String::from(
        "### Targets: DESIGN §8 (absolute) and ratios to vmagent in the same run\n\n\
         ✓ met, ✗ missed. Targets: relay CPU ≤ 0.5 CPU-s / M and ≤ 0.35× vmagent's; delivered \
         throughput (saturation) ≥ 2× vmagent's at 4 senders, ≥ 2.5× at 32 (DESIGN §8: ≥ 1.5×); \
         added p99 over direct (rate runs) ≤ 1 ms and ≤ 0.15× vmagent's added p99; agent + gateway \
         RSS ≤ 50 MiB; no sample lost, no non-2xx, no error.\n\n\
         | run | scenario | CPU-s / M | CPU ÷ vmagent | delivered ÷ vmagent | added p99 ms | added p99 ÷ vmagent's | RSS MiB | clean |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let find = |rs: &[Measured], name: &str| rs.iter().find(|r| r.scenario == name).cloned();
    let mut extra = String::new();
    for (run, rs) in all {
        let title = run_title(args, *run);
        let direct = find(rs, Scenario::Direct.name());
        let vm = find(rs, Scenario::Vmagent.name());
        for r in rs.iter().filter(|r| r.scenario.starts_with(Scenario::Relay.name())) {
            let cpu = r.relay_cpu_per_m();
            let cpu_ratio = vm.as_ref().map_or(f64::NAN, |v| cpu / v.relay_cpu_per_m());
            let (thr_ratio, thr_target) = match (&vm, run.mode) {
                (Some(v), Mode::Saturation) => {
                    (r.delivered_per_s / v.delivered_per_s, if run.senders >= 32 { 2.5 } else { 2.0 })
                }
                _ => (f64::NAN, 0.0),
            };
            let (added, added_ratio) = match (&direct, run.mode) {
                (Some(d), Mode::Rate) => {
                    let added = r.p99_ms - d.p99_ms;
                    (added, vm.as_ref().map_or(f64::NAN, |v| added / (v.p99_ms - d.p99_ms)))
                }
                _ => (f64::NAN, f64::NAN),
            };
            let at_rate = run.mode == Mode::Saturation || r.samples_per_s >= 0.95 * args.rate as f64;
            let rss = r.relay_rss();
            let clean = r.lost == 0 && r.non_2xx == 0 && r.errors == 0;
            let _ = writeln!(
                s,
                "| {title} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                mark(cpu, 3, cpu <= 0.5),
                mark(cpu_ratio, 2, cpu_ratio <= 0.35),
                mark(thr_ratio, 2, thr_ratio >= thr_target),
                mark(added, 2, added <= 1.0 && at_rate),
                mark(added_ratio, 2, added_ratio <= 0.15 && at_rate),
                mark(rss, 1, rss <= 50.0),
                if clean {
                    "✓".to_owned()
                } else {
                    format!("✗ lost {}, non-2xx {}, errors {}", r.lost, r.non_2xx, r.errors)
                },
            );
            if let (Some(d), true) = (&direct, args.receiver_delay_ms > 0 && run.senders >= 32) {
                let ratio = r.samples_per_s / d.samples_per_s;
                let _ = writeln!(
                    extra,
                    "- {title}, {}: throughput {}× direct with a {} ms upstream (DESIGN §8: ≥ 0.9×)",
                    r.scenario,
                    mark(ratio, 2, ratio >= 0.9),
                    args.receiver_delay_ms
                );
            }
        }
    }
    if !extra.is_empty() {
        s.push('\n');
        s.push_str(&extra);
    }
    s
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} CPUs ({model}), {mem_gib:.1} GiB RAM")
}

// ---------------------------------------------------------------------------------------------

async fn run_all(ctx: Ctx) -> Result<String, String> {
    let args = &ctx.args;
    let mut report = String::new();
    let _ = writeln!(report, "## rw-bench\n");
    let _ = writeln!(report, "- machine: {}", machine());
    let _ = writeln!(report, "- command: `rw-bench {}`", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    let body_len = ctx.pool.first().map_or(0, Bytes::len);
    let _ = writeln!(
        report,
        "- receiver: {} on 127.0.0.1{}; request body {} bytes snappy ({} samples)",
        match args.receiver {
            ReceiverKind::Counting => "in-process counting receiver (decompresses, counts samples, answers 204)",
            ReceiverKind::Prometheus => "prometheus --web.enable-remote-write-receiver",
        },
        if args.receiver_delay_ms > 0 {
            format!(", answering after {} ms", args.receiver_delay_ms)
        } else {
            String::new()
        },
        body_len,
        args.samples
    );
    if ctx.vmagent.is_none() && args.scenarios.contains(&Scenario::Vmagent) {
        let _ = writeln!(report, "- vmagent not found ({}): its scenario is skipped", args.vmagent);
    }
    report.push('\n');
    print!("{report}");
    let mut all = Vec::new();
    for run in &args.runs {
        let mut results = Vec::new();
        for sc in &args.scenarios {
            if *sc == Scenario::Vmagent && ctx.vmagent.is_none() {
                continue;
            }
            eprintln!("running {} / {} …", run_title(args, *run), sc.name());
            results.push(run_scenario(&ctx, *run, *sc, &Variant::default()).await?);
            if *sc == Scenario::Relay {
                for v in &args.variant {
                    eprintln!("running {} / {} [{}] …", run_title(args, *run), sc.name(), v.name);
                    results.push(run_scenario(&ctx, *run, *sc, v).await?);
                }
            }
        }
        let t = table(args, *run, &results);
        println!("{t}");
        report.push_str(&t);
        report.push('\n');
        all.push((*run, results));
    }
    let sm = summary(args, &all);
    println!("{sm}");
    report.push_str(&sm);
    if let Receiver::Prometheus { .. } = ctx.receiver {
        let _ = writeln!(
            report,
            "\nPrometheus receiver peak RSS: {} MiB",
            f(ctx.receiver.peak_rss().unwrap_or(f64::NAN), 1)
        );
    }
    if let Receiver::Prometheus { proc, .. } = ctx.receiver {
        proc.stop().await;
    }
    Ok(report)
}

fn runtime(name: &'static str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tmp = tempfile::Builder::new().prefix("rw-bench-").tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let rx_rt = runtime("rwb-rx", args.threads);
    let gen_rt = runtime("rwb-gen", args.threads);

    for name in ["opni-metrics-agent", "opni-metrics-gateway"] {
        if args.scenarios.contains(&Scenario::Relay) && !args.bin_dir.join(name).is_file() {
            eprintln!(
                "{} not found; build it with: cargo build --release -p opni-metrics-daemons --bins (or pass --bin-dir)",
                args.bin_dir.join(name).display()
            );
            return ExitCode::from(2);
        }
    }

    let receiver = match args.receiver {
        ReceiverKind::Counting => {
            let counters = Arc::new(RxCounters::default());
            let listener = rx_rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind receiver");
            let port = listener.local_addr().expect("addr").port();
            rx_rt.spawn(rx_serve(listener, Arc::clone(&counters), Duration::from_millis(args.receiver_delay_ms)));
            Receiver::Counting { port, counters }
        }
        ReceiverKind::Prometheus => {
            let Some(bin) = find_on_path(&args.prometheus) else {
                eprintln!("prometheus not found; install it with: apt-get install -y prometheus");
                return ExitCode::from(2);
            };
            let res = gen_rt.block_on(async {
                let port = free_port();
                let pdir = dir.join("prometheus");
                std::fs::create_dir_all(&pdir).map_err(|e| e.to_string())?;
                let cfg = pdir.join("prometheus.yml");
                std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").map_err(|e| e.to_string())?;
                let pargs = vec![
                    format!("--config.file={}", cfg.display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    "--web.enable-remote-write-receiver".into(),
                    format!("--storage.tsdb.path={}", pdir.join("data").display()),
                    "--log.level=warn".into(),
                ];
                let mut proc = Proc::spawn("prometheus", &bin, &pargs, &[], &dir).await?;
                proc.wait_ok(&format!("http://127.0.0.1:{port}/-/ready")).await?;
                Ok::<_, String>(Receiver::Prometheus { port, proc: Box::new(proc) })
            });
            match res {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };

    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ts_ms = i64::try_from(ts.as_millis()).unwrap_or(0);
    let max_senders = args.runs.iter().map(|r| r.senders).max().unwrap_or(1);
    let pool: Vec<Bytes> = (0..max_senders * POOL_PER_SENDER)
        .map(|j| body((j * args.samples) as u64, args.samples, ts_ms, args.compressible))
        .collect();
    let pki = Pki::new(&dir.join("pki"), "rw-bench");
    let ctx = Ctx {
        gateway_certs: pki.gateway("gateway"),
        agent_certs: pki.agent("agent", CLUSTER),
        tick: clock_ticks(),
        dir: dir.clone(),
        receiver,
        pool: Arc::new(pool),
        vmagent: find_on_path(&args.vmagent),
        ts_next: AtomicU64::new(0),
        args: args.clone(),
    };
    let res = gen_rt.block_on(run_all(ctx));
    drop(gen_rt);
    drop(rx_rt);
    if args.keep_tmp {
        eprintln!("kept {}", tmp.keep().display());
    }
    match res {
        Ok(report) => {
            if let Some(out) = &args.out
                && let Err(e) = std::fs::write(out, report)
            {
                eprintln!("writing {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rw-bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
