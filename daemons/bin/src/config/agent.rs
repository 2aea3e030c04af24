//! The agent's config file: inert YAML data, validated into [`AgentPlan`].

use std::path::PathBuf;
use std::time::Duration;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::remote_write::{Limits, StatusOptions};
use serde::Deserialize;

use opni_metrics_agent::{AgentSettings, IdentitySource, JoinSettings, RelaySettings};
use opni_metrics_transport::grpc::ChannelOptions;
use opni_metrics_transport::tls::TlsFiles;

use super::gateway::{LogConfig, limits, positive, socket};
use crate::ConfigError;

/// The agent's config file (YAML, camelCase keys). Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where the agent keeps its identity (key, certificate) and Prometheus's files.
    pub data_dir: PathBuf,
    /// How to join the gateway the first time (ignored once an identity exists).
    pub bootstrap: BootstrapConfig,
    /// How the local Prometheus is run.
    pub driver: DriverConfig,
    /// Where Prometheus sends remote write (`/api/agent/push`), and `/metrics`, `/healthz`,
    /// `/readyz`.
    pub http: AgentHttpConfig,
    /// The gateway.
    pub gateway: GatewayConnConfig,
    /// Remote-write relay settings.
    pub remote_write: AgentRemoteWriteConfig,
    /// Logging.
    pub log: LogConfig,
    /// Rule discovery timing (what is discovered comes from the gateway's node spec).
    pub rules: AgentRulesConfig,
    /// The async runtime (`workerThreads`).
    pub runtime: super::RuntimeConfig,
}

/// Rule discovery timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentRulesConfig {
    /// How often rule files are read again (SIGHUP reads them at once).
    pub poll_interval: PromDuration,
    /// How often the complete set is sent to the gateway even when unchanged.
    pub resync_interval: PromDuration,
}

impl Default for AgentRulesConfig {
    fn default() -> Self {
        Self { poll_interval: PromDuration::from_secs(10), resync_interval: PromDuration::from_secs(600) }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/agent"),
            bootstrap: BootstrapConfig::default(),
            driver: DriverConfig::default(),
            http: AgentHttpConfig::default(),
            gateway: GatewayConnConfig::default(),
            remote_write: AgentRemoteWriteConfig::default(),
            log: LogConfig::default(),
            rules: AgentRulesConfig::default(),
            runtime: super::RuntimeConfig::default(),
        }
    }
}

/// First-join settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Bootstrap token (`<id>.<secret>`) from `opni-metrics tokens create`.
    pub token: Option<String>,
    /// Cluster id to register as (the gateway picks one when absent).
    pub cluster_id: Option<String>,
    /// CA that signs the gateway's certificate (the gateway's `pki/ca.pem`).
    pub ca_file: Option<PathBuf>,
    /// Instead of `caFile`: `sha256:<hex>`, the pin of the gateway's CA that `opni-metrics tokens
    /// create` prints; the agent then trusts the CA the gateway sends if its key matches.
    pub ca_pin: Option<String>,
    /// On Kubernetes: a Secret (in `driver.kubernetes.namespace`, else the pod's own) that keeps
    /// the joined identity, so that it survives the loss of `dataDir` (an `emptyDir`): restored
    /// at start, written before `Join` (the key) and after it, and after each renewal. Uses
    /// `driver.kubernetes.kubeconfig` whatever the driver.
    pub identity_secret: Option<String>,
}

/// Which node driver runs Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DriverKind {
    /// A child `prometheus` process in agent mode.
    #[default]
    Process,
    /// A prometheus-operator `PrometheusAgent` (or legacy `Prometheus`) custom resource.
    Kubernetes,
    /// No driver: the agent only relays (Prometheus is managed elsewhere).
    None,
}

/// Settings of the Kubernetes node driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeDriverConfig {
    /// A kubeconfig file; inferred when absent (in-cluster service account, `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Prometheus objects; the client's (the pod's own) when absent.
    pub namespace: Option<String>,
    /// Base name of the objects.
    pub name: String,
    /// The agent's Deployment, which owns the namespaced objects (none when absent).
    pub owner_deployment: Option<String>,
    /// Where Prometheus remote-writes: the agent's Service, on one of the push paths
    /// (`/api/agent/push`; `/api/v1/push` and `/api/v1/write` are aliases). Default
    /// `http://<name>.<namespace>.svc:<http port>/api/agent/push`.
    pub remote_write_url: Option<String>,
    /// `prometheusAgent` or `legacy` (a `Prometheus` in agent mode).
    pub strategy: opni_metrics_kube::node::Strategy,
}

