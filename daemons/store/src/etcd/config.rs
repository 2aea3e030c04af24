//! The etcd store's configuration: endpoints, prefix, TLS files, and their checks.

use super::*;

/// Configuration of the etcd store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members: `host:port` (the scheme follows `tls`),
    /// `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Every key is stored under this prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// TLS towards etcd; absent for plain HTTP/2 unless an endpoint says `https://`.
    #[serde(default)]
    pub tls: Option<EtcdTls>,
}

pub(super) fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}

/// TLS files for etcd, PEM encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdTls {
    /// CA bundle verifying the etcd members; the system's roots when absent.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain, for etcd's `--client-cert-auth`; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key; needs `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Failures of the etcd store's setup and calls.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint is configured.
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    /// An endpoint is not a usable URL.
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// Election settings are unusable.
    #[error("invalid election settings: {0}")]
    Election(&'static str),
    /// The key prefix is unusable.
    #[error("invalid etcd key prefix {prefix:?}: {reason}")]
    Prefix {
        /// The prefix as configured.
        prefix: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Only one of the client certificate and its key is configured.
    #[error("etcd TLS: cert and key must be given together")]
    CertWithoutKey,
    /// A TLS file could not be read.
    #[error("cannot read etcd TLS {what} {}", path.display())]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no usable PEM data.
    #[error("etcd TLS {what} {}: {reason}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No CA is configured and the system has no usable roots.
    #[error("etcd TLS: no CA configured and no system roots found")]
    NoRoots,
    /// tonic refused the TLS configuration of an endpoint.
    #[error("etcd TLS setup for {endpoint}")]
    Tls {
        /// The endpoint URL.
        endpoint: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed.
    #[error("etcd {op} via {endpoint} failed")]
    Rpc {
        /// The operation.
        op: &'static str,
        /// The endpoint URL.
        endpoint: String,
        /// etcd's or the transport's status.
        #[source]
        source: Box<tonic::Status>,
    },
    /// etcd ended a watch for a reason other than compaction.
    #[error("etcd watch via {endpoint} ended: {reason}")]
    WatchEnded {
        /// The endpoint URL.
        endpoint: String,
        /// etcd's reason, if it gave one.
        reason: String,
    },
    /// etcd sent an answer this client cannot use.
    #[error("malformed etcd response: {0}")]
    Malformed(&'static str),
}

impl EtcdConfig {
    /// Checks the configuration without touching files or the network.
    ///
    /// # Errors
    /// [`EtcdError`] naming the offending setting.
    pub fn validate(&self) -> Result<(), EtcdError> {
        self.urls().map(|_| ())
    }

    /// The endpoints as URLs, validated.
    pub(super) fn urls(&self) -> Result<Vec<String>, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let bad_prefix = |reason| Err(EtcdError::Prefix { prefix: self.prefix.clone(), reason });
        if self.prefix.is_empty() {
            return bad_prefix("empty: the store would own the whole keyspace");
        }
        if validate_key(&self.prefix).is_err() {
            return bad_prefix("too long or contains control characters");
        }
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(EtcdError::CertWithoutKey);
        }
        self.endpoints.iter().map(|e| endpoint_url(e, self.tls.is_some())).collect()
    }
}

/// `raw` as an `http(s)://` URL: a bare `host:port` gets the scheme `tls` implies; an explicit
/// `http://` contradicting `tls` is refused.
pub(super) fn endpoint_url(raw: &str, tls: bool) -> Result<String, EtcdError> {
    let bad = |reason: &str| Err(EtcdError::Endpoint { endpoint: raw.to_owned(), reason: reason.to_owned() });
    let url = match raw.split_once("://") {
        None => format!("{}://{raw}", if tls { "https" } else { "http" }),
        Some(("https", _)) => raw.to_owned(),
        Some(("http", _)) if tls => return bad("http:// with a tls section; use https://"),
        Some(("http", _)) => raw.to_owned(),
        Some(_) => return bad("scheme must be http or https"),
    };
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some() && uri.path() == "/" => Ok(url),
        Ok(_) => bad("expected host:port without a path"),
        Err(e) => bad(&e.to_string()),
    }
}

pub(super) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::ReadFile { what, path: path.to_owned(), source })
}

/// Reads a PEM certificate file, checking it holds at least one certificate.
pub(super) fn read_certs(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    let pem = read_file(what, path)?;
    let bad = |reason: String| EtcdError::Pem { what, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in file".to_owned()));
    }
    Ok(pem)
}

pub(super) fn tls_config(tls: Option<&EtcdTls>) -> Result<ClientTlsConfig, EtcdError> {
    let mut cfg = ClientTlsConfig::new();
    if let Some(ca) = tls.and_then(|t| t.ca.as_deref()) {
        cfg = cfg.ca_certificate(Certificate::from_pem(read_certs("CA bundle", ca)?));
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if roots.is_empty() {
            return Err(EtcdError::NoRoots);
        }
        cfg = cfg.trust_anchors(roots.roots);
    }
    if let Some(EtcdTls { cert: Some(cert), key: Some(key), .. }) = tls {
        let chain = read_certs("certificate", cert)?;
        let pem = read_file("private key", key)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| EtcdError::Pem {
            what: "private key",
            path: key.clone(),
            reason: e.to_string(),
        })?;
        cfg = cfg.identity(Identity::from_pem(chain, pem));
    }
    Ok(cfg)
}
