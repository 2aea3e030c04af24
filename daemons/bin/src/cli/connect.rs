//! Reaching the management listener: the credential sent with every call (an API key, the admin
//! token, or none beside a client certificate) and the channel (plain, or TLS with --tls-ca).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use opni_metrics_proto::cortexadmin::v1::cortex_admin_client::CortexAdminClient;
use opni_metrics_proto::rbac::v1::rbac_client::RbacClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::Cli;

/// A channel whose calls carry the credential.
pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// The largest CortexAdmin answer accepted (the gateway relays up to 32 MiB of Cortex JSON
/// inside its own framing).
const MAX_ADMIN_ANSWER: usize = 64 << 20;

/// Adds `authorization: Bearer …` (the admin token or an API key) to every call, or nothing
/// when a client certificate authenticates alone.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn bearer(credential: &str, what: &str) -> Result<Bearer> {
    let mut v: MetadataValue<Ascii> =
        format!("Bearer {credential}").parse().map_err(|_| anyhow!("{what} is not printable ASCII"))?;
    v.set_sensitive(true);
    Ok(Bearer(Some(v)))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// The credential: an API key if given (the token file is then not read), else the admin
/// token; with a client certificate a missing token file is fine.
fn credential(cli: &Cli) -> Result<Bearer> {
    let key = match (&cli.api_key, &cli.api_key_file) {
        (Some(k), _) => Some(k.trim().to_owned()),
        (None, Some(f)) => Some(String::from_utf8_lossy(&read(f, "API key file")?).trim().to_owned()),
        (None, None) => None,
    };
    if let Some(key) = key {
        if key.is_empty() {
            bail!("the API key is empty");
        }
        if key.starts_with(opni_metrics_core::access::API_KEY_PREFIX)
            && opni_metrics_core::access::PresentedKey::parse(&key).is_none()
        {
            bail!("the API key is malformed: API keys look like omk_<16 hex digits>_<64 hex digits>");
        }
        return bearer(&key, "the API key");
    }
    match std::fs::read_to_string(&cli.token_file) {
        Ok(token) => bearer(token.trim(), "the admin token"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cli.tls_cert.is_some() => Ok(Bearer(None)),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "reading the admin token from {} (set --token-file, or use --api-key or a client certificate)",
            cli.token_file.display()
        ))),
    }
}

/// The host of `host:port` or `[v6]:port`.
fn host(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

fn tls(cli: &Cli, ca: &Path) -> Result<ClientTlsConfig> {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca, "CA certificate (--tls-ca)")?))
        .domain_name(cli.tls_server_name.clone().unwrap_or_else(|| host(&cli.address).to_owned()));
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        t = t.identity(Identity::from_pem(
            read(cert, "client certificate (--tls-cert)")?,
            read(key, "client key (--tls-key)")?,
        ));
    }
    Ok(t)
}

/// Where and how to call: read and checked before any connection is made.
pub(crate) struct Connector {
    endpoint: Endpoint,
    bearer: Bearer,
    address: String,
}

impl Connector {
    /// Reads the credential and TLS files named by `cli`.
    pub(crate) fn new(cli: &Cli) -> Result<Self> {
        let bearer = credential(cli)?;
        let scheme = if cli.tls_ca.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", cli.address))
            .map_err(|_| anyhow!("--address {:?}: expected host:port", cli.address))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &cli.tls_ca {
            endpoint = endpoint.tls_config(tls(cli, ca)?).context("TLS configuration")?;
        }
        Ok(Self { endpoint, bearer, address: cli.address.clone() })
    }

    /// Connects and makes a client whose calls carry the credential, e.g.
    /// `conn.client(RbacClient::with_interceptor)`.
    pub(crate) async fn client<C>(&self, make: impl FnOnce(Channel, Bearer) -> C) -> Result<C> {
        let channel = self
            .endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the gateway's management listener at {}", self.address))?;
        Ok(make(channel, self.bearer.clone()))
    }

    /// A `Rbac` client.
    pub(crate) async fn rbac(&self) -> Result<RbacClient<Authed>> {
        self.client(RbacClient::with_interceptor).await
    }

    /// A `CortexAdmin` client that accepts answers up to 64 MiB.
    pub(crate) async fn cortex_admin(&self) -> Result<CortexAdminClient<Authed>> {
        Ok(self.client(CortexAdminClient::with_interceptor).await?.max_decoding_message_size(MAX_ADMIN_ANSWER))
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn host_of_an_address() {
        assert_eq!(host("127.0.0.1:9091"), "127.0.0.1");
        assert_eq!(host("gateway.example:443"), "gateway.example");
        assert_eq!(host("[::1]:9091"), "::1");
        assert_eq!(host("localhost"), "localhost");
    }
}
