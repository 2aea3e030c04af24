//! CPU and memory accounting from `/proc`, and child processes, for the benchmark harnesses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::http::{eventually, get};

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime + stime in ticks from a `/proc/.../stat` line, and the command name.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU seconds a process used so far (all its threads).
pub fn process_cpu(pid: u32, tick: f64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, t)| t as f64 / tick)
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str, tick: f64) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, t)| t as f64 / tick)
        .sum()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in MiB; 0 when unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Peak resident set size (VmHWM) of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
}

/// Resident set size (VmRSS) of a process now, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// A child process of a benchmark (a daemon, Prometheus, vmagent) with its output in a log
/// file; killed when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: &'static str,
    child: Child,
    /// Its process id.
    pub pid: u32,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args` and `env`, its output going to `dir/<name>.log`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub async fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
    ) -> Result<Self, String> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", program.display()))?;
        let pid = child.id().ok_or("child exited at once")?;
        Ok(Self { name, child, pid, log })
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until `url` answers 2xx (at most 20 s).
    ///
    /// # Errors
    /// When it does not, or the process exited, with the log's tail.
    pub async fn wait_ok(&mut self, url: &str) -> Result<(), String> {
        let res = eventually(Duration::from_secs(20), &format!("{} ready at {url}", self.name), || async {
            match get(url).await {
                Ok(r) if r.status.is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("{} exited with {status}:\n{}", self.name, self.log_tail()));
        }
        res.map_err(|e| format!("{e}\n{} log:\n{}", self.name, self.log_tail()))
    }

    /// CPU seconds it used so far.
    pub fn cpu(&self, tick: f64) -> f64 {
        process_cpu(self.pid, tick)
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
