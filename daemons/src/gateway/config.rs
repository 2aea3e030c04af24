//! The gateway's configuration: inert YAML data, validated into [`GatewaySettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::remote_write::{Limits, StatusOptions};
use serde::Deserialize;

use crate::daemon::{ConfigError, LogFormat};
use crate::forward::UpstreamSettings;
use crate::tls::TlsFiles;

/// The gateway's config file (YAML, camelCase keys). Every field has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The agent-facing gRPC listener.
    pub grpc: GrpcConfig,
    /// The operational HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub http: HttpConfig,
    /// The Cortex-compatible store remote-write is forwarded to.
    pub upstream: UpstreamConfig,
    /// Limits of relayed remote-write requests.
    pub remote_write: RemoteWriteConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The agent-facing gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub listen: String,
    /// Server certificate, key, and the CA that signs agent certificates (required: agents are
    /// identified by their client certificates).
    pub tls: Option<TlsFiles>,
    /// Connections older than this are closed gracefully, so certificate rotation and
    /// revocation take effect.
    pub max_connection_age: PromDuration,
    /// Longest time a TLS handshake may take.
    pub handshake_timeout: PromDuration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            tls: None,
            max_connection_age: PromDuration::from_secs(3600),
            handshake_timeout: PromDuration::from_secs(10),
        }
    }
}

/// The operational HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "0.0.0.0:8080".into() }
    }
}

/// The upstream store.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Push URL: Cortex/Mimir `…/api/v1/push`, Prometheus `…/api/v1/write`,
    /// VictoriaMetrics `…/api/v1/write`.
    pub url: String,
    /// Header carrying the tenant.
    pub tenant_header: String,
    /// Deadline of one upstream request (keep it below the agents' request timeout).
    pub timeout: PromDuration,
    /// Most requests in flight upstream; more are refused at once with 503.
    pub max_concurrency: usize,
    /// CA bundle for an https upstream (system roots when absent).
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS to the upstream.
    pub cert: Option<PathBuf>,
    /// Client key for mutual TLS to the upstream.
    pub key: Option<PathBuf>,
    /// Largest upstream response body relayed.
    pub max_response_body_bytes: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9009/api/v1/push".into(),
            tenant_header: "X-Scope-OrgID".into(),
            timeout: PromDuration::from_secs(15),
            max_concurrency: 1024,
            ca: None,
            cert: None,
            key: None,
            max_response_body_bytes: 64 * 1024,
        }
    }
}

/// Remote-write limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// Largest body accepted as sent.
    pub max_body_bytes: usize,
    /// Largest decompressed size a body may declare.
    pub max_decoded_bytes: usize,
    /// Answer 503 instead of 429 (for senders that never retry 429).
    pub rate_limit_as_503: bool,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self { max_body_bytes: l.max_body_bytes, max_decoded_bytes: l.max_decoded_bytes, rate_limit_as_503: false }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Validated gateway settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// gRPC TLS files.
    pub grpc_tls: TlsFiles,
    /// Maximum connection age.
    pub max_connection_age: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Upstream.
    pub upstream: UpstreamSettings,
    /// Body limits.
    pub limits: Limits,
    /// Status options.
    pub status: StatusOptions,
}

pub(crate) fn socket(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::invalid(field, format!("{s:?} is not an ip:port address")))
}

pub(crate) fn limits(field: &str, max_body: usize, max_decoded: usize) -> Result<Limits, ConfigError> {
    if max_body == 0 || max_body > 256 << 20 {
        return Err(ConfigError::invalid(format!("{field}.maxBodyBytes"), "must be within 1..=256MiB"));
    }
    if max_decoded < max_body || max_decoded > 1 << 30 {
        return Err(ConfigError::invalid(format!("{field}.maxDecodedBytes"), "must be within maxBodyBytes..=1GiB"));
    }
    Ok(Limits { max_body_bytes: max_body, max_decoded_bytes: max_decoded })
}

impl GatewayConfig {
    /// Validates every field.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<GatewaySettings, ConfigError> {
        let grpc_listen = socket("grpc.listen", &self.grpc.listen)?;
        let http_listen = socket("http.listen", &self.http.listen)?;
        let grpc_tls = self.grpc.tls.clone().ok_or_else(|| {
            ConfigError::invalid("grpc.tls", "required: agents are identified by their client certificates")
        })?;
        let url: http::Uri = self
            .upstream
            .url
            .parse()
            .map_err(|_| ConfigError::invalid("upstream.url", format!("{:?} is not a URL", self.upstream.url)))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(ConfigError::invalid("upstream.url", "must be an http:// or https:// URL with a host"));
        }
        let tenant_header = HeaderName::from_bytes(self.upstream.tenant_header.as_bytes())
            .map_err(|_| ConfigError::invalid("upstream.tenantHeader", "not a valid header name"))?;
        let timeout = self.upstream.timeout.as_duration();
        if timeout.is_zero() || timeout >= Duration::from_secs(30) {
            return Err(ConfigError::invalid(
                "upstream.timeout",
                "must be above 0s and below Prometheus's 30s remote timeout",
            ));
        }
        if self.upstream.max_concurrency == 0 {
            return Err(ConfigError::invalid("upstream.maxConcurrency", "must be at least 1"));
        }
        let client_cert = match (&self.upstream.cert, &self.upstream.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(ConfigError::invalid("upstream.cert", "cert and key must be given together")),
        };
        let limits = limits("remoteWrite", self.remote_write.max_body_bytes, self.remote_write.max_decoded_bytes)?;
        Ok(GatewaySettings {
            grpc_listen,
            grpc_tls,
            max_connection_age: self.grpc.max_connection_age.as_duration().max(Duration::from_secs(1)),
            handshake_timeout: self.grpc.handshake_timeout.as_duration().max(Duration::from_millis(100)),
            http_listen,
            upstream: UpstreamSettings {
                url,
                tenant_header,
                timeout,
                max_concurrency: self.upstream.max_concurrency,
                ca: self.upstream.ca.clone(),
                client_cert,
                max_response_body: self.upstream.max_response_body_bytes.max(256),
            },
            limits,
            status: StatusOptions {
                rate_limit_as_503: self.remote_write.rate_limit_as_503,
                local_retry_after: Some(Duration::from_secs(1)),
            },
        })
    }
}
