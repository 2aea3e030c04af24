//! Real Prometheus processes (the Debian `prometheus` package): a remote-write receiver and an
//! agent-mode sender, each in its own temporary directory, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::http::{eventually, get};

/// A port on 127.0.0.1 that was free a moment ago, for a daemon started next that must know its
/// port in advance (or keep it across a restart): from 20000–31999, never the same twice in one
/// process (see the comment inside for why not `bind(0)`).
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768–60999): a port from `bind(0)`, once released, can
    // be handed at once to any outgoing connection's local end, or to another `bind(0)`, and
    // the daemon that was meant to listen on it then fails with "address in use". Ports here
    // are never chosen by the kernel, and this process hands each out once, starting at an
    // offset of its own so that test binaries running side by side rarely meet.
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = u16::try_from(FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind port 0")
}

/// A TCP connection to `to` from the local IPv4 address `from` (any of 127.0.0.0/8 is this
/// host): a second host, as far as the peer can tell.
///
/// # Errors
/// An unparsable `from`, or the bind or connect failing.
pub async fn connect_from(from: &str, to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().map_err(std::io::Error::other)?)?;
    socket.connect(to).await
}

/// The `prometheus` binary, or a clear message how to get it.
///
/// # Errors
/// When it is not installed.
pub fn binary() -> Result<PathBuf, String> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("prometheus");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err("prometheus is not installed; install it with: apt-get install -y prometheus".into())
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// Its web port on 127.0.0.1.
    pub port: u16,
    /// Its working directory.
    pub dir: tempfile::TempDir,
}

/// A scrape job for the agent.
#[derive(Debug, Clone)]
pub struct Job {
    /// Job name.
    pub name: String,
    /// `host:port` targets.
    pub targets: Vec<String>,
}

impl Prometheus {
    async fn spawn(config: &str, args: impl FnOnce(&Path) -> Vec<String>) -> Result<Self, String> {
        let bin = binary()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let args = args(dir.path());
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=info")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn prometheus: {e}"))?;
        let p = Self { child, port, dir };
        p.wait_ready().await?;
        Ok(p)
    }

    /// A remote-write receiver (`--web.enable-remote-write-receiver`) that scrapes nothing.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn receiver() -> Result<Self, String> {
        Self::spawn("global:\n  scrape_interval: 1h\n", |dir| {
            vec![
                "--web.enable-remote-write-receiver".into(),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
            ]
        })
        .await
    }

    /// An agent-mode Prometheus scraping `jobs` every `scrape_interval` and remote-writing to
    /// `remote_write_url` with short retry back-offs.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn agent(jobs: &[Job], scrape_interval: &str, remote_write_url: &str) -> Result<Self, String> {
        let mut cfg = format!(
            "global:\n  scrape_interval: {scrape_interval}\n  external_labels:\n    sender: test-agent\nremote_write:\n  - url: {remote_write_url}\n    remote_timeout: 30s\n    queue_config:\n      min_backoff: 50ms\n      max_backoff: 1s\n      batch_send_deadline: 1s\n      retry_on_http_429: true\nscrape_configs:\n"
        );
        for j in jobs {
            cfg.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: [{}]\n",
                j.name,
                j.targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
            ));
        }
        Self::spawn(&cfg, |dir| {
            vec![
                "--enable-feature=agent".into(),
                format!("--storage.agent.path={}", dir.join("wal").display()),
                "--storage.remote.flush-deadline=1s".into(),
            ]
        })
        .await
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The remote-write receiver URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Waits until `/-/ready` answers 200.
    ///
    /// # Errors
    /// After 30 s, with the tail of its log.
    pub async fn wait_ready(&self) -> Result<(), String> {
        let url = format!("{}/-/ready", self.url());
        eventually(Duration::from_secs(30), "prometheus ready", || async {
            match get(&url).await {
                Ok(r) if r.status.is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| format!("{e}\nlog:\n{}", self.log_tail()))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs an instant query and returns the `data.result` array.
    ///
    /// # Errors
    /// Transport or query errors.
    pub async fn query(&self, q: &str) -> Result<Vec<serde_json::Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url(), urlencode(q));
        let r = get(&url).await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("query {q}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Its own `/metrics` text.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn own_metrics(&self) -> Result<String, String> {
        Ok(get(&format!("{}/metrics", self.url())).await?.text())
    }

    /// Sends SIGTERM and waits for exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Percent-encodes a query string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Every raw sample value of `selector` in the last hour (a range-vector query).
    ///
    /// # Errors
    /// Transport or query errors.
    pub async fn raw_values(&self, selector: &str) -> Result<Vec<f64>, String> {
        let series = self.query(&format!("{selector}[1h]")).await?;
        let mut out = Vec::new();
        for s in series {
            for v in s["values"].as_array().cloned().unwrap_or_default() {
                if let Some(x) = v.get(1).and_then(|x| x.as_str()).and_then(|x| x.parse::<f64>().ok()) {
                    out.push(x);
                }
            }
        }
        Ok(out)
    }
}
