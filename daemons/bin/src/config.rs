//! The daemons' config files: inert YAML data (camelCase keys, unknown keys refused), each
//! section validated into the libraries' settings.

pub mod agent;
pub mod gateway;
pub mod gateway_kube;
pub mod readers;

/// The daemon's async runtime (`runtime:` in both config files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads running the daemon's tasks; 0 means one per CPU; unset, the daemon's default
    /// (agent 1, gateway one per CPU). Fewer threads mean fewer cross-thread wake-ups per
    /// request, so a relay spends less CPU per request with one; more threads use more cores.
    pub worker_threads: Option<usize>,
}

impl RuntimeConfig {
    /// Builds the runtime, with `default_workers` threads unless the config says otherwise
    /// (0: one per CPU).
    ///
    /// # Errors
    /// The operating system's, when threads or the I/O driver cannot be created.
    pub fn build(&self, name: &str, default_workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        let n = self.worker_threads.unwrap_or(default_workers);
        if n > 0 {
            b.worker_threads(n);
        }
        b.thread_name(name).enable_all().build()
    }
}
