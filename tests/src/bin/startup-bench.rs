//! `startup-bench`: how long each daemon takes from being started to answering `/readyz` with
//! 200, on the real release binaries with the embedded store (the DESIGN §8 target: ≤ 200 ms).
//!
//! Three cases, each started `--runs` times:
//!
//! 1. `gateway, first start`: an empty data directory, so the gateway also creates its store,
//!    its embedded CA (key and certificate), its serving certificate and its admin token.
//! 2. `gateway, restart`: the same data directory again.
//! 3. `agent`: an agent with certificate files and no node driver, against a running gateway;
//!    it is ready once its notification stream to the gateway is up.
//!
//! The clock starts just before the process is spawned and stops at the first 200 from
//! `/readyz`, polled every millisecond, so a figure includes process start-up and is at most
//! about a millisecond late.
// Benchmark harness: a panic is how a broken fixture reports itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use opni_metrics_tests::http::get;
use opni_metrics_tests::pki::{CertFiles, Pki};
use opni_metrics_tests::procstat::Proc;
use opni_metrics_tests::prometheus::free_port;

/// Start-up to ready of the gateway and the agent.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Starts of each case.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

/// Spawns `bin` with `config` and returns it with the time until `ready` answered 200.
async fn start(name: &'static str, bin: &Path, config: &Path, ready: &str, dir: &Path) -> (Proc, Duration) {
    let since = Instant::now();
    let p = Proc::spawn(name, bin, &[format!("--config={}", config.display())], &[], dir).await.unwrap();
    loop {
        if let Ok(r) = get(ready).await
            && r.status.as_u16() == 200
        {
            return (p, since.elapsed());
        }
        assert!(since.elapsed() < Duration::from_secs(30), "{name} not ready in 30 s:\n{}", p.log_tail());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn report(case: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{case:<22} n={} min {:.1} ms, median {:.1} ms, max {:.1} ms",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

/// A gateway config in `dir` (data in `dir/data`), with TLS files or the embedded CA.
fn gateway_config(dir: &Path, tls: Option<&CertFiles>) -> (PathBuf, u16, u16, u16) {
    let (grpc, http, mgmt) = (free_port(), free_port(), free_port());
    let tls = tls.map(|c| format!(", tls: {}", c.tls_yaml())).unwrap_or_default();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "dataDir: {}\ngrpc: {{listen: 127.0.0.1:{grpc}{tls}}}\nhttp: {{listen: 127.0.0.1:{http}}}\nmanagement: {{listen: 127.0.0.1:{mgmt}}}\nquery: {{listen: 127.0.0.1:0}}\nupstream: {{url: http://127.0.0.1:9/api/v1/push}}\nlog: {{level: warn}}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    (config, grpc, http, mgmt)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let gateway_bin = args.bin_dir.join("opni-metrics-gateway");
    let agent_bin = args.bin_dir.join("opni-metrics-agent");
    let (mut first, mut again, mut agents) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let dir = tempfile::tempdir().unwrap();
        let (config, _, http, _) = gateway_config(dir.path(), None);
        let ready = format!("http://127.0.0.1:{http}/readyz");
        let (gw, t) = start("gateway", &gateway_bin, &config, &ready, dir.path()).await;
        first.push(t);
        gw.stop().await;
        let (gw, t) = start("gateway", &gateway_bin, &config, &ready, dir.path()).await;
        again.push(t);
        gw.stop().await;
    }

    // agents against one running gateway, each with its own data directory
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "startup-bench");
    let (config, grpc, http, mgmt) = gateway_config(dir.path(), Some(&pki.gateway("gateway")));
    let (gw, _) = start("gateway", &gateway_bin, &config, &format!("http://127.0.0.1:{http}/readyz"), dir.path()).await;
    opni_metrics_tests::registry::install_with_cli(
        &args.bin_dir,
        &format!("127.0.0.1:{mgmt}"),
        &dir.path().join("data").join("admin.token"),
        "startup",
    )
    .await
    .unwrap();
    let certs = pki.agent("agent", "startup");
    for i in 0..args.runs {
        let port = free_port();
        let config = dir.path().join(format!("agent-{i}.yaml"));
        std::fs::write(
            &config,
            format!(
                "dataDir: {}\ndriver: {{kind: none}}\nhttp: {{listen: 127.0.0.1:{port}}}\ngateway: {{address: 127.0.0.1:{grpc}, serverName: localhost, tls: {}}}\nlog: {{level: warn}}\n",
                dir.path().join(format!("agent-{i}")).display(),
                certs.tls_yaml()
            ),
        )
        .unwrap();
        let (agent, t) =
            start("agent", &agent_bin, &config, &format!("http://127.0.0.1:{port}/readyz"), dir.path()).await;
        agents.push(t);
        agent.stop().await;
    }
    gw.stop().await;

    println!("start-up to ready (/readyz 200), {} starts each:", args.runs);
    report("gateway, first start", first);
    report("gateway, restart", again);
    report("agent", agents);
}
