//! Helpers of `opni-metrics-demo`: a free port, Prometheus found (or installed from Debian's
//! packages when run as root), a receiver Prometheus, and small HTTP waits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which(bin: &str) -> Option<PathBuf> {
    opni_metrics_agent::process_driver::find_binary(Path::new(bin), &crate::search_path())
}

/// Prometheus from `PATH`; installed from Debian's packages first when missing and this is
/// root on a machine with apt-get (as `.ci/test` does).
///
/// # Errors
/// Not installed and not installable here.
pub fn find_prometheus() -> Result<PathBuf> {
    if let Some(p) = which("prometheus") {
        return Ok(p);
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    if root && which("apt-get").is_some() {
        println!("prometheus is missing; installing it with apt-get (Debian package `prometheus`)…");
        let ok = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok(&["update", "-qq"]) && ok(&["install", "-y", "-qq", "--no-install-recommends", "prometheus"]) {
            // the package starts its own service on the default port; the demo needs only the binary
            let _ = std::process::Command::new("systemctl").args(["stop", "prometheus"]).status();
            if let Some(p) = which("prometheus") {
                return Ok(p);
            }
        }
    }
    Err(anyhow!(
        "prometheus is not installed; install it with `sudo apt-get install -y prometheus` and run the demo again"
    ))
}

/// GET `url`: status and body.
///
/// # Errors
/// Transport errors.
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    get(url, None).await
}

/// GET `url` with an `Authorization` header: its status and body.
///
/// # Errors
/// Transport errors.
pub async fn http_get_with(url: &str, authorization: &str) -> Result<(u16, String)> {
    get(url, Some(authorization)).await
}

async fn get(url: &str, authorization: Option<&str>) -> Result<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::get(url);
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let resp = client.request(req.body(http_body_util::Empty::new())?).await?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 250 ms until it holds, for at most `limit` (a condition only observable
/// by asking: a process becoming ready, data arriving).
///
/// # Errors
/// `what` did not happen in time.
pub async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{what} did not happen within {limit:?}")
}

/// Starts a Prometheus with the remote-write receiver on `port`, its files in `dir`.
///
/// # Errors
/// The directory or the process could not be made.
pub fn start_receiver(bin: &Path, dir: &Path, port: u16) -> Result<tokio::process::Child> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 1h\n")?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the receiver prometheus")
}
