//! `sync-scale`: the scale benchmark of the gateway's sync fan-out (DESIGN §8, "Sync fan-out":
//! a gateway with 10,000 connected agents delivers `SyncNow` to all and answers all their
//! `Sync`s within 5 s; ≤ 64 KiB gateway memory per idle connected agent).
//!
//! For each requested number of agents N, one run:
//!
//! 1. prepares a fresh data directory: the gateway's embedded CA (`Ca::load_or_create`, as the
//!    gateway itself does at startup), N clusters with the metrics capability installed written
//!    into the embedded store file, and N agent certificates issued by that CA exactly as
//!    `Bootstrap.Join` issues them (`Ca::sign_agent`; one key pair shared by all agents, which
//!    changes nothing on the gateway's side);
//! 2. starts the real `opni-metrics-gateway` release binary as a child process on 127.0.0.1
//!    (so its memory and CPU are its own: `/proc/<pid>/status` and `/proc/<pid>/stat`);
//! 3. connects N simulated agents, each with its own mutual-TLS connection (the daemons'
//!    `tls_channel`, one channel per agent) and its own `Notifications` stream, at most
//!    `--connect-concurrency` handshakes in flight; each agent runs core's `AgentSync` state
//!    machine like the real agent's sync loop (`Sync` RPCs in their own tasks, `SyncNow`
//!    coalescing, back-off), with a node driver that applies at once;
//! 4. waits until every agent has finished its initial round (`Sync` → `NeedsUpdate` → apply →
//!    report `Sync` → `UpToDate`), lets the gateway settle and reads its idle RSS;
//! 5. `--rounds` times: changes the default node configuration through the management API
//!    (`NodeConfiguration.SetDefaultConfiguration`, bearer admin token, h2c on loopback) and
//!    measures, per agent and from just before that call: when its `SyncNow` arrived, when the
//!    `NeedsUpdate` carrying the new config arrived, and when its round was complete (the report
//!    `Sync` after the apply answered `UpToDate`: every `Sync` of the agent answered).
//!
//! Memory per idle agent is (gateway RSS with N agents connected and idle − gateway RSS right
//! after startup with the same store) / N. The simulated agents' own memory is reported apart
//! (this process's RSS before and after connecting them).
//!
//! Everything shares the machine's cores: the N simulated agents (TLS, HTTP/2, the state
//! machines) run in this process on `--client-threads` worker threads, the gateway in its own
//! process with Tokio's default of one worker per core.
//!
//! 10,000 connections need about 10,100 open files in this process and as many in the gateway
//! (which inherits the limit): raise the soft limit with `ulimit -n` first; the run refuses to
//! start when the limit is too low.
// Benchmark harness: a panic is how a broken fixture reports itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use opni_metrics_core::backoff::Backoff;
use opni_metrics_core::digest::Digest;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::node::{NodeStatus, SyncReply, UpstreamState};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::store::Store;
use opni_metrics_core::sync::{AgentSync, Effect, Input};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};
use opni_metrics_gateway::ca::Ca;
use opni_metrics_gateway::state::{State, now};
use opni_metrics_proto::node::v1::node_sync_client::NodeSyncClient;
use opni_metrics_proto::node::v1::{NotificationsRequest, SyncRequest, notification};
use opni_metrics_proto::nodeconfig::v1::SetDefaultConfigurationRequest;
use opni_metrics_proto::nodeconfig::v1::node_configuration_client::NodeConfigurationClient;
use opni_metrics_store::embedded::EmbeddedStore;
use opni_metrics_store::etcd::{EtcdConfig, EtcdStore};
use opni_metrics_tests::http::{eventually, get};
use opni_metrics_tests::procstat::{clock_ticks, process_cpu};
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Scale benchmark of the gateway's sync fan-out: N agents, one default-config change, time
/// until every agent has synced it, gateway memory per idle agent.
#[derive(Debug, Clone, Parser)]
#[command(about, long_about = None)]
struct Args {
    /// Numbers of simulated agents, one run each (a fresh gateway per run), e.g. 100,1000,10000.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    agents: Vec<usize>,
    /// Default-config changes measured per run, one after another.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Agents connecting at once (TLS handshakes and `Notifications` calls in flight).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds to wait after every agent's initial sync before reading the idle memory.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Limit of each phase (connecting, the initial sync, one fan-out), seconds.
    #[arg(long, default_value_t = 180.0)]
    timeout: f64,
    /// The gateway's `sync.resyncInterval`; long, so that only the config change sends `SyncNow`.
    #[arg(long, default_value = "1h")]
    resync_interval: String,
    /// Diagnostic, not what a real agent does: every `Sync` reports the same empty status, so
    /// the gateway persists no status during a fan-out (it still answers every `Sync` from the
    /// store). Compared with a normal run this isolates the cost of the per-`Sync` status write.
    #[arg(long)]
    constant_status: bool,
    /// Gateway replicas sharing one real etcd (Debian `etcd-server`) and one CA; the agents are
    /// spread over them evenly, and the change is made through the first. With 1 the gateway
    /// keeps its state in its embedded store unless `--etcd` is given.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Keep state in a real etcd even with one replica.
    #[arg(long)]
    etcd: bool,
    /// Worker threads of this process's runtime (the simulated agents).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Directory holding the `opni-metrics-gateway` binary.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the temporary directory (gateway data, configs and logs).
    #[arg(long)]
    keep_tmp: bool,
}