impl Default for KubeDriverConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            name: "opni-metrics-agent".into(),
            owner_deployment: None,
            remote_write_url: None,
            strategy: opni_metrics_kube::node::Strategy::PrometheusAgent,
        }
    }
}

/// Node driver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DriverConfig {
    /// Which driver.
    pub kind: DriverKind,
    /// The `prometheus` binary.
    pub prometheus_binary: PathBuf,
    /// Longest wait for Prometheus to become ready after a (re)start.
    pub ready_timeout: PromDuration,
    /// The Kubernetes driver (`kind: kubernetes`).
    pub kubernetes: KubeDriverConfig,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            kind: DriverKind::Process,
            prometheus_binary: PathBuf::from("prometheus"),
            ready_timeout: PromDuration::from_secs(30),
            kubernetes: KubeDriverConfig::default(),
        }
    }
}

/// The agent's HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentHttpConfig {
    /// Address to listen on.
    pub listen: String,
    /// Longest time a client may take to send request headers (and its first bytes, and an
    /// idle HTTP/1 connection its next request).
    pub header_read_timeout: PromDuration,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
    /// HTTP/2 PING interval on idle connections.
    pub keepalive_interval: PromDuration,
    /// A peer silent this long after a PING is disconnected.
    pub keepalive_timeout: PromDuration,
}

impl Default for AgentHttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            header_read_timeout: PromDuration::from_secs(10),
            max_connections: 1024,
            keepalive_interval: PromDuration::from_secs(30),
            keepalive_timeout: PromDuration::from_secs(10),
        }
    }
}

/// How to reach the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayConnConfig {
    /// `host:port` of the gateway's agent-facing gRPC listener.
    pub address: String,
    /// The name the gateway's certificate must carry (defaults to the address's host).
    pub server_name: Option<String>,
    /// This agent's certificate and key, and the CA that signs the gateway's certificate; when
    /// absent, the identity obtained at `Join` (in `<dataDir>/identity`) is used.
    pub tls: Option<TlsFiles>,
    /// Dial timeout.
    pub connect_timeout: PromDuration,
    /// HTTP/2 keepalive PING interval.
    pub keepalive_interval: PromDuration,
    /// A gateway silent this long after a PING is considered dead.
    pub keepalive_timeout: PromDuration,
}

impl Default for GatewayConnConfig {
    fn default() -> Self {
        let o = ChannelOptions::default();
        Self {
            address: "127.0.0.1:9090".into(),
            server_name: None,
            tls: None,
            connect_timeout: o.connect_timeout.into(),
            keepalive_interval: o.keepalive_interval.into(),
            keepalive_timeout: o.keepalive_timeout.into(),
        }
    }
}

/// Relay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentRemoteWriteConfig {
    /// Largest body accepted as sent.
    pub max_body_bytes: usize,
    /// Largest decompressed size a body may declare.
    pub max_decoded_bytes: usize,
    /// End-to-end deadline of one request (below Prometheus's 30 s).
    pub request_timeout: PromDuration,
    /// Most body bytes in flight; beyond it requests get 503 at once.
    pub max_in_flight_bytes: usize,
    /// Decompress every body and check what the remote-write specs say a receiver must refuse
    /// (metric names, label names valid/unique/sorted, samples, histograms, v2 symbol
    /// references); 400 names the first problem. Costs CPU per sample (docs/benchmarks.md).
    pub validate: bool,
    /// Answer 503 instead of 429.
    pub rate_limit_as_503: bool,
}

impl Default for AgentRemoteWriteConfig {
    fn default() -> Self {
        let r = RelaySettings::default();
        Self {
            max_body_bytes: r.limits.max_body_bytes,
            max_decoded_bytes: r.limits.max_decoded_bytes,
            request_timeout: r.request_timeout.into(),
            max_in_flight_bytes: r.max_in_flight_bytes,
            validate: false,
            rate_limit_as_503: false,
        }
    }
}

/// A validated agent configuration: the library's settings and the node driver to build.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// The agent's settings.
    pub settings: AgentSettings,
    /// The node driver section.
    pub driver: DriverConfig,
    /// `bootstrap.identitySecret`, when the identity is joined (not from files).
    pub identity_secret: Option<String>,
}

