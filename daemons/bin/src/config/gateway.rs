//! The gateway's config file: inert YAML data, validated section by section into
//! [`GatewayPlan`] (the library's [`GatewaySettings`] and what the binary builds itself).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::remote_write::{Limits, StatusOptions};
use serde::Deserialize;

use opni_metrics_gateway::cluster_driver::TenantDeletion;
use opni_metrics_gateway::sync::SyncTiming;
use opni_metrics_gateway::{GatewaySettings, Listen, UpstreamSettings};
use opni_metrics_store::StoreConfig;
use opni_metrics_transport::tls::TlsFiles;

use crate::{ConfigError, LogFormat};

pub use super::gateway_kube::{KubePlan, KubernetesConfig, LeaseConfig};

/// The gateway's config file (YAML, camelCase keys). Every field has a default.
#[derive(Debug, Clone, Deserialize)]
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
    /// Where the gateway keeps its state (embedded store, CA, admin token).
    pub data_dir: PathBuf,
    /// The management gRPC listener (Capability, NodeConfiguration, Clusters, Bootstrap).
    pub management: ManagementConfig,
    /// Sync timing.
    pub sync: SyncConfig,
    /// Agent certificates issued at `Join`.
    pub bootstrap: BootstrapConfig,
    /// Where state lives: `embedded: {path}` (default `<dataDir>/store.redb`) or
    /// `etcd: {endpoints, prefix, tls}` for several gateway replicas.
    pub store: Option<StoreConfig>,
    /// Kubernetes: the upstream Cortex as a `MonitoringCluster` and its controller.
    pub kubernetes: Option<KubernetesConfig>,
    /// The query proxy for Grafana.
    pub query: super::readers::QueryConfig,
    /// How readers (query proxy, CortexAdmin) authenticate.
    pub readers: super::readers::ReadersConfig,
    /// The admin console.
    pub console: super::readers::ConsoleConfig,
    /// The operator's CA, shared by every replica: `{cert, key}` (a mounted Secret's `tls.crt`
    /// and `tls.key`); without it each replica makes its own in `dataDir/pki`.
    pub ca: Option<CaConfig>,
    /// Leader election among replicas on etcd (who runs the uninstall tasks).
    pub election: ElectionConfig,
    /// The async runtime (`workerThreads`).
    pub runtime: super::RuntimeConfig,
}

/// Leader election among gateway replicas on etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// The leader's lease: a leader cut off from etcd stops within `ttl - ttl/5`, and another
    /// takes over after `ttl`. At least 3s; default 15s.
    pub ttl: PromDuration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self { ttl: opni_metrics_store::etcd::DEFAULT_LEASE_TTL.into() }
    }
}

/// An operator-supplied CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaConfig {
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM), mode 0600 (or 0440 in a Secret volume).
    pub key: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            upstream: UpstreamConfig::default(),
            remote_write: RemoteWriteConfig::default(),
            log: LogConfig::default(),
            data_dir: PathBuf::from("data/gateway"),
            management: ManagementConfig::default(),
            sync: SyncConfig::default(),
            bootstrap: BootstrapConfig::default(),
            store: None,
            kubernetes: None,
            query: super::readers::QueryConfig::default(),
            readers: super::readers::ReadersConfig::default(),
            console: super::readers::ConsoleConfig::default(),
            ca: None,
            election: ElectionConfig::default(),
            runtime: super::RuntimeConfig::default(),
        }
    }
}

/// The management listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Address to listen on; a loopback address unless `tls` is set (the bearer token is
    /// accepted only from loopback peers; off loopback, admins present client certificates).
    pub listen: String,
    /// File holding the admin bearer token; created with a random token if missing
    /// (default `<dataDir>/admin.token`).
    pub token_file: Option<PathBuf>,
    /// TLS with admin client certificates.
    pub tls: Option<super::readers::ManagementTlsConfig>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9091".into(), token_file: None, tls: None }
    }
}

/// Sync timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Every connected agent gets `SyncNow` this often (± 20 %).
    pub resync_interval: PromDuration,
    /// Heartbeats on the notification streams.
    pub heartbeat_interval: PromDuration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { resync_interval: PromDuration::from_secs(300), heartbeat_interval: PromDuration::from_secs(30) }
    }
}

/// Bootstrap settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Validity of agent certificates (agents renew at two thirds of it).
    pub cert_validity: PromDuration,
    /// Names (DNS or IP) on the gateway's certificate when the embedded CA issues it.
    pub server_names: Vec<String>,
    /// `Join` attempts allowed per peer address per minute.
    pub join_rate_per_minute: u32,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            cert_validity: PromDuration::from_secs(7 * 24 * 3600),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            join_rate_per_minute: 10,
        }
    }
}

