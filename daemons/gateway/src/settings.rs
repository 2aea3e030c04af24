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
    /// Management gRPC (`Capability`, `NodeConfiguration`, `CortexOps`, `CortexAdmin`, `Rbac`,
    /// ...). The admin bearer token is accepted only from loopback peers; off loopback, use
    /// [`GatewaySettings::management_tls`] and admin client certificates. Default
    /// `127.0.0.1:9091`.
    pub management: SocketAddr,
    /// The query proxy (HTTP, the Prometheus API under `/prometheus/api/v1/`). Default
    /// `0.0.0.0:8086`.
    pub query: SocketAddr,
}

impl Listen {
    /// Every listener on 127.0.0.1 on a port the system picks (read them back from
    /// [`Gateway::addresses`](crate::Gateway::addresses)): for tests, and for an embedder
    /// running beside other services.
    pub fn ephemeral_loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self { grpc: any, http: any, management: any, query: any }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([0, 0, 0, 0], 9090)),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            management: SocketAddr::from(([127, 0, 0, 1], 9091)),
            query: SocketAddr::from(([0, 0, 0, 0], 8086)),
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
    /// Base URL of the Prometheus API of the query frontend (`<it>/api/v1/query`); `None`:
    /// `<scheme://host:port of url>/prometheus`.
    pub query_url: Option<Uri>,
    /// Base URL of the ruler (`<it>/api/v1/rules`, `<it>/prometheus/api/v1/rules`); `None`: the
    /// scheme, host and port of `url`.
    pub ruler_url: Option<Uri>,
    /// Base URL of the distributor's and Cortex's status pages (`/distributor/all_user_stats`,
    /// rings, `/config`, `/memberlist`); `None`: the scheme, host and port of `url`.
    pub admin_url: Option<Uri>,
    /// The ingesters' HTTP port, for flushing each active ingester found in the ring (whose
    /// addresses carry the gRPC port); `None`: the port of the admin URL.
    pub ingester_http_port: Option<u16>,
}

/// The upstream's APIs, resolved from [`UpstreamSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamApis {
    /// Query frontend's Prometheus API base (no trailing slash).
    pub query: String,
    /// Ruler base.
    pub ruler: String,
    /// Status and distributor base.
    pub admin: String,
    /// The ingesters' HTTP port, if fixed.
    pub ingester_http_port: Option<u16>,
}

fn origin(u: &Uri) -> String {
    format!("{}://{}", u.scheme_str().unwrap_or("http"), u.authority().map_or("", |a| a.as_str()))
}

fn base(u: &Uri) -> String {
    u.to_string().trim_end_matches('/').to_owned()
}

impl UpstreamSettings {
    /// The read and admin endpoints.
    pub fn apis(&self) -> UpstreamApis {
        let o = origin(&self.url);
        UpstreamApis {
            query: self.query_url.as_ref().map_or_else(|| format!("{o}/prometheus"), base),
            ruler: self.ruler_url.as_ref().map_or_else(|| o.clone(), base),
            admin: self.admin_url.as_ref().map_or_else(|| o.clone(), base),
            ingester_http_port: self.ingester_http_port,
        }
    }
}

/// How readers (query proxy, `CortexAdmin`) authenticate: API keys always, OpenID Connect
/// bearer tokens when configured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReaderSettings {
    /// The OpenID Connect issuer whose tokens are accepted.
    pub oidc: Option<OidcSettings>,
}

/// An operator-supplied CA: a certificate and its key (a Kubernetes Secret's `tls.crt` and
/// `tls.key`, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (PEM; its first certificate is the CA).
    pub cert: PathBuf,
    /// Its private key (PEM), readable by no one but its owner and group.
    pub key: PathBuf,
}

/// An OpenID Connect issuer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OidcSettings {
    /// The issuer URL, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// The audience tokens must carry in `aud` (the client id Grafana logs in with).
    pub audience: String,
    /// The JWKS URL; `None`: discovered from `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<Uri>,
    /// CA bundle for the issuer's HTTPS; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// The claim holding the subject. Default `sub`.
    pub subject_claim: String,
    /// The claim holding the groups (a list of strings, or one string). Default `groups`.
    pub groups_claim: String,
    /// Keys are fetched again after this long. Default 5 min.
    pub refresh_interval: Duration,
    /// A token signed by an unknown key triggers a fetch, at most this often. Default 10 s.
    pub min_refresh_interval: Duration,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
}

