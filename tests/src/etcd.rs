//! A real single-member etcd (Debian `etcd-server`) on free loopback ports with its own data
//! directory, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::prometheus::free_port;

/// A running etcd.
pub struct Etcd {
    child: Child,
    client_url: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .expect("etcd is not installed; install it with: apt-get install -y etcd-server")
}

impl Etcd {
    /// Starts etcd and waits until it has a leader (its `/health` says so).
    ///
    /// # Panics
    /// If etcd is missing or does not become healthy within 30 s (test code).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = Self::spawn(dir.path(), &client_url, &peer_url, true);
        let mut etcd = Self { child, client_url, peer_url, dir };
        etcd.wait_healthy().await;
        etcd
    }

    fn spawn(dir: &std::path::Path, client_url: &str, peer_url: &str, new: bool) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("etcd.log")).expect("log");
        Command::new(binary())
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg(format!("--initial-cluster-state={}", if new { "new" } else { "existing" }))
            // values up to the store's 1.5 MiB limit plus the request around them
            .arg("--max-request-bytes=2097152")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd")
    }

    async fn wait_healthy(&mut self) {
        let url = format!("{}/health", self.client_url);
        let ready = crate::http::eventually(Duration::from_secs(30), "etcd healthy", || async {
            let r = crate::http::get(&url).await?;
            if r.status.is_success() && r.text().contains("true") { Ok(()) } else { Err(r.text()) }
        })
        .await;
        if let Err(e) = ready {
            let exited = self.child.try_wait().ok().flatten();
            panic!("{e}; etcd exit status {exited:?}; log:\n{}", self.log_tail());
        }
    }

    /// Kills etcd and starts it again on the same ports and data (a member restart).
    ///
    /// # Panics
    /// If it does not come back healthy (test code).
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), &self.client_url, &self.peer_url, false);
        self.wait_healthy().await;
    }

    /// The etcd process's id (for CPU and memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
