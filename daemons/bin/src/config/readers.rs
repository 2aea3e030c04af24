//! The gateway's read path in its config file: the query proxy, how readers authenticate, the
//! management listener's TLS and the upstream's read endpoints.

use std::path::PathBuf;

use opni_metrics_core::duration::PromDuration;
use opni_metrics_gateway::GatewaySettings;
use opni_metrics_gateway::settings::{ListenerTls, ManagementTls, OidcSettings, QuerySettings};
use serde::Deserialize;

use super::gateway::{positive, socket};
use crate::ConfigError;

/// The query proxy (the Prometheus API for Grafana under `/prometheus/api/v1/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Address to listen on.
    pub listen: String,
    /// TLS: `none`, `gateway` (the agent-facing listener's serving certificate), or
    /// `{cert, key}` files.
    pub tls: QueryTlsConfig,
    /// Longest a query may take, response included.
    pub timeout: PromDuration,
    /// Largest response relayed; longer ones are cut off.
    pub max_response_bytes: u64,
    /// Largest POST body accepted.
    pub max_request_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let q = QuerySettings::default();
        Self {
            listen: "0.0.0.0:8086".into(),
            tls: QueryTlsConfig::Mode(TlsMode::None),
            timeout: PromDuration::from_secs(120),
            max_response_bytes: q.max_response_bytes,
            max_request_bytes: q.max_request_bytes,
        }
    }
}

/// TLS of the query listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QueryTlsConfig {
    /// `none` or `gateway`.
    Mode(TlsMode),
    /// Certificate files.
    Files {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
}

/// A TLS mode without files.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// Plain HTTP.
    None,
    /// The gateway's serving certificate.
    Gateway,
}

/// How readers authenticate (API keys always work).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadersConfig {
    /// An OpenID Connect issuer whose tokens are accepted.
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// The audience (client id) tokens must carry in `aud`.
    pub audience: String,
    /// The JWKS URL; discovered from the issuer when absent.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA bundle for the issuer's HTTPS (system roots when absent).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Claim holding the subject.
    #[serde(default = "sub")]
    pub subject_claim: String,
    /// Claim holding the groups.
    #[serde(default = "groups")]
    pub groups_claim: String,
    /// Keys are fetched again after this long.
    #[serde(default = "five_minutes")]
    pub refresh_interval: PromDuration,
}

fn sub() -> String {
    "sub".into()
}
fn groups() -> String {
    "groups".into()
}
fn five_minutes() -> PromDuration {
    PromDuration::from_secs(300)
}

/// The admin console (under `/console/` on the query listener).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console.
    pub enabled: bool,
    /// Signed-in readers who are admins: `user:NAME` or `group:NAME`.
    pub admins: Vec<String>,
    /// The console's `/console/callback` URL as browsers reach it; enables OpenID Connect
    /// sign-in (with `readers.oidc`, whose audience is the client id).
    pub oidc_redirect_url: Option<String>,
    /// A file holding the OAuth client secret, for providers that want one besides PKCE.
    pub oidc_client_secret_file: Option<PathBuf>,
    /// How long a session lasts.
    pub session_ttl: PromDuration,
    /// The agent-facing address printed in join commands (`host:port`).
    pub join_address: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            admins: Vec::new(),
            oidc_redirect_url: None,
            oidc_client_secret_file: None,
            session_ttl: PromDuration::from_secs(8 * 3600),
            join_address: None,
        }
    }
}