// ---------------------------------------------------------------------------------------------
// /proc

/// CPU seconds (user + system) from a `/proc/.../stat` file.
fn stat_cpu(path: &str, tick: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / tick
}

/// The thread ids of a process.
fn threads_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.filter_map(Result::ok).filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// CPU seconds the threads `tids` of a process used so far.
fn threads_cpu(pid: u32, tids: &[u32], tick: f64) -> f64 {
    tids.iter().map(|t| stat_cpu(&format!("/proc/{pid}/task/{t}/stat"), tick)).sum()
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`) in KiB, or a plain number (`Threads`).
fn status_field(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// A field of `/proc/<pid>/io` (`write_bytes`: bytes the process caused to be written to disk).
fn io_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// The soft limit of open files of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let mem_gib = status_like_meminfo("MemTotal") as f64 / 1024.0 / 1024.0;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} CPUs ({model}), {mem_gib:.1} GiB RAM, kernel {}", kernel())
}

fn status_like_meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// what the simulated agents record

/// Times are microseconds since [`Shared::epoch`] plus one; 0 is "not yet".
struct Slot {
    connected: AtomicU64,
    /// Per config generation (1 = the initial config, 1 + r = round r's): the first `SyncNow`
    /// received while that round ran.
    notified: Vec<AtomicU64>,
    /// The `NeedsUpdate` reply carrying that generation's config arrived.
    config: Vec<AtomicU64>,
    /// That generation applied and every `Sync` answered (the machine idle).
    done: Vec<AtomicU64>,
    /// The digest applied last.
    digest: Mutex<Option<Digest>>,
}

struct Shared {
    epoch: Instant,
    slots: Vec<Slot>,
    /// The generation being delivered now.
    generation: AtomicU32,
    syncs: AtomicU64,
    sync_errors: AtomicU64,
    connect_errors: AtomicU64,
    stream_ends: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(n: usize, generations: usize) -> Self {
        let times = || (0..=generations).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            epoch: Instant::now(),
            slots: (0..n)
                .map(|_| Slot {
                    connected: AtomicU64::new(0),
                    notified: times(),
                    config: times(),
                    done: times(),
                    digest: Mutex::new(None),
                })
                .collect(),
            generation: AtomicU32::new(1),
            syncs: AtomicU64::new(0),
            sync_errors: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            stream_ends: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    fn error(&self, msg: String) {
        let mut e = self.first_error.lock().unwrap();
        if e.is_none() {
            *e = Some(msg);
        }
    }

    fn count(&self, f: impl Fn(&Slot) -> bool) -> usize {
        self.slots.iter().filter(|s| f(s)).count()
    }
}

fn set_once(at: Option<&AtomicU64>, t: u64) {
    if let Some(a) = at {
        let _ = a.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// one simulated agent

/// Connects (holding a `gate` permit until the notification stream is open), then runs
/// `AgentSync` against the gateway until `stop`, the stream ending or an unrecoverable error.
async fn agent(
    i: usize,
    channel: Channel,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    constant_status: bool,
    mut stop: watch::Receiver<bool>,
) {
    let slot = &shared.slots[i];
    let client = NodeSyncClient::new(channel);
    let permit = gate.acquire_owned().await;
    let mut c = client.clone();
    let opened = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(60), c.notifications(NotificationsRequest {})) => r,
        _ = stop.changed() => return,
    };
    drop(permit);
    let mut stream = match opened {
        Ok(Ok(s)) => s.into_inner(),
        Ok(Err(e)) => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            shared.error(format!("agent {i}: Notifications: {:?}: {}", e.code(), e.message()));
            return;
        }
        Err(_) => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            shared.error(format!("agent {i}: Notifications not answered within 60s"));
            return;
        }
    };
    slot.connected.store(shared.now(), Ordering::Relaxed);

    let epoch = shared.epoch;
    let clock = move || Timestamp(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut machine = AgentSync::new(None, Backoff::default(), 0x5eed ^ i as u64);
    let (tx, mut rx) = mpsc::channel::<(u64, Result<SyncReply, String>)>(4);
    let mut wake: Option<tokio::time::Instant> = None;
    let mut generation = 0usize;
    let mut applied: Option<Digest> = None;
    let mut inputs = VecDeque::from([Input::Connected]);
    loop {
        while let Some(input) = inputs.pop_front() {
            for effect in machine.handle(clock(), input) {
                match effect {
                    Effect::SendSync { seq, current_digest, status } => {
                        let status = if constant_status { NodeStatus::default() } else { status };
                        let mut client = client.clone();
                        let tx = tx.clone();
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let mut req = tonic::Request::new(SyncRequest::new(current_digest.as_ref(), status));
                            req.set_timeout(Duration::from_secs(30));
                            shared.syncs.fetch_add(1, Ordering::Relaxed);
                            let result = match client.sync(req).await {
                                Ok(r) => SyncReply::try_from(r.into_inner()).map_err(|e| e.to_string()),
                                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                            };
                            if let Err(e) = &result {
                                shared.sync_errors.fetch_add(1, Ordering::Relaxed);
                                shared.error(format!("agent {i}: Sync: {e}"));
                            }
                            let _ = tx.send((seq, result)).await;
                        });
                    }
                    Effect::Apply { .. } => {
                        set_once(slot.config.get(generation + 1), shared.now());
                        // the node driver applies at once
                        inputs.push_back(Input::Applied { result: Ok(NodeStatus::default()) });
                    }
                    Effect::StatusChanged(_) => {}
                    Effect::WakeAt(t) => {
                        let at = tokio::time::Instant::from_std(epoch) + Duration::from_millis(t.as_millis());
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
            }
        }
        if machine.applied() != applied.as_ref() {
            applied = machine.applied().copied();
            generation += 1;
            *slot.digest.lock().unwrap() = applied;
        }
        if generation > 0 && machine.is_idle() {
            set_once(slot.done.get(generation), shared.now());
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(n)) => {
                    if let Some(notification::Kind::SyncNow(now)) = n.kind {
                        let g = shared.generation.load(Ordering::Relaxed) as usize;
                        set_once(slot.notified.get(g), shared.now());
                        // as the real agent: an offered config is applied without a Sync asking
                        match now.offer() {
                            Ok(Some((config, digest))) => inputs.push_back(Input::Offered { config, digest }),
                            Ok(None) => inputs.push_back(Input::SyncNow),
                            Err(e) => {
                                shared.error(format!("agent {i}: invalid offer: {e}"));
                                inputs.push_back(Input::SyncNow);
                            }
                        }
                    }
                }
                Ok(None) => {
                    shared.stream_ends.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("agent {i}: the gateway closed the notification stream"));
                    return;
                }
                Err(e) => {
                    shared.stream_ends.fetch_add(1, Ordering::Relaxed);
                    shared.error(format!("agent {i}: notification stream failed: {:?}: {}", e.code(), e.message()));
                    return;
                }
            },
            Some((seq, result)) = rx.recv() => inputs.push_back(Input::SyncReplied { seq, result }),
            () = sleep => {
                wake = None;
                inputs.push_back(Input::Tick);
            }
            _ = stop.changed() => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the gateway process

struct Gateway {
    child: Child,
    pid: u32,
    grpc: u16,
    management: u16,
    log: PathBuf,
}

/// The gateway's per-address handshake quota here: the simulated agents all connect from
/// 127.0.0.1, standing for agents on as many hosts, so the quota (meant for one host holding
/// slots) is set to the listener's whole cap.
const MAX_HANDSHAKES: usize = 256;

impl Gateway {
    async fn spawn(bin: &Path, data: &Path, resync: &str, extra_yaml: &str) -> Result<Self, String> {
        let (grpc, http, management, query) = (free_port(), free_port(), free_port(), free_port());
        let config = data.with_extension("yaml");
        let yaml = format!(
            "dataDir: '{}'\n\
             grpc:\n  listen: 127.0.0.1:{grpc}\n  maxHandshakesPerAddress: {MAX_HANDSHAKES}\n\
             http:\n  listen: 127.0.0.1:{http}\n\
             management:\n  listen: 127.0.0.1:{management}\n\
             query:\n  listen: 127.0.0.1:{query}\n\
             upstream:\n  url: http://127.0.0.1:9/api/v1/push\n  failingGrace: 1000h\n\
             sync:\n  resyncInterval: {resync}\n\
             log:\n  level: warn\n\
             {extra_yaml}",
            data.display()
        );
        std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = data.with_extension("log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the gateway exited at once")?;
        let mut gw = Self { child, pid, grpc, management, log };
        let url = format!("http://127.0.0.1:{http}/readyz");
        let ready = eventually(Duration::from_secs(30), "gateway ready", || async {
            match get(&url).await {
                Ok(r) if r.status.is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Ok(Some(status)) = gw.child.try_wait() {
            return Err(format!("the gateway exited with {status}:\n{}", gw.log_tail()));
        }
        ready.map_err(|e| format!("{e}\ngateway log:\n{}", gw.log_tail()))?;
        Ok(gw)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn rss_kib(&self) -> u64 {
        status_field(&self.pid.to_string(), "VmRSS")
    }

    fn peak_kib(&self) -> u64 {
        status_field(&self.pid.to_string(), "VmHWM")
    }

    fn threads(&self) -> u64 {
        status_field(&self.pid.to_string(), "Threads")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn stop(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The gateway replicas of a run, measured together.
struct Fleet {
    gws: Vec<Gateway>,
}

impl Fleet {
    fn rss_kib(&self) -> u64 {
        self.gws.iter().map(Gateway::rss_kib).sum()
    }
    fn peak_kib(&self) -> u64 {
        self.gws.iter().map(Gateway::peak_kib).sum()
    }
    fn threads(&self) -> u64 {
        self.gws.iter().map(Gateway::threads).sum()
    }
    fn cpu(&self, tick: f64) -> f64 {
        self.gws.iter().map(|g| process_cpu(g.pid, tick)).sum()
    }
    fn thread_ids(&self) -> Vec<Vec<u32>> {
        self.gws.iter().map(|g| threads_of(g.pid)).collect()
    }
    fn threads_cpu(&self, tids: &[Vec<u32>], tick: f64) -> f64 {
        self.gws.iter().zip(tids).map(|(g, t)| threads_cpu(g.pid, t, tick)).sum()
    }
    fn disk_bytes(&self) -> u64 {
        self.gws.iter().map(|g| io_field(g.pid, "write_bytes")).sum()
    }
    fn dead(&mut self) -> Vec<String> {
        self.gws.iter_mut().filter_map(|g| (!g.alive()).then(|| g.log_tail())).collect()
    }
    async fn stop(self) {
        for g in self.gws {
            g.stop().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// one run

#[derive(Debug, Default, Clone)]
struct Quantiles {
    p50: f64,
    p99: f64,
    max: f64,
    missing: usize,
}

/// Nearest-rank quantiles, in milliseconds, of `at − t0` over the agents that recorded `at`.
fn quantiles(times: impl Iterator<Item = u64>, t0: u64, expected: usize) -> Quantiles {
    let mut ms: Vec<f64> = times.filter(|&t| t != 0).map(|t| t.saturating_sub(t0) as f64 / 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if ms.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        ms[rank - 1]
    };
    Quantiles { p50: q(0.50), p99: q(0.99), max: q(1.0), missing: expected.saturating_sub(ms.len()) }
}

#[derive(Debug, Clone)]
struct Round {
    round: usize,
    set_ms: f64,
    notified: Quantiles,
    config: Quantiles,
    done: Quantiles,
    syncs_per_agent: f64,
    gateway_cpu: f64,
    /// Of `gateway_cpu`, the threads alive while the gateway was idle: the runtime's workers
    /// (and the main thread); the rest ran on threads started during the round (the blocking
    /// pool, where the embedded store's operations run).
    gateway_workers_cpu: f64,
    /// Bytes the gateway wrote to disk during the round.
    gateway_disk_bytes: u64,
    /// CPU-s of etcd during the round (0 without etcd).
    etcd_cpu: f64,
    client_cpu: f64,
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    agents: usize,
    connected: usize,
    prepare_s: f64,
    /// Mean time of one embedded-store write (one commit) while preparing, sequential, ms.
    commit_ms: f64,
    connect_s: f64,
    initial_s: f64,
    gw_base_kib: u64,
    gw_idle_kib: u64,
    gw_after_kib: u64,
    gw_peak_kib: u64,
    gw_threads_idle: u64,
    gw_threads_peak: u64,
    client_kib_per_agent: f64,
    rounds: Vec<Round>,
    errors: String,
}

impl RunResult {
    fn kib_per_agent(&self) -> f64 {
        self.gw_idle_kib.saturating_sub(self.gw_base_kib) as f64 / self.agents.max(1) as f64
    }
}

fn spec(round: usize) -> MetricsCapabilitySpec {
    let mut s = MetricsCapabilitySpec::default();
    // every round's default differs from the built-in one and from the previous round's
    s.prometheus.scrape_interval = PromDuration::from_secs(30 + round as u64);
    s
}

/// Builds N client TLS configs (each agent's own certificate, issued by the gateway's CA as
/// `Join` does) and writes N registered clusters with the capability installed into the store.
/// Returns them and the time the store writes took.
async fn prepare(
    data: &Path,
    n: usize,
    etcd: Option<&EtcdConfig>,
) -> Result<(Vec<Arc<ClientConfig>>, Duration), String> {
    let ca = Ca::load_or_create(&data.join("pki")).map_err(|e| format!("CA: {e}"))?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| e.to_string())?;

    let store: Arc<dyn Store> = match etcd {
        Some(cfg) => Arc::new(EtcdStore::new(cfg).map_err(|e| format!("etcd store: {e}"))?),
        None => Arc::new(EmbeddedStore::open(data.join("store.redb")).map_err(|e| format!("store: {e}"))?),
    };
    let state = State::new(store, UpstreamState::Installed);
    let mut configs = Vec::with_capacity(n);
    let mut writing = Duration::ZERO;
    for i in 0..n {
        let id = ClusterId::new(format!("scale-{i:05}")).map_err(|e| e.to_string())?;
        let chain_pem = ca.sign_agent(&csr, &id, Duration::from_secs(24 * 3600)).map_err(|e| e.to_string())?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut cfg = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(Arc::clone(&verifier))
            .with_client_auth_cert(chain, key_der.clone_key())
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        configs.push(Arc::new(cfg));
        let mut cluster = Cluster::new(id);
        cluster.install(CapabilityName::metrics(), now()).map_err(|e| e.to_string())?;
        let t = Instant::now();
        state.create_cluster(&cluster).await.map_err(|e| format!("create cluster: {e}"))?;
        writing += t.elapsed();
    }
    // the store file is locked while open: close it before the gateway opens it
    drop(state);
    Ok((configs, writing))
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

async fn run_one(args: &Args, dir: &Path, n: usize, tick: f64) -> Result<RunResult, String> {
    let mut res = RunResult { agents: n, ..RunResult::default() };
    let limit = Duration::from_secs_f64(args.timeout);
    let data = dir.join(format!("gateway-{n}"));
    let t = Instant::now();
    let replicas = args.replicas.max(1);
    let etcd = if args.etcd || replicas > 1 { Some(opni_metrics_tests::etcd::Etcd::start().await) } else { None };
    let etcd_cfg = etcd.as_ref().map(|e| EtcdConfig {
        endpoints: vec![e.client_url().to_owned()],
        prefix: format!("/sync-scale-{n}/"),
        tls: None,
    });
    let (configs, writing) = prepare(&data, n, etcd_cfg.as_ref()).await?;
    res.prepare_s = t.elapsed().as_secs_f64();
    res.commit_ms = writing.as_secs_f64() * 1000.0 / n.max(1) as f64;
    eprintln!(
        "[{n}] prepared {n} clusters and certificates in {:.1}s; one store write (commit) took {:.2} ms",
        res.prepare_s, res.commit_ms
    );

    let bin = args.bin_dir.join("opni-metrics-gateway");
    let mut gws = Vec::new();
    for r in 0..replicas {
        // every replica: the shared store and the one CA that signed the agents' certificates
        let (replica_data, extra) = match &etcd_cfg {
            None => (data.clone(), String::new()),
            Some(cfg) => {
                let d = dir.join(format!("gateway-{n}-replica-{r}"));
                std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
                let pki = data.join("pki");
                let extra = format!(
                    "store:\n  etcd:\n    endpoints: ['{}']\n    prefix: '{}'\n\
                     ca:\n  cert: '{}'\n  key: '{}'\n",
                    cfg.endpoints[0],
                    cfg.prefix,
                    pki.join("ca.pem").display(),
                    pki.join("ca-key.pem").display()
                );
                (d, extra)
            }
        };
        gws.push(Gateway::spawn(&bin, &replica_data, &args.resync_interval, &extra).await?);
    }
    let mut gw = Fleet { gws };
    let first_data = if etcd_cfg.is_some() { dir.join(format!("gateway-{n}-replica-0")) } else { data.clone() };
    let token = std::fs::read_to_string(first_data.join("admin.token")).map_err(|e| format!("admin token: {e}"))?;
    let token = token.trim().to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    res.gw_base_kib = gw.rss_kib();

    let generations = args.rounds + 1;
    let shared = Arc::new(Shared::new(n, generations));
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let addrs: Vec<String> = gw.gws.iter().map(|g| format!("127.0.0.1:{}", g.grpc)).collect();
    let client_before = status_field("self", "VmRSS");

    // connect
    let start = shared.now();
    let mut tasks = JoinSet::new();
    for (i, cfg) in configs.into_iter().enumerate() {
        let (_keep, rx) = watch::channel(cfg);
        let addr = &addrs[i % addrs.len()];
        let channel = tls_channel(addr, "localhost", rx, &ChannelOptions::default()).map_err(|e| e.to_string())?;
        tasks.spawn(agent(i, channel, Arc::clone(&shared), Arc::clone(&gate), args.constant_status, stop_rx.clone()));
    }
    let settled = |s: &Shared| {
        s.count(|x| x.connected.load(Ordering::Relaxed) != 0) + s.connect_errors.load(Ordering::Relaxed) as usize
    };
    wait_until(limit, || settled(&shared) >= n).await;
    res.connected = shared.count(|x| x.connected.load(Ordering::Relaxed) != 0);
    let last_connect = shared.slots.iter().map(|s| s.connected.load(Ordering::Relaxed)).max().unwrap_or(start);
    res.connect_s = last_connect.saturating_sub(start) as f64 / 1e6;
    eprintln!("[{n}] {} agents connected in {:.2}s", res.connected, res.connect_s);

    let live = |s: &Slot| s.connected.load(Ordering::Relaxed) != 0;
    let all_done = |g: usize| {
        let shared = Arc::clone(&shared);
        move || shared.slots.iter().filter(|s| live(s)).all(|s| s.done[g].load(Ordering::Relaxed) != 0)
    };
    let outcome = async {
        if !wait_until(limit, all_done(1)).await {
            return Err(format!(
                "initial sync: {} of {} agents done within {limit:?}",
                shared.count(|s| s.done[1].load(Ordering::Relaxed) != 0),
                res.connected
            ));
        }
        let last = shared.slots.iter().map(|s| s.done[1].load(Ordering::Relaxed)).max().unwrap_or(start);
        res.initial_s = last.saturating_sub(start) as f64 / 1e6;
        eprintln!("[{n}] initial sync of every agent done {:.2}s after the first connect", res.initial_s);

        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        res.gw_idle_kib = gw.rss_kib();
        res.gw_threads_idle = gw.threads();
        let client_after = status_field("self", "VmRSS");
        res.client_kib_per_agent = client_after.saturating_sub(client_before) as f64 / n.max(1) as f64;

        let mgmt = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.gws[0].management))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("management: {e}"))?;
        let mut nodeconfig = NodeConfigurationClient::new(mgmt);
        // after the settle the blocking pool's idle threads have exited (10 s keep-alive)
        let idle_threads = gw.thread_ids();
        for round in 1..=args.rounds {
            let g = round + 1;
            shared.generation.store(g as u32, Ordering::Relaxed);
            let syncs_before = shared.syncs.load(Ordering::Relaxed);
            let (gw_cpu, my_cpu) = (gw.cpu(tick), process_cpu(std::process::id(), tick));
            let gw_workers = gw.threads_cpu(&idle_threads, tick);
            let gw_disk = gw.disk_bytes();
            let etcd_cpu = etcd.as_ref().map_or(0.0, |e| process_cpu(e.pid(), tick));
            let mut req = tonic::Request::new(SetDefaultConfigurationRequest {
                spec: Some(spec(round).into()),
                revision: None,
                dry_run: false,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().map_err(|_| "token is not ASCII")?);
            let t0 = shared.now();
            nodeconfig.set_default_configuration(req).await.map_err(|s| format!("SetDefaultConfiguration: {s}"))?;
            let set_ms = shared.now().saturating_sub(t0) as f64 / 1000.0;
            let ok = wait_until(limit, all_done(g)).await;
            let r = Round {
                round,
                set_ms,
                notified: quantiles(
                    shared.slots.iter().filter(|s| live(s)).map(|s| s.notified[g].load(Ordering::Relaxed)),
                    t0,
                    res.connected,
                ),
                config: quantiles(
                    shared.slots.iter().filter(|s| live(s)).map(|s| s.config[g].load(Ordering::Relaxed)),
                    t0,
                    res.connected,
                ),
                done: quantiles(
                    shared.slots.iter().filter(|s| live(s)).map(|s| s.done[g].load(Ordering::Relaxed)),
                    t0,
                    res.connected,
                ),
                syncs_per_agent: (shared.syncs.load(Ordering::Relaxed) - syncs_before) as f64
                    / res.connected.max(1) as f64,
                gateway_cpu: gw.cpu(tick) - gw_cpu,
                gateway_workers_cpu: gw.threads_cpu(&idle_threads, tick) - gw_workers,
                gateway_disk_bytes: gw.disk_bytes().saturating_sub(gw_disk),
                etcd_cpu: etcd.as_ref().map_or(0.0, |e| process_cpu(e.pid(), tick)) - etcd_cpu,
                client_cpu: process_cpu(std::process::id(), tick) - my_cpu,
            };
            eprintln!(
                "[{n}] round {round}: SyncNow max {:.0} ms, all synced {:.0} ms ({} missing), gateway {:.2} CPU-s \
                 ({:.2} on the runtime's workers)",
                r.notified.max, r.done.max, r.done.missing, r.gateway_cpu, r.gateway_workers_cpu
            );
            res.rounds.push(r);
            if !ok {
                return Err(format!("round {round}: not every agent synced within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        res.gw_after_kib = gw.rss_kib();
        res.gw_peak_kib = gw.peak_kib();
        res.gw_threads_peak = gw.threads();
        // every agent holds the same, last config
        let digests: std::collections::BTreeSet<Option<Digest>> =
            shared.slots.iter().filter(|s| live(s)).map(|s| *s.digest.lock().unwrap()).collect();
        if digests.len() != 1 {
            return Err(format!("agents hold {} different digests at the end", digests.len()));
        }
        Ok::<(), String>(())
    }
    .await;

    let mut errors = Vec::new();
    if let Err(e) = &outcome {
        errors.push(e.clone());
    }
    for (what, c) in [
        ("connect errors", &shared.connect_errors),
        ("Sync errors", &shared.sync_errors),
        ("streams lost", &shared.stream_ends),
    ] {
        let c = c.load(Ordering::Relaxed);
        if c > 0 {
            errors.push(format!("{c} {what}"));
        }
    }
    if let Some(e) = shared.first_error.lock().unwrap().clone() {
        errors.push(format!("first: {e}"));
    }
    for tail in gw.dead() {
        errors.push(format!("a gateway died:\n{tail}"));
    }
    res.errors = errors.join("; ");

    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(30), async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tasks.abort_all();
    }
    gw.stop().await;
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// report

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn q3(q: &Quantiles) -> String {
    format!("{:.0} / {:.0} / {:.0}", q.p50, q.p99, q.max)
}

fn report(args: &Args, runs: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Machine: {}.", machine());
    let _ = writeln!(
        s,
        "Gateway: {}, `sync.resyncInterval: {}`; agents: simulated in this process on {} worker thread(s), one \
         mutual-TLS connection each, at most {} connecting at once; {} default-config change(s) per run. \
         Gateway figures are summed over the replicas.\n",
        if args.replicas > 1 || args.etcd {
            format!(
                "{} `opni-metrics-gateway` release binaries, each in its own process, on one real etcd \
                 (agents spread evenly, the change made through the first)",
                args.replicas.max(1)
            )
        } else {
            "`opni-metrics-gateway` release binary in its own process, embedded store".to_owned()
        },
        args.resync_interval,
        args.client_threads,
        args.connect_concurrency,
        args.rounds
    );
    if args.constant_status {
        let _ = writeln!(
            s,
            "**Diagnostic run (`--constant-status`)**: every agent reports the same empty status on \
             every `Sync`, so the gateway persists no status during the fan-outs; real agents report \
             their new applied digest, which the gateway writes to the store before answering.\n"
        );
    }
    let _ =
        writeln!(s, "Fan-out: milliseconds from the `SetDefaultConfiguration` call, per agent (p50 / p99 / max).\n");
    let _ = writeln!(
        s,
        "| agents | round | Set call (ms) | SyncNow received | new config received | synced (every Sync answered) | Syncs per agent | gateway CPU-s (runtime workers + other threads) | gateway CPU per Sync (ms) | etcd CPU-s | gateway disk writes (MiB) | agents' CPU-s |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---|---|---|---:|---|---:|---:|---:|---:|");
    for r in runs {
        for x in &r.rounds {
            let missing = if x.done.missing > 0 { format!(" ({} not synced)", x.done.missing) } else { String::new() };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {} | {}{} | {:.2} | {:.2} ({:.2} + {:.2}) | {:.3} | {} | {:.1} | {:.2} |",
                r.agents,
                x.round,
                x.set_ms,
                q3(&x.notified),
                q3(&x.config),
                q3(&x.done),
                missing,
                x.syncs_per_agent,
                x.gateway_cpu,
                x.gateway_workers_cpu,
                x.gateway_cpu - x.gateway_workers_cpu,
                x.gateway_cpu * 1000.0 / (x.syncs_per_agent * r.connected as f64).max(1.0),
                if x.etcd_cpu > 0.0 { format!("{:.2}", x.etcd_cpu) } else { "–".into() },
                x.gateway_disk_bytes as f64 / (1024.0 * 1024.0),
                x.client_cpu
            );
        }
    }
    let _ = writeln!(s, "\nConnecting and memory (gateway RSS from `/proc/<pid>/status`).\n");
    let _ = writeln!(
        s,
        "| agents | connected | connect all (s) | initial sync all (s) | gateway RSS at start (MiB) | idle with agents (MiB) | **KiB per idle agent** | after fan-outs (MiB) | peak (MiB) | gateway threads idle / end | agents' side KiB per agent |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {} | {} | **{:.1}** | {} | {} | {} / {} | {:.1} |",
            r.agents,
            r.connected,
            r.connect_s,
            r.initial_s,
            mib(r.gw_base_kib),
            mib(r.gw_idle_kib),
            r.kib_per_agent(),
            mib(r.gw_after_kib),
            mib(r.gw_peak_kib),
            r.gw_threads_idle,
            r.gw_threads_peak,
            r.client_kib_per_agent
        );
    }
    let commits: Vec<String> = runs.iter().map(|r| format!("{:.2} ms ({} writes)", r.commit_ms, r.agents)).collect();
    let _ = writeln!(
        s,
        "\nOne store write (a durable commit: redb, or etcd with --replicas/--etcd), measured while preparing each run's \
         clusters one after another with the gateway's own store code: {}.",
        commits.join(", ")
    );
    let errors: Vec<_> = runs.iter().filter(|r| !r.errors.is_empty()).collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nErrors:\n");
        for r in errors {
            let _ = writeln!(s, "- {} agents: {}", r.agents, r.errors);
        }
    }
    if let Some(big) = runs.iter().filter(|r| r.agents >= 10_000).max_by_key(|r| r.agents) {
        let worst = big.rounds.iter().map(|x| x.done.max).fold(f64::NAN, f64::max);
        let all =
            big.connected == big.agents && big.rounds.iter().all(|x| x.done.missing == 0) && big.errors.is_empty();
        let _ = writeln!(
            s,
            "\nTarget (DESIGN §8) at {} agents: every agent synced within 5 s — worst round {:.2} s: **{}**; \
             ≤ 64 KiB gateway memory per idle agent — {:.1} KiB: **{}**.",
            big.agents,
            worst / 1000.0,
            if all && worst <= 5000.0 { "met" } else { "not met" },
            big.kib_per_agent(),
            if big.kib_per_agent() <= 64.0 { "met" } else { "not met" }
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = args.bin_dir.join("opni-metrics-gateway");
    if !bin.is_file() {
        eprintln!(
            "{} not found; build it with: cargo build --release -p opni-metrics-daemons --bins (or pass --bin-dir)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let most = args.agents.iter().copied().max().unwrap_or(0) as u64;
    if let Some(limit) = open_files_limit()
        && limit < most + 256
    {
        eprintln!(
            "the open-file limit is {limit}; {most} agents need about {}: run `ulimit -n {}` first \
             (the gateway inherits it)",
            most + 256,
            most + 1024
        );
        return ExitCode::from(2);
    }
    let tmp = tempfile::Builder::new().prefix("sync-scale-").tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("sync-scale")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tick = clock_ticks();
    let mut runs = Vec::new();
    let mut failed = false;
    for &n in &args.agents {
        match rt.block_on(run_one(&args, tmp.path(), n, tick)) {
            Ok(r) => {
                failed |= !r.errors.is_empty();
                runs.push(r);
            }
            Err(e) => {
                eprintln!("[{n}] run failed: {e}");
                failed = true;
            }
        }
    }
    drop(rt);
    let text = report(&args, &runs);
    println!("{text}");
    if let Some(out) = &args.out
        && let Err(e) = std::fs::write(out, &text)
    {
        eprintln!("writing {}: {e}", out.display());
        failed = true;
    }
    if args.keep_tmp {
        eprintln!("kept {}", tmp.keep().display());
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
