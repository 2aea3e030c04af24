//! The gateway's settings: plain data with documented defaults, checked by
//! [`GatewaySettings::validate`] and turned into running parts by
//! [`GatewayBuilder::build`](crate::GatewayBuilder::build).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use http::header::HeaderName;
use opni_metrics_core::remote_write::{Limits, StatusOptions};
use opni_metrics_core::spec::SpecError;
use opni_metrics_transport::tls::TlsFiles;

use crate::cluster_driver::TenantDeletion;
use crate::sync::SyncTiming;

/// Where [`Gateway::serve`](crate::Gateway::serve) listens (the embedder may instead mount
/// the services on its own servers and bind nothing).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Listen {
    /// Agent-facing gRPC over mutual TLS (`RemoteWrite`, `NodeSync`, `Bootstrap.Join`).
    /// Default `0.0.0.0:9090`.
    pub grpc: SocketAddr,
    /// Ops HTTP (`/metrics`, `/healthz`, `/readyz`). Default `0.0.0.0:8080`.
    pub http: SocketAddr,
    /// Management gRPC (loopback unless an [`Authenticator`](crate::auth::Authenticator) that
    /// does not rely on loopback is given). Default `127.0.0.1:9091`.
    pub management: SocketAddr,
}

impl Listen {
    /// Every listener on 127.0.0.1 on a port the system picks (read them back from
    /// [`Gateway::addresses`](crate::Gateway::addresses)): for tests, and for an embedder
    /// running beside other services.
    pub fn ephemeral_loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self { grpc: any, http: any, management: any }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([0, 0, 0, 0], 9090)),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            management: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

/// Upstream (Cortex-compatible store) settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamSettings {
    /// Full push URL. Default `http://127.0.0.1:9009/api/v1/push`.
    pub url: Uri,
    /// Header carrying the tenant. Default `X-Scope-OrgID` (Cortex and Mimir).
    pub tenant_header: HeaderName,
    /// Deadline of one upstream request, including reading the response; keep it below the
    /// agents' request timeout. Default 15 s.
    pub timeout: Duration,
    /// Most requests in flight upstream; more are refused at once (503). Default 1024.
    pub max_concurrency: usize,
    /// CA bundle for an `https` upstream; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS to the upstream.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Largest upstream response body relayed (longer ones are cut). Default 64 KiB.
    pub max_response_body: usize,
    /// How the upstream deletes a tenant's data. Default Cortex's purger.
    pub tenant_deletion: TenantDeletion,
    /// The external upstream's readiness path. Default `/ready` (Cortex, Mimir); a
    /// Prometheus receiver answers on `/-/ready`.
    pub ready_path: String,
    /// How often the cluster driver's status is read. Default 10 s.
    pub status_interval: Duration,
    /// How long the upstream must fail continuously before agents are disabled. Default 2 min.
    pub failing_grace: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: Uri::from_static("http://127.0.0.1:9009/api/v1/push"),
            tenant_header: HeaderName::from_static("x-scope-orgid"),
            timeout: Duration::from_secs(15),
            max_concurrency: 1024,
            ca: None,
            client_cert: None,
            max_response_body: 64 * 1024,
            tenant_deletion: TenantDeletion::Cortex,
            ready_path: "/ready".into(),
            status_interval: Duration::from_secs(10),
            failing_grace: Duration::from_secs(120),
        }
    }
}