impl ConsoleConfig {
    /// The library's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn settings(&self, oidc: bool) -> Result<opni_metrics_gateway::console::ConsoleSettings, ConfigError> {
        let mut c = opni_metrics_gateway::console::ConsoleSettings::default();
        c.enabled = self.enabled;
        c.admin_subjects = self
            .admins
            .iter()
            .enumerate()
            .map(|(i, a)| a.parse().map_err(|e| ConfigError::invalid(format!("console.admins[{i}]"), format!("{e}"))))
            .collect::<Result<_, _>>()?;
        if let Some(u) = &self.oidc_redirect_url {
            let uri: http::Uri = u
                .parse()
                .map_err(|_| ConfigError::invalid("console.oidcRedirectUrl", format!("{u:?} is not a URL")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || !uri.path().ends_with("/console/callback") {
                return Err(ConfigError::invalid(
                    "console.oidcRedirectUrl",
                    format!("{u:?} must be an absolute http(s) URL ending in /console/callback"),
                ));
            }
            if !oidc {
                return Err(ConfigError::invalid(
                    "console.oidcRedirectUrl",
                    "OpenID Connect sign-in needs readers.oidc (its issuer, and its audience as the client id)",
                ));
            }
            c.oidc_redirect_url = Some(u.clone());
        }
        if let Some(f) = &self.oidc_client_secret_file {
            let secret = std::fs::read_to_string(f).map_err(|e| {
                ConfigError::invalid("console.oidcClientSecretFile", format!("cannot read {}: {e}", f.display()))
            })?;
            c.oidc_client_secret = Some(secret.trim().to_owned());
        }
        c.session_ttl = positive("console.sessionTtl", self.session_ttl)?;
        c.join_address.clone_from(&self.join_address);
        Ok(c)
    }
}

/// TLS of the management listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementTlsConfig {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA bundle of admin client certificates; a certificate it verifies authenticates an
    /// admin from any address.
    pub client_ca: PathBuf,
}

impl ManagementTlsConfig {
    /// The library's settings.
    pub fn settings(&self) -> ManagementTls {
        ManagementTls::new(self.cert.clone(), self.key.clone(), self.client_ca.clone())
    }
}

fn url(field: &str, v: Option<&String>) -> Result<Option<http::Uri>, ConfigError> {
    v.map(|s| s.parse().map_err(|_| ConfigError::invalid(field, format!("{s:?} is not a URL")))).transpose()
}

/// Applies the read-path sections to `s` (values are checked by [`GatewaySettings::validate`]).
///
/// # Errors
/// [`ConfigError::Invalid`] naming a field that does not parse.
pub(crate) fn apply(
    s: &mut GatewaySettings,
    query: &QueryConfig,
    readers: &ReadersConfig,
    upstream: &super::gateway::UpstreamConfig,
) -> Result<(), ConfigError> {
    s.listen.query = socket("query.listen", &query.listen)?;
    s.query.tls = match &query.tls {
        QueryTlsConfig::Mode(TlsMode::None) => ListenerTls::None,
        QueryTlsConfig::Mode(TlsMode::Gateway) => ListenerTls::Gateway,
        QueryTlsConfig::Files { cert, key } => ListenerTls::Files { cert: cert.clone(), key: key.clone() },
    };
    s.query.timeout = positive("query.timeout", query.timeout)?;
    s.query.max_response_bytes = query.max_response_bytes;
    s.query.max_request_bytes = query.max_request_bytes;
    s.upstream.query_url = url("upstream.queryUrl", upstream.query_url.as_ref())?;
    s.upstream.ruler_url = url("upstream.rulerUrl", upstream.ruler_url.as_ref())?;
    s.upstream.admin_url = url("upstream.adminUrl", upstream.admin_url.as_ref())?;
    s.upstream.ingester_http_port = upstream.ingester_http_port;
    s.readers.oidc = match &readers.oidc {
        None => None,
        Some(o) => {
            let mut x = OidcSettings::new(&o.issuer, &o.audience);
            x.jwks_url = url("readers.oidc.jwksUrl", o.jwks_url.as_ref())?;
            x.ca.clone_from(&o.ca);
            x.subject_claim.clone_from(&o.subject_claim);
            x.groups_claim.clone_from(&o.groups_claim);
            x.refresh_interval = positive("readers.oidc.refreshInterval", o.refresh_interval)?;
            Some(x)
        }
    };
    Ok(())
}

impl OidcConfig {
    /// An issuer and audience with the default claims and refresh.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_url: None,
            ca: None,
            subject_claim: sub(),
            groups_claim: groups(),
            refresh_interval: five_minutes(),
        }
    }
}
