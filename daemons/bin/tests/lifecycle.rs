//! The capability lifecycle with real processes: the gateway (embedded store, embedded CA,
//! YAML config), the `opni-metrics` CLI, an agent that joins with a bootstrap token and runs a
//! real Prometheus through the process driver, and a real Prometheus receiver behind a
//! recording proxy that also speaks Cortex's tenant deletion API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::WAIT;
use opni_metrics_tests::http::{eventually, get};
use opni_metrics_tests::prometheus::{Prometheus, free_port};
use opni_metrics_tests::target::CounterTarget;
use opni_metrics_tests::upstream::{Behaviour, Upstream};

struct Gateway {
    proc: common::Daemon,
    grpc: u16,
    http: u16,
    mgmt: u16,
    dir: PathBuf,
}

impl Gateway {
    async fn start(dir: &Path, upstream: &str, ports: Option<(u16, u16, u16)>) -> Self {
        let g = common::GatewayProcess::start(
            dir,
            upstream,
            ports,
            "",
            "  tenantDeletion: cortex\n",
            "sync:\n  resyncInterval: 2s\n",
        )
        .await;
        Self { proc: g.proc, grpc: g.grpc, http: g.http, mgmt: g.mgmt, dir: g.dir }
    }

    fn ports(&self) -> (u16, u16, u16) {
        (self.grpc, self.http, self.mgmt)
    }

    async fn cli(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics"))
            .arg(format!("--address=127.0.0.1:{}", self.mgmt))
            .arg(format!("--token-file={}", self.dir.join("admin.token").display()))
            .args(args)
            .output()
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args).await;
        assert!(o.status.success(), "opni-metrics {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("-o");
        a.push("json");
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }
}

async fn agent(gw: &Gateway, dir: &Path, port: u16, token: &str, cluster: &str) -> common::Daemon {
    let args = vec![
        format!("--listen=127.0.0.1:{port}"),
        format!("--gateway=127.0.0.1:{}", gw.grpc),
        "--gateway-server-name=localhost".into(),
        format!("--bootstrap-token={token}"),
        format!("--cluster-id={cluster}"),
        format!("--gateway-ca={}", gw.dir.join("pki/ca.pem").display()),
        format!("--data-dir={}", dir.display()),
        "--log-level=warn".into(),
    ];
    common::Daemon::spawn_raw(env!("CARGO_BIN_EXE_opni-metrics-agent"), args, format!("http://127.0.0.1:{port}/readyz"))
        .await
}

async fn status(gw: &Gateway, cluster: &str) -> serde_json::Value {
    gw.json(&["capability", "status", cluster]).await
}

/// Waits until the capability status satisfies `pred`.
async fn status_until(
    gw: &Gateway,
    cluster: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(WAIT, what, || async {
        let s = status(gw, cluster).await;
        if pred(&s) { Ok(s) } else { Err(s.to_string()) }
    })
    .await
    .unwrap()
}