/// A validated `gateway` section.
#[derive(Debug, Clone)]
pub struct GatewayConn {
    /// `host:port`.
    pub address: String,
    /// The name the gateway's certificate must carry.
    pub server_name: String,
    /// The channel's timeouts.
    pub channel: ChannelOptions,
}

impl GatewayConnConfig {
    /// The gateway's address, certificate name and channel options.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<GatewayConn, ConfigError> {
        let (host, port) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::invalid("gateway.address", "must be host:port"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(ConfigError::invalid("gateway.address", format!("{:?} is not host:port", self.address)));
        }
        Ok(GatewayConn {
            address: self.address.clone(),
            server_name: self.server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned()),
            channel: ChannelOptions {
                connect_timeout: positive("gateway.connectTimeout", self.connect_timeout)?,
                keepalive_interval: positive("gateway.keepaliveInterval", self.keepalive_interval)?,
                keepalive_timeout: positive("gateway.keepaliveTimeout", self.keepalive_timeout)?,
            },
        })
    }

    /// Where the identity comes from: the configured files, else joining with `bootstrap`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `bootstrap` field.
    pub fn identity(&self, bootstrap: &BootstrapConfig) -> Result<IdentitySource, ConfigError> {
        if let Some(files) = &self.tls {
            return Ok(IdentitySource::Files(files.clone()));
        }
        bootstrap.validate().map(IdentitySource::Join)
    }
}

impl BootstrapConfig {
    /// The first-join settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<JoinSettings, ConfigError> {
        if let Some(t) = &self.token
            && !t.contains('.')
        {
            return Err(ConfigError::invalid(
                "bootstrap.token",
                "expected <id>.<secret> as printed by `opni-metrics tokens create`",
            ));
        }
        if let Some(id) = &self.cluster_id {
            opni_metrics_core::ClusterId::new(id.as_str())
                .map_err(|e| ConfigError::invalid("bootstrap.clusterId", e.to_string()))?;
        }
        if let Some(pin) = &self.ca_pin {
            opni_metrics_transport::tls::pinned_client_config(pin)
                .map_err(|e| ConfigError::invalid("bootstrap.caPin", e.to_string()))?;
        }
        let mut j = JoinSettings::default();
        j.token.clone_from(&self.token);
        j.cluster_id.clone_from(&self.cluster_id);
        j.ca_file.clone_from(&self.ca_file);
        j.ca_pin.clone_from(&self.ca_pin);
        Ok(j)
    }
}

impl AgentRemoteWriteConfig {
    /// The relay's settings (their values are checked by [`AgentSettings::validate`], which
    /// [`AgentConfig::validate`] runs).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<RelaySettings, ConfigError> {
        let limits: Limits = limits("remoteWrite", self.max_body_bytes, self.max_decoded_bytes)?;
        let mut relay = RelaySettings::default();
        relay.limits = limits;
        relay.request_timeout = self.request_timeout.as_duration();
        relay.max_in_flight_bytes = self.max_in_flight_bytes;
        relay.validate = self.validate;
        relay.status = StatusOptions {
            rate_limit_as_503: self.rate_limit_as_503,
            local_retry_after: Some(Duration::from_secs(1)),
        };
        Ok(relay)
    }
}

impl AgentConfig {
    /// Validates every section.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<AgentPlan, ConfigError> {
        let gateway = self.gateway.validate()?;
        let mut a = AgentSettings::default();
        a.listen = socket("http.listen", &self.http.listen)?;
        a.header_read_timeout = positive("http.headerReadTimeout", self.http.header_read_timeout)?;
        a.max_connections = self.http.max_connections;
        a.http2_keepalive_interval = positive("http.keepaliveInterval", self.http.keepalive_interval)?;
        a.http2_keepalive_timeout = positive("http.keepaliveTimeout", self.http.keepalive_timeout)?;
        a.identity = self.gateway.identity(&self.bootstrap)?;
        a.relay = self.remote_write.validate()?;
        a.gateway_address = gateway.address;
        a.gateway_server_name = gateway.server_name;
        a.channel = gateway.channel;
        a.data_dir.clone_from(&self.data_dir);
        if let Some(url) = &self.driver.kubernetes.remote_write_url {
            remote_write_url("driver.kubernetes.remoteWriteUrl", url)?;
        }
        a.rules.poll_interval = positive("rules.pollInterval", self.rules.poll_interval)?;
        a.rules.resync_interval = positive("rules.resyncInterval", self.rules.resync_interval)?;
        // the value checks live in the library, for the daemon and embedders alike
        a.validate().map_err(|e| ConfigError::invalid(e.field, e.reason))?;
        let identity_secret = match (&a.identity, &self.bootstrap.identity_secret) {
            (opni_metrics_agent::IdentitySource::Join(_), Some(name)) => {
                // a DNS subdomain, as Kubernetes names Secrets
                if name.len() > 253 || !name.split('.').all(opni_metrics_core::spec::is_dns_label) {
                    return Err(ConfigError::invalid(
                        "bootstrap.identitySecret",
                        "must be a Kubernetes object name (lowercase letters, digits, '-', '.')",
                    ));
                }
                Some(name.clone())
            }
            _ => None,
        };
        Ok(AgentPlan { settings: a, driver: self.driver.clone(), identity_secret })
    }
}