/// Everything a [`Gateway`](crate::Gateway) needs besides its parts (store, drivers).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewaySettings {
    /// Listen addresses for [`Gateway::serve`](crate::Gateway::serve).
    pub listen: Listen,
    /// Serving certificate, key and the CA bundle that verifies agents; when `None` the
    /// embedded CA (in `<data_dir>/pki`) issues the serving certificate. Default `None`.
    pub grpc_tls: Option<TlsFiles>,
    /// Where the embedded CA and the admin token live. Default `data/gateway`.
    pub data_dir: PathBuf,
    /// File holding the admin bearer token (created with a random token when missing);
    /// `None`: `<data_dir>/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    /// Sync timing.
    pub sync: SyncTiming,
    /// Validity of agent certificates issued at `Join`. Default 365 days.
    pub cert_validity: Duration,
    /// Names (DNS or IP) on the serving certificate the embedded CA issues. Default
    /// `localhost`, `127.0.0.1`.
    pub server_names: Vec<String>,
    /// Agent connections older than this are closed gracefully. Default 1 h.
    pub max_connection_age: Duration,
    /// Longest TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// The upstream.
    pub upstream: UpstreamSettings,
    /// Remote-write body limits.
    pub limits: Limits,
    /// Status-rule options (429 as 503).
    pub status: StatusOptions,
    /// How long [`Gateway::shutdown`](crate::Gateway::shutdown) waits for in-flight work.
    /// Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            grpc_tls: None,
            data_dir: PathBuf::from("data/gateway"),
            admin_token_file: None,
            sync: SyncTiming::default(),
            cert_validity: Duration::from_secs(365 * 24 * 3600),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            max_connection_age: Duration::from_secs(3600),
            handshake_timeout: Duration::from_secs(10),
            upstream: UpstreamSettings::default(),
            limits: Limits::default(),
            status: StatusOptions { rate_limit_as_503: false, local_retry_after: Some(Duration::from_secs(1)) },
            drain_timeout: Duration::from_secs(30),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::new(field, reason)
}

impl GatewaySettings {
    /// The admin token file.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file.clone().unwrap_or_else(|| self.data_dir.join("admin.token"))
    }

    /// Checks what types cannot: durations above zero, the upstream URL's scheme, limits.
    ///
    /// # Errors
    /// [`SpecError`] naming the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !matches!(self.upstream.url.scheme_str(), Some("http" | "https")) || self.upstream.url.host().is_none() {
            return Err(invalid("upstream.url", "must be an http:// or https:// URL with a host"));
        }
        if self.upstream.timeout.is_zero() || self.upstream.timeout >= Duration::from_secs(30) {
            return Err(invalid("upstream.timeout", "must be above 0s and below Prometheus's 30s remote timeout"));
        }
        if !self.upstream.ready_path.starts_with('/') {
            return Err(invalid("upstream.readyPath", "must be a path starting with /"));
        }
        if self.upstream.status_interval.is_zero() {
            return Err(invalid("upstream.statusInterval", "must be above 0s"));
        }
        if self.upstream.max_concurrency == 0 {
            return Err(invalid("upstream.maxConcurrency", "must be at least 1"));
        }
        for (field, d) in [
            ("sync.resyncInterval", self.sync.resync_interval),
            ("sync.heartbeatInterval", self.sync.heartbeat_interval),
            ("bootstrap.certValidity", self.cert_validity),
            ("grpc.maxConnectionAge", self.max_connection_age),
            ("grpc.handshakeTimeout", self.handshake_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be above 0s"));
            }
        }
        if self.server_names.is_empty() {
            return Err(invalid("bootstrap.serverNames", "must name at least one DNS name or IP address"));
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_decoded_bytes < self.limits.max_body_bytes {
            return Err(invalid("remoteWrite.maxBodyBytes", "must be above 0 and at most maxDecodedBytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(GatewaySettings::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut s = GatewaySettings::default();
        s.upstream.timeout = Duration::from_secs(30);
        assert_eq!(s.validate().map_err(|e| e.field), Err("upstream.timeout".to_owned()));
        let mut s = GatewaySettings::default();
        s.upstream.url = Uri::from_static("ftp://x/");
        assert_eq!(s.validate().map_err(|e| e.field), Err("upstream.url".to_owned()));
        let mut s = GatewaySettings::default();
        s.sync.heartbeat_interval = Duration::ZERO;
        assert_eq!(s.validate().map_err(|e| e.field), Err("sync.heartbeatInterval".to_owned()));
    }
}
