//! What every daemon shares: config loading, logging, signals and the operational endpoints
//! (`/metrics`, `/healthz`, `/readyz`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;

use crate::http_server::text;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this daemon (the message names the field and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (its YAML path, or the flag).
        field: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// An invalid value.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Reads a YAML config file, or the type's defaults when `path` is `None`.
///
/// # Errors
/// [`ConfigError`].
pub fn load_yaml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else { return Ok(T::default()) };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse { path: shown, message: e.to_string() })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` to stderr; `filter` uses `RUST_LOG` syntax (e.g. `info,opni=debug`).
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

/// State behind `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct Ops {
    /// The metrics registry.
    pub registry: Registry,
    ready: AtomicBool,
}

impl Ops {
    /// Ops state over `registry`, not yet ready.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self { registry, ready: AtomicBool::new(false) })
    }

    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Answers an operational path, or `None` for other paths.
    pub fn route(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        match path {
            "/healthz" => Some(text(StatusCode::OK, "ok\n")),
            "/readyz" if self.ready.load(Ordering::Acquire) => Some(text(StatusCode::OK, "ready\n")),
            "/readyz" => Some(text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")),
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render(&self.registry))));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                Some(r)
            }
            _ => None,
        }
    }
}

/// `e` and its sources joined with `: `.
pub use opni_metrics_core::error_chain;

/// Why a daemon did not start: printed as one line, exit code [`EXIT_CONFIG`](crate::EXIT_CONFIG).
#[derive(Debug)]
pub struct Refusal(String);

/// Turns an error into a [`Refusal`] prefixed with `context` (`""` for none); for `map_err`.
pub fn refusal<E: std::error::Error>(context: &'static str) -> impl FnOnce(E) -> Refusal {
    move |e| {
        let chain = error_chain(&e);
        Refusal(if context.is_empty() { chain } else { format!("{context}: {chain}") })
    }
}

/// The process exit code for a daemon's run: success, or the refusal printed as
/// `program: reason` and exit code 64.
pub fn exit(program: &str, run: Result<(), Refusal>) -> std::process::ExitCode {
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Refusal(reason)) => {
            tracing::error!("{reason}");
            eprintln!("{program}: {reason}");
            std::process::ExitCode::from(crate::EXIT_CONFIG as u8)
        }
    }
}

/// This host's name (`HOSTNAME`, else the kernel's), for identities such as a Lease holder.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "opni-metrics-gateway".to_owned())
}