/// The agent-facing gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub listen: String,
    /// Server certificate, key, and the CA that signs agent certificates; when absent the
    /// embedded CA (in `<dataDir>/pki`) issues them.
    pub tls: Option<TlsFiles>,
    /// Connections older than this are closed gracefully, so certificate rotation and
    /// revocation take effect.
    pub max_connection_age: PromDuration,
    /// Longest time a TLS handshake may take.
    pub handshake_timeout: PromDuration,
    /// Most TLS handshakes in progress; more connections are closed at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes in progress from one peer address (an IPv6 /64 counts as one), so
    /// one host cannot take every handshake slot; more connections from it are closed at once.
    pub max_handshakes_per_address: usize,
    /// Most open agent connections; more are closed at once.
    pub max_connections: usize,
    /// The largest HTTP/2 frame accepted from agents, bytes (16384 to 16777215): a pushed body
    /// then crosses in fewer frames and writes.
    pub max_frame_size: u32,
    /// Server-side deadline of every agent RPC (above upstream.timeout).
    pub request_timeout: PromDuration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        // the library's defaults, in the config's units
        let s = GatewaySettings::default();
        Self {
            listen: "0.0.0.0:9090".into(),
            tls: None,
            max_connection_age: s.max_connection_age.into(),
            handshake_timeout: s.handshake_timeout.into(),
            max_handshakes: s.max_handshakes,
            max_handshakes_per_address: s.max_handshakes_per_address,
            max_connections: s.max_connections,
            max_frame_size: s.max_frame_size,
            request_timeout: s.rpc_timeout.into(),
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
    /// How the upstream deletes a tenant's data (`cortex` or `unsupported`).
    pub tenant_deletion: TenantDeletion,
    /// Readiness path of an external upstream (`/ready` for Cortex and Mimir, `/-/ready` for a
    /// Prometheus receiver); its answer drives whether agents are enabled.
    pub ready_path: String,
    /// How often the upstream's status is read.
    pub status_interval: PromDuration,
    /// How long the upstream must fail continuously before agents are disabled.
    pub failing_grace: PromDuration,
    /// Base URL of the query frontend's Prometheus API (default `<url's origin>/prometheus`).
    pub query_url: Option<String>,
    /// Base URL of the ruler (default the origin of `url`).
    pub ruler_url: Option<String>,
    /// Base URL of Cortex's status pages and the distributor (default the origin of `url`).
    pub admin_url: Option<String>,
    /// The ingesters' HTTP port for flushes (default the admin URL's port).
    pub ingester_http_port: Option<u16>,
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
            tenant_deletion: TenantDeletion::Cortex,
            ready_path: "/ready".into(),
            status_interval: PromDuration::from_secs(10),
            failing_grace: PromDuration::from_secs(120),
            query_url: None,
            ruler_url: None,
            admin_url: None,
            ingester_http_port: None,
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
    /// Body bytes all pushes in flight upstream may hold together.
    pub max_in_flight_bytes: usize,
    /// The share of maxInFlightBytes one tenant may hold (0 < share <= 1).
    pub tenant_share: f64,
    /// Pushes one tenant may have in flight upstream.
    pub max_requests_per_tenant: usize,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        let l = Limits::default();
        let b = opni_metrics_gateway::budget::BudgetSettings::default();
        Self {
            max_body_bytes: l.max_body_bytes,
            max_decoded_bytes: l.max_decoded_bytes,
            rate_limit_as_503: false,
            max_in_flight_bytes: b.max_in_flight_bytes,
            tenant_share: b.tenant_share,
            max_requests_per_tenant: b.max_requests_per_tenant,
        }
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

impl LogConfig {
    /// Applies the `--log-format` and `--log-level` flags (they win over the file).
    pub fn override_with(&mut self, format: Option<LogFormat>, level: Option<&String>) {
        if let Some(f) = format {
            self.format = f;
        }
        if let Some(l) = level {
            self.level.clone_from(l);
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// A validated gateway configuration: the library's settings plus what the binary builds
/// itself (the store, the Kubernetes client).
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    /// The gateway's settings.
    pub settings: GatewaySettings,
    /// Where state lives.
    pub store: StoreConfig,
    /// Kubernetes, when configured.
    pub kubernetes: Option<KubePlan>,
    /// The election lease's time to live (replicas on etcd).
    pub election_ttl: std::time::Duration,
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

pub(crate) fn positive(field: &str, d: PromDuration) -> Result<Duration, ConfigError> {
    if d.as_millis() == 0 { Err(ConfigError::invalid(field, "must be above 0s")) } else { Ok(d.as_duration()) }
}

impl UpstreamConfig {
    /// The upstream settings, parsed; their values are checked by
    /// [`GatewaySettings::validate`] (which [`GatewayConfig::validate`] runs), in one place for
    /// the daemon and every embedder.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming a field that does not parse.
    pub fn validate(&self) -> Result<UpstreamSettings, ConfigError> {
        let url: http::Uri = self
            .url
            .parse()
            .map_err(|_| ConfigError::invalid("upstream.url", format!("{:?} is not a URL", self.url)))?;
        let tenant_header = HeaderName::from_bytes(self.tenant_header.as_bytes())
            .map_err(|_| ConfigError::invalid("upstream.tenantHeader", "not a valid header name"))?;
        let client_cert = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(ConfigError::invalid("upstream.cert", "cert and key must be given together")),
        };
        let mut u = UpstreamSettings::default();
        u.url = url;
        u.tenant_header = tenant_header;
        u.timeout = self.timeout.as_duration();
        u.max_concurrency = self.max_concurrency;
        u.ca.clone_from(&self.ca);
        u.client_cert = client_cert;
        u.max_response_body = self.max_response_body_bytes.max(256);
        u.tenant_deletion = self.tenant_deletion;
        u.ready_path.clone_from(&self.ready_path);
        u.status_interval = self.status_interval.as_duration();
        u.failing_grace = self.failing_grace.as_duration();
        Ok(u)
    }
}

impl SyncConfig {
    /// The sync timing (checked by [`GatewaySettings::validate`]).
    pub fn timing(&self) -> SyncTiming {
        let mut t = SyncTiming::default();
        t.resync_interval = self.resync_interval.as_duration();
        t.heartbeat_interval = self.heartbeat_interval.as_duration();
        t
    }
}

impl GatewayConfig {
    /// Validates every section.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<GatewayPlan, ConfigError> {
        let mut listen = Listen::default();
        listen.grpc = socket("grpc.listen", &self.grpc.listen)?;
        listen.http = socket("http.listen", &self.http.listen)?;
        listen.management = socket("management.listen", &self.management.listen)?;
        if !listen.management.ip().is_loopback() && self.management.tls.is_none() {
            return Err(ConfigError::invalid(
                "management.listen",
                "must be a loopback address unless management.tls (admin client certificates) is set",
            ));
        }
        let mut s = GatewaySettings::default();
        s.listen = listen;
        s.grpc_tls.clone_from(&self.grpc.tls);
        s.data_dir.clone_from(&self.data_dir);
        s.admin_token_file.clone_from(&self.management.token_file);
        s.sync = self.sync.timing();
        s.cert_validity = self.bootstrap.cert_validity.as_duration();
        s.server_names.clone_from(&self.bootstrap.server_names);
        s.max_connection_age = self.grpc.max_connection_age.as_duration().max(Duration::from_secs(1));
        s.handshake_timeout = self.grpc.handshake_timeout.as_duration().max(Duration::from_millis(100));
        s.max_handshakes = self.grpc.max_handshakes;
        s.max_handshakes_per_address = self.grpc.max_handshakes_per_address;
        s.max_frame_size = self.grpc.max_frame_size;
        s.max_connections = self.grpc.max_connections;
        s.rpc_timeout = self.grpc.request_timeout.as_duration();
        s.join_rate_per_minute = self.bootstrap.join_rate_per_minute;
        s.upstream = self.upstream.validate()?;
        s.limits = limits("remoteWrite", self.remote_write.max_body_bytes, self.remote_write.max_decoded_bytes)?;
        s.status = StatusOptions {
            rate_limit_as_503: self.remote_write.rate_limit_as_503,
            local_retry_after: Some(Duration::from_secs(1)),
        };
        s.budget.max_in_flight_bytes = self.remote_write.max_in_flight_bytes;
        s.budget.tenant_share = self.remote_write.tenant_share;
        s.budget.max_requests_per_tenant = self.remote_write.max_requests_per_tenant;
        s.management_tls = self.management.tls.as_ref().map(super::readers::ManagementTlsConfig::settings);
        super::readers::apply(&mut s, &self.query, &self.readers, &self.upstream)?;
        s.console = self.console.settings(s.readers.oidc.is_some())?;
        s.ca = self
            .ca
            .as_ref()
            .map(|c| opni_metrics_gateway::settings::CaFiles { cert: c.cert.clone(), key: c.key.clone() });
        // every value check lives in the library, for the daemon and embedders alike
        s.validate().map_err(|e| ConfigError::invalid(e.field, e.reason))?;
        let store = self.store.clone().unwrap_or_else(|| {
            StoreConfig::Embedded(opni_metrics_store::embedded::EmbeddedConfig {
                path: self.data_dir.join("store.redb"),
            })
        });
        store.validate().map_err(|e| ConfigError::invalid("store", opni_metrics_core::error_chain(&e)))?;
        let kubernetes = match &self.kubernetes {
            None => None,
            Some(k) => Some(k.validate(crate::host_name)?),
        };
        let ttl = self.election.ttl.as_duration();
        if ttl < opni_metrics_store::etcd::MIN_LEASE_TTL {
            let min = PromDuration::from(opni_metrics_store::etcd::MIN_LEASE_TTL);
            return Err(ConfigError::invalid("election.ttl", format!("must be at least {min}")));
        }
        Ok(GatewayPlan { settings: s, store, kubernetes, election_ttl: ttl })
    }
}
