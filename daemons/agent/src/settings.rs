//! The agent's settings: plain data with documented defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use opni_metrics_core::spec::SpecError;
use opni_metrics_transport::grpc::ChannelOptions;
use opni_metrics_transport::tls::TlsFiles;

use crate::relay::RelaySettings;

/// How the agent gets its identity for mutual TLS with the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentitySource {
    /// Certificate, key and CA files managed outside the agent (reloaded when they change).
    Files(TlsFiles),
    /// The identity obtained at `Join` and kept in `<data_dir>/identity`; joins first with the
    /// bootstrap token when there is none yet.
    Join(JoinSettings),
}

/// First-join settings (ignored once an identity exists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinSettings {
    /// Bootstrap token (`<id>.<secret>`).
    pub token: Option<String>,
    /// Cluster id to register as (the gateway picks one when absent).
    pub cluster_id: Option<String>,
    /// CA that signs the gateway's certificate.
    pub ca_file: Option<PathBuf>,
    /// Instead of `ca_file`: the pin (`sha256:<hex>` of its public key, as `opni-metrics tokens
    /// create` prints) of the CA the gateway sends in its own chain.
    pub ca_pin: Option<String>,
}

/// Everything an [`Agent`](crate::Agent) needs besides its node driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentSettings {
    /// Where [`Agent::bind_and_serve`](crate::Agent::bind_and_serve) listens for remote
    /// write and the ops endpoints. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Longest time a client may take to send request headers. Default 10 s.
    pub header_read_timeout: Duration,
    /// Most open connections on the push listener; more are closed at once. Default 1024
    /// (Prometheus opens one per shard).
    pub max_connections: usize,
    /// HTTP/2 PING interval on an idle push connection; a peer silent for
    /// `http2_keepalive_timeout` after a PING is disconnected. Default 30 s.
    pub http2_keepalive_interval: Duration,
    /// See `http2_keepalive_interval`. Default 10 s.
    pub http2_keepalive_timeout: Duration,
    /// The gateway's agent-facing gRPC `host:port`. Default `127.0.0.1:9090`.
    pub gateway_address: String,
    /// The name the gateway's certificate must carry. Default `localhost`.
    pub gateway_server_name: String,
    /// Where the identity comes from. Default: join, keeping it in `<data_dir>/identity`.
    pub identity: IdentitySource,
    /// Identity and Prometheus files. Default `data/agent`.
    pub data_dir: PathBuf,
    /// The channel to the gateway.
    pub channel: ChannelOptions,
    /// The remote-write relay.
    pub relay: RelaySettings,
    /// How long [`Agent::shutdown`](crate::Agent::shutdown) waits for in-flight requests.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Rule discovery timing.
    pub rules: crate::rules::RuleSyncSettings,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            gateway_address: "127.0.0.1:9090".into(),
            gateway_server_name: "localhost".into(),
            identity: IdentitySource::Join(JoinSettings::default()),
            data_dir: PathBuf::from("data/agent"),
            channel: ChannelOptions::default(),
            relay: RelaySettings::default(),
            drain_timeout: Duration::from_secs(30),
            rules: crate::rules::RuleSyncSettings::default(),
        }
    }
}

impl AgentSettings {
    /// Checks what types cannot: the relay's deadline below Prometheus's 30 s remote timeout,
    /// an in-flight budget that holds a request of the largest size.
    ///
    /// # Errors
    /// [`SpecError`] naming the field (as the daemon's config file names it).
    pub fn validate(&self) -> Result<(), SpecError> {
        let r = &self.relay;
        if r.request_timeout.is_zero() || r.request_timeout >= Duration::from_secs(30) {
            return Err(SpecError::new(
                "remoteWrite.requestTimeout",
                "must be above 0s and below Prometheus's 30s remote timeout",
            ));
        }
        if r.max_in_flight_bytes < r.limits.max_body_bytes {
            return Err(SpecError::new(
                "remoteWrite.maxInFlightBytes",
                "must be at least maxBodyBytes, or every request of the largest size is refused",
            ));
        }
        if self.max_connections == 0
            || self.http2_keepalive_interval.is_zero()
            || self.http2_keepalive_timeout.is_zero()
        {
            return Err(SpecError::new("http.maxConnections", "connection limit and keepalive times must be above 0"));
        }
        if self.rules.poll_interval.is_zero() || self.rules.resync_interval.is_zero() {
            return Err(SpecError::new("rules.pollInterval", "rule poll and resync intervals must be above 0s"));
        }
        Ok(())
    }
}