impl OidcSettings {
    /// Settings for `issuer` and `audience` with the defaults.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_url: None,
            ca: None,
            subject_claim: "sub".into(),
            groups_claim: "groups".into(),
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            leeway: Duration::from_secs(30),
        }
    }
}

/// TLS of an HTTP or gRPC listener that is optional.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerTls {
    /// Plain text.
    None,
    /// The serving certificate the agent-facing listener uses (the embedded CA's, or
    /// [`GatewaySettings::grpc_tls`]).
    Gateway,
    /// These files.
    Files {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
}

/// The query proxy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuerySettings {
    /// Its TLS. Default none.
    pub tls: ListenerTls,
    /// Longest a query may take, response included. Default 2 min.
    pub timeout: Duration,
    /// Largest response relayed; a longer one is cut off. Default 256 MiB.
    pub max_response_bytes: u64,
    /// Largest POST body accepted. Default 1 MiB.
    pub max_request_bytes: usize,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            tls: ListenerTls::None,
            timeout: Duration::from_secs(120),
            max_response_bytes: 256 << 20,
            max_request_bytes: 1 << 20,
        }
    }
}

/// TLS of the management listener: with `client_ca`, a client certificate it verifies
/// authenticates an admin from any address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagementTls {
    /// Serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA bundle of admin client certificates.
    pub client_ca: PathBuf,
}