fn has_condition(s: &serde_json::Value, prefix: &str) -> bool {
    s["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c.as_str().is_some_and(|c| c.starts_with(prefix))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_install_configure_restart_uninstall_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Prometheus::receiver().await.unwrap();
    let upstream = Upstream::start(Behaviour::Proxy(receiver.write_url())).await;
    let mut gw = Gateway::start(tmp.path(), &upstream.url(), None).await;

    // bad input first: clear errors
    let o = gw.cli(&["capability", "install", "a|b"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cluster"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gw.cli(&["capability", "install", "unknown"]).await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("not registered"), "{}", String::from_utf8_lossy(&o.stderr));

    // join
    let token =
        gw.ok(&["tokens", "create", "--ttl", "10m", "--max-uses", "1", "--label", "env=test"]).await.trim().to_owned();
    let agent_port = free_port();
    let _agent = agent(&gw, &tmp.path().join("agent"), agent_port, &token, "c1").await;
    let clusters = gw.json(&["clusters", "list"]).await;
    assert_eq!(clusters[0]["id"], "c1");
    assert_eq!(clusters[0]["labels"]["env"], "test");

    // a used-up token is refused with a clear message
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics-agent"))
        .args([
            format!("--listen=127.0.0.1:{}", free_port()),
            format!("--gateway=127.0.0.1:{}", gw.grpc),
            "--gateway-server-name=localhost".into(),
            format!("--bootstrap-token={token}"),
            "--cluster-id=c2".into(),
            format!("--gateway-ca={}", gw.dir.join("pki/ca.pem").display()),
            format!("--data-dir={}", tmp.path().join("agent2").display()),
        ])
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("used 1 of 1"), "{}", String::from_utf8_lossy(&o.stderr));

    // install: the agent's Prometheus starts and its samples arrive under the cluster's tenant
    gw.ok(&["capability", "install", "c1"]).await;
    status_until(&gw, "c1", "prometheus running", |s| {
        s["enabled"] == true && s["inSync"] == true && has_condition(s, "prometheus_ready=true")
    })
    .await;
    eventually(WAIT, "agent metrics at the receiver", || async {
        let r = receiver.query("up{job=\"opni-agent\"}").await?;
        if r.is_empty() { Err("no series yet".into()) } else { Ok(()) }
    })
    .await
    .unwrap();
    assert!(upstream.requests().iter().all(|r| r.tenants == ["c1"]), "only the cluster's tenant upstream");

    // a node config change reaches the agent through SyncNow and Prometheus restarts with it
    let target = CounterTarget::start().await;
    let spec = tmp.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "prometheus:\n  scrapeInterval: 1s\n  scrapeJobs:\n    - name: counter\n      targets: ['{}']\n",
            target.addr
        ),
    )
    .unwrap();
    let before = status(&gw, "c1").await["desiredDigest"].clone();
    gw.ok(&["node-config", "set", "c1", "-f", spec.to_str().unwrap()]).await;
    let s =
        status_until(&gw, "c1", "new config applied", |s| s["inSync"] == true && s["desiredDigest"] != before).await;
    assert_ne!(s["appliedDigest"], before);
    eventually(WAIT, "counter scraped by the restarted prometheus", || async {
        let r = receiver.query("test_scrapes_total{job=\"counter\"}").await?;
        if r.is_empty() { Err("no series yet".into()) } else { Ok(()) }
    })
    .await
    .unwrap();

    // bad specs and stale revisions are refused with the field named
    std::fs::write(&spec, "prometheus:\n  queue:\n    maxShards: 0\n").unwrap();
    let o = gw.cli(&["node-config", "set", "c1", "-f", spec.to_str().unwrap()]).await;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("prometheus.queue.maxShards"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&spec, "prometheus:\n  scrapeIntervall: 1s\n").unwrap();
    let o = gw.cli(&["node-config", "set", "c1", "-f", spec.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("scrapeIntervall"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&spec, "prometheus:\n  scrapeInterval: 2s\n").unwrap();
    let o = gw.cli(&["node-config", "set", "c1", "-f", spec.to_str().unwrap(), "--revision", "1"]).await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("aborted"), "{}", String::from_utf8_lossy(&o.stderr));

    // the gateway restarts: every state survives
    let ports = gw.ports();
    assert_eq!(gw.proc.terminate_ref().await.code(), Some(0), "SIGTERM exits cleanly");
    gw = Gateway::start(tmp.path(), &upstream.url(), Some(ports)).await;
    let clusters = gw.json(&["clusters", "list"]).await;
    assert_eq!(clusters[0]["capabilities"][0]["name"], "metrics", "{clusters}");
    let cfg = gw.json(&["node-config", "get", "c1"]).await;
    assert_eq!(cfg["spec"]["prometheus"]["scrapeJobs"][0]["name"], "counter");
    status_until(&gw, "c1", "agent reconnected and in sync", |s| s["connected"] == true && s["inSync"] == true).await;

    // uninstall with data deletion: completes, the tenant's data is purged, Prometheus stops
    let out = gw.cli(&["capability", "uninstall", "c1", "--delete-data"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stored data deleted"),
        "progress shown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(upstream.purged(), vec!["c1".to_owned()]);
    status_until(&gw, "c1", "prometheus stopped", |s| {
        s["enabled"] == false && has_condition(s, "prometheus_ready=false")
    })
    .await;
    assert!(gw.json(&["clusters", "get", "c1"]).await[0]["capabilities"].as_array().unwrap().is_empty());

    // cancel mid-uninstall restores the capability and re-enables the agent
    gw.ok(&["capability", "install", "c1"]).await;
    status_until(&gw, "c1", "prometheus running again", |s| {
        s["enabled"] == true && has_condition(s, "prometheus_ready=true")
    })
    .await;
    gw.ok(&["capability", "uninstall", "c1", "--initial-delay", "1h", "--no-wait"]).await;
    status_until(&gw, "c1", "disabled during uninstall", |s| {
        s["enabled"] == false && has_condition(s, "prometheus_ready=false")
    })
    .await;
    let o = gw.cli(&["clusters", "delete", "c1"]).await;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("still has capabilities"),
        "delete refused: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    gw.ok(&["capability", "cancel-uninstall", "c1"]).await;
    status_until(&gw, "c1", "restored and running", |s| {
        s["enabled"] == true && s["inSync"] == true && has_condition(s, "prometheus_ready=true")
    })
    .await;
    eventually(WAIT, "remote write flowing again through the restarted gateway", || async {
        let m = get(&format!("http://127.0.0.1:{}/metrics", ports.1)).await?.text();
        if m.contains("opni_gateway_remote_write_requests_total{cluster=\"c1\",code=\"2xx\"}") {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await
    .unwrap();
}

/// `opni-metrics cortex …` against the gateway binary (external upstream): presets, set from a
/// preset and from a file, get as YAML, dry run naming the field, history, status, and an
/// install the external driver refuses in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cortex_cli_configures_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let gw = Gateway::start(dir.path(), &upstream.url(), None).await;

    let presets = gw.json(&["cortex", "config", "presets"]).await;
    assert_eq!(presets.as_array().unwrap().len(), 2);
    let o = gw.cli(&["cortex", "config", "set", "--preset", "tiny"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown preset \"tiny\""));
    assert!(gw.ok(&["cortex", "config", "set", "--preset", "all-in-one"]).await.contains("stored at revision"));
    assert!(gw.ok(&["cortex", "config", "set", "--preset", "all-in-one"]).await.contains("unchanged"));
    let yaml = gw.ok(&["cortex", "config", "get", "-o", "yaml"]).await;
    assert!(yaml.contains("allInOne") && yaml.contains("revision:"), "{yaml}");

    // edit what `get -o yaml` printed and set it back with optimistic concurrency
    let file = dir.path().join("cortex.yaml");
    std::fs::write(&file, yaml.replace("retention: 4w2d", "retention: 14d")).unwrap();
    let rev: serde_json::Value = gw.json(&["cortex", "config", "get"]).await;
    let rev = rev["revision"].as_u64().unwrap().to_string();
    let out = gw.ok(&["cortex", "config", "set", "-f", file.to_str().unwrap(), "--revision", &rev]).await;
    assert!(out.contains("stored at revision"), "{out}");
    let o = gw.cli(&["cortex", "config", "set", "-f", file.to_str().unwrap(), "--revision", &rev]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("aborted"), "{}", String::from_utf8_lossy(&o.stderr));

    // a dry run of a bad file names every field and exits non-zero; nothing is stored
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "mode: highlyAvailable\nstorage:\n  backend: filesystem\n  directory: /data\nretention: 1h\nworkloads:\n  ingestor: {}\n",
    )
    .unwrap();
    let o = gw.cli(&["cortex", "config", "dry-run", "-f", bad.to_str().unwrap()]).await;
    assert!(!o.status.success());
    let shown = String::from_utf8_lossy(&o.stdout);
    for field in ["storage.backend", "retention", "workloads.ingestor"] {
        assert!(shown.contains(field), "{field}: {shown}");
    }
    let history = gw.json(&["cortex", "config", "history"]).await;
    assert_eq!(history.as_array().unwrap().len(), 2);

    let status = gw.json(&["cortex", "status"]).await;
    assert_eq!(status["configuration"], "configured");
    assert_eq!(status["install"], "installed", "an external upstream is installed by definition: {status}");
    let o = gw.cli(&["cortex", "install", "--no-wait"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("installing failed") && err.contains("external"), "{err}");
}