/// Checks that `url` is an absolute http(s) URL on one of the agent's push paths: Prometheus
/// sends there, and any other path is answered 404, losing every batch.
fn remote_write_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::invalid(field, format!("{url:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ConfigError::invalid(field, format!("{url:?} must be an absolute http:// or https:// URL")));
    }
    if !opni_metrics_agent::PUSH_PATHS.contains(&uri.path()) {
        return Err(ConfigError::invalid(
            field,
            format!(
                "path {:?} is not one the agent serves (Prometheus would get 404 and drop every batch); use {}",
                uri.path(),
                opni_metrics_agent::PUSH_PATHS.join(" or ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_remote_write_url_must_be_a_push_path() {
        let mut c = AgentConfig::default();
        for ok in ["http://a.ns.svc:8080/api/agent/push", "https://a:1/api/v1/push", "http://a/api/v1/write"] {
            c.driver.kubernetes.remote_write_url = Some(ok.into());
            c.validate().unwrap();
        }
        for bad in ["http://a.ns.svc:8080/api/v1/writes", "/api/agent/push", "ftp://a/api/agent/push", "not a url"] {
            c.driver.kubernetes.remote_write_url = Some(bad.into());
            assert_eq!(field(&c), "driver.kubernetes.remoteWriteUrl", "{bad}");
        }
    }

    #[test]
    fn the_identity_secret_must_be_a_kubernetes_name() {
        let mut c = AgentConfig::default();
        for ok in ["opni-metrics-agent-identity", "a.b-c.d", "x"] {
            c.bootstrap.identity_secret = Some(ok.into());
            assert_eq!(c.validate().unwrap().identity_secret.as_deref(), Some(ok));
        }
        for bad in ["", "-x", "x-", "a..b", "Upper", "a_b", &"a".repeat(64)] {
            c.bootstrap.identity_secret = Some(bad.into());
            assert_eq!(field(&c), "bootstrap.identitySecret", "{bad}");
        }
    }

    fn field(c: &AgentConfig) -> String {
        match c.validate().unwrap_err() {
            ConfigError::Invalid { field, .. } => field,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn each_section_names_its_bad_field() {
        let ok = AgentConfig::default().validate().unwrap();
        assert_eq!(ok.settings.gateway_server_name, "127.0.0.1");
        assert!(matches!(ok.settings.identity, IdentitySource::Join(_)));
        let mut c = AgentConfig::default();
        c.gateway.address = "gateway".into();
        assert_eq!(field(&c), "gateway.address");
        let mut c = AgentConfig::default();
        c.bootstrap.token = Some("no-dot".into());
        assert_eq!(field(&c), "bootstrap.token");
        let mut c = AgentConfig::default();
        c.remote_write.max_in_flight_bytes = 1;
        assert_eq!(field(&c), "remoteWrite.maxInFlightBytes");
        let mut c = AgentConfig::default();
        c.gateway.keepalive_timeout = PromDuration::from_secs(0);
        assert_eq!(field(&c), "gateway.keepaliveTimeout");
        // files given: the bootstrap section is not consulted
        let mut c = AgentConfig::default();
        c.bootstrap.token = Some("no-dot".into());
        c.gateway.tls = Some(TlsFiles { cert: "c".into(), key: "k".into(), ca: "a".into() });
        assert!(matches!(c.validate().unwrap().settings.identity, IdentitySource::Files(_)));
    }
}