impl ManagementTls {
    /// Serving certificate, key and the admin client CA.
    pub fn new(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Self {
        Self { cert, key, client_ca }
    }
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
            query_url: None,
            ruler_url: None,
            admin_url: None,
            ingester_http_port: None,
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
    /// Validity of agent certificates issued at `Join` and `Renew`. Agents renew at about two
    /// thirds of it; a deleted cluster's certificate is not renewed, so this bounds how long a
    /// stolen or revoked identity can be used. Default 7 days.
    pub cert_validity: Duration,
    /// Names (DNS or IP) on the serving certificate the embedded CA issues. Default
    /// `localhost`, `127.0.0.1`.
    pub server_names: Vec<String>,
    /// Agent connections older than this are closed gracefully. Default 1 h.
    pub max_connection_age: Duration,
    /// Longest TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress on the agent-facing listener; more connections are
    /// closed at once. Default 256.
    pub max_handshakes: usize,
    /// Most of those from one peer address (an IPv6 /64 counts as one), so one host cannot
    /// hold every slot and keep new agents out. Default 64 (a quarter of `max_handshakes`'s default).
    pub max_handshakes_per_address: usize,
    /// Most open agent-facing connections; more are closed at once. Default 10,000.
    pub max_connections: usize,
    /// The largest HTTP/2 frame the agent-facing server accepts (`SETTINGS_MAX_FRAME_SIZE`,
    /// 16 KiB to 16 MiB − 1). Larger frames mean fewer frames and writes per pushed body.
    pub max_frame_size: u32,
    /// Deadline of every agent-facing RPC on the server (the time until its answer starts; a
    /// notification stream is not cut). Default 30 s; above `upstream.timeout`.
    pub rpc_timeout: Duration,
    /// `Join` attempts allowed per peer address per minute (a burst of this many, refilled
    /// evenly). Default 10.
    pub join_rate_per_minute: u32,
    /// The upstream.
    pub upstream: UpstreamSettings,
    /// Remote-write body limits.
    pub limits: Limits,
    /// In-flight budgets of the forwarding path (global and per tenant).
    pub budget: crate::budget::BudgetSettings,
    /// Status-rule options (429 as 503).
    pub status: StatusOptions,
    /// How long [`Gateway::shutdown`](crate::Gateway::shutdown) waits for in-flight work.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// How readers authenticate.
    pub readers: ReaderSettings,
    /// The query proxy.
    pub query: QuerySettings,
    /// TLS of the management listener; `None`: plain text (keep it on loopback).
    pub management_tls: Option<ManagementTls>,
    /// The operator's CA, shared by every replica (certificate and key, PEM); `None`: an
    /// embedded CA generated in `data_dir/pki`, which suits a single replica only.
    pub ca: Option<CaFiles>,
    /// The admin console, under `/console/` on the query listener.
    pub console: crate::console::ConsoleSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        // the agent-facing listener's limits are the transport's defaults
        let incoming = opni_metrics_transport::grpc::IncomingLimits::default();
        Self {
            listen: Listen::default(),
            grpc_tls: None,
            data_dir: PathBuf::from("data/gateway"),
            admin_token_file: None,
            sync: SyncTiming::default(),
            cert_validity: Duration::from_secs(7 * 24 * 3600),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            max_connection_age: Duration::from_secs(3600),
            handshake_timeout: incoming.handshake_timeout,
            max_handshakes: incoming.max_handshakes,
            max_handshakes_per_address: incoming.max_handshakes_per_address,
            max_connections: incoming.max_connections,
            max_frame_size: 16_384,
            rpc_timeout: Duration::from_secs(30),
            join_rate_per_minute: 10,
            upstream: UpstreamSettings::default(),
            limits: Limits::default(),
            budget: crate::budget::BudgetSettings::default(),
            status: StatusOptions { rate_limit_as_503: false, local_retry_after: Some(Duration::from_secs(1)) },
            drain_timeout: Duration::from_secs(30),
            readers: ReaderSettings::default(),
            query: QuerySettings::default(),
            console: crate::console::ConsoleSettings::default(),
            ca: None,
            management_tls: None,
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
        // agents renew at two thirds of the lifetime: a connection made with the old
        // certificate must end (and its successor use the new one) before the old expires
        if self.max_connection_age >= self.cert_validity / 4 {
            return Err(invalid(
                "grpc.maxConnectionAge",
                "must be below a quarter of bootstrap.certValidity (connections made with a certificate must end before it expires)",
            ));
        }
        if self.max_handshakes_per_address == 0 {
            return Err(invalid("grpc.maxHandshakesPerAddress", "must be at least 1"));
        }
        if self.max_handshakes == 0 || self.max_connections == 0 || self.join_rate_per_minute == 0 {
            return Err(invalid("grpc.maxConnections", "connection, handshake and join limits must be at least 1"));
        }
        if !(16_384..=16_777_215).contains(&self.max_frame_size) {
            return Err(invalid("grpc.maxFrameSize", "must be from 16384 to 16777215 bytes (HTTP/2's bounds)"));
        }
        if self.rpc_timeout <= self.upstream.timeout {
            return Err(invalid("grpc.requestTimeout", "must be above upstream.timeout, or every slow push is cut"));
        }
        if self.server_names.is_empty() {
            return Err(invalid("bootstrap.serverNames", "must name at least one DNS name or IP address"));
        }
        for (field, u) in [
            ("upstream.queryUrl", &self.upstream.query_url),
            ("upstream.rulerUrl", &self.upstream.ruler_url),
            ("upstream.adminUrl", &self.upstream.admin_url),
        ] {
            if let Some(u) = u
                && (!matches!(u.scheme_str(), Some("http" | "https")) || u.host().is_none() || u.query().is_some())
            {
                return Err(invalid(field, "must be an http:// or https:// URL with a host and no query"));
            }
        }
        if self.query.timeout.is_zero() {
            return Err(invalid("query.timeout", "must be above 0s"));
        }
        if self.query.max_response_bytes == 0 || self.query.max_request_bytes == 0 {
            return Err(invalid("query.maxResponseBytes", "limits must be above 0"));
        }
        if let Some(o) = &self.readers.oidc {
            if !(o.issuer.starts_with("https://") || o.issuer.starts_with("http://")) {
                return Err(invalid(
                    "readers.oidc.issuer",
                    "must be an http(s) URL, exactly as tokens carry it in iss",
                ));
            }
            if o.audience.is_empty() {
                return Err(invalid("readers.oidc.audience", "must name the audience (client id) tokens carry"));
            }
            if o.subject_claim.is_empty() || o.groups_claim.is_empty() {
                return Err(invalid("readers.oidc.subjectClaim", "claim names must not be empty"));
            }
            if o.refresh_interval.is_zero() {
                return Err(invalid("readers.oidc.refreshInterval", "must be above 0s"));
            }
        }
        let b = &self.budget;
        if !(b.tenant_share > 0.0 && b.tenant_share <= 1.0) {
            return Err(invalid("remoteWrite.tenantShare", "must be above 0 and at most 1"));
        }
        if b.max_in_flight_bytes < self.limits.max_body_bytes || b.max_requests_per_tenant == 0 {
            return Err(invalid(
                "remoteWrite.maxInFlightBytes",
                "must hold at least one body of maxBodyBytes, and a tenant at least one request",
            ));
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
