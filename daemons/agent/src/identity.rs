//! The agent's identity: a key and a certificate issued by the gateway at `Join`, kept in the
//! agent's data directory and used for mutual TLS from then on, and renewed (a new key, through
//! `Renew`, authenticated by the current certificate) at about two thirds of its lifetime.
//!
//! The key is written before `Join` is called, so an agent whose `Join` answer was lost (or
//! that was restarted meanwhile) asks again with the same key and the same token, and the
//! gateway answers with the same identity.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, SystemTime};

use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::bootstrap::v1::{JoinRequest, RenewRequest};
use tokio::sync::watch;

use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use opni_metrics_transport::tls::{Leaf, TlsFiles};

/// Join failures.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to join with.
    #[error(
        "no certificate in {dir} and no bootstrap token to get one: set bootstrap.token, and bootstrap.caFile or bootstrap.caPin"
    )]
    NoToken {
        /// The identity directory.
        dir: PathBuf,
    },
    /// Key or CSR generation failed.
    #[error("generate a key and CSR")]
    Keygen(#[source] rcgen::Error),
    /// The key kept from an earlier attempt cannot be read.
    #[error("{path}: not a usable private key (delete it to join with a new key)")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The CA file is unusable.
    #[error("bootstrap.caFile")]
    Ca(#[from] opni_metrics_transport::tls::TlsError),
    /// The gateway refused.
    #[error("the gateway refused to join: {0}")]
    Refused(String),
    /// The identity could not be kept (or restored) where the [`IdentityKeeper`] keeps it.
    #[error(transparent)]
    Keep(#[from] KeepError),
}

/// Keeping the identity failed.
#[derive(Debug, thiserror::Error)]
#[error("keep the agent identity in {place}")]
pub struct KeepError {
    /// Where, e.g. `Secret opni-agent/opni-metrics-agent-identity`.
    pub place: String,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Keeps a copy of the identity somewhere durable besides its directory: a Kubernetes Secret,
/// say, when the directory is an `emptyDir`. The agent restores from it before anything else,
/// keeps its key there before it calls `Join` (so that a restarted agent retries with the same
/// key and gets the same identity), and keeps the identity after joining and after each renewal.
pub trait IdentityKeeper: Send + Sync + 'static {
    /// Replaces `files` with the kept copy, if there is one (only the parts kept).
    fn restore<'a>(&'a self, files: &'a TlsFiles) -> futures::future::BoxFuture<'a, Result<(), KeepError>>;
    /// Keeps `files` as they are now (the ones that exist).
    fn keep<'a>(&'a self, files: &'a TlsFiles) -> futures::future::BoxFuture<'a, Result<(), KeepError>>;
}

/// Where the identity lives.
pub fn files(dir: &Path) -> TlsFiles {
    TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: dir.join("ca.pem") }
}

pub(crate) fn write(path: &Path, contents: &str, private: bool) -> Result<(), JoinError> {
    let io = |source| JoinError::Io { path: path.to_owned(), source };
    let mode = if private { 0o600 } else { 0o644 };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The identity in `dir` (restored first from `keeper`, if any), joining first with `join`'s
/// token (verifying the gateway with its CA file, or the CA its chain carries if it matches
/// the pin) when there is none yet. Returns the files.
///
/// # Errors
/// [`JoinError`].
pub async fn ensure(
    dir: &Path,
    gateway: &str,
    server_name: &str,
    join: &crate::settings::JoinSettings,
    keeper: Option<&dyn IdentityKeeper>,
) -> Result<TlsFiles, JoinError> {
    let (token, cluster_id) = (join.token.as_deref(), join.cluster_id.as_deref());
    let f = files(dir);
    if let Some(k) = keeper {
        std::fs::create_dir_all(dir).map_err(|source| JoinError::Io { path: dir.to_owned(), source })?;
        k.restore(&f).await?;
    }
    if f.cert.exists() && f.key.exists() && f.ca.exists() {
        return Ok(f);
    }
    let Some(token) = token else {
        return Err(JoinError::NoToken { dir: dir.to_owned() });
    };
    let cfg = match (&join.ca_file, &join.ca_pin) {
        (Some(file), _) => opni_metrics_transport::tls::anonymous_client_config(file)?,
        (None, Some(pin)) => opni_metrics_transport::tls::pinned_client_config(pin)?,
        (None, None) => return Err(JoinError::NoToken { dir: dir.to_owned() }),
    };
    std::fs::create_dir_all(dir).map_err(|source| JoinError::Io { path: dir.to_owned(), source })?;
    // the key first, kept: a retried join (lost answer, restart) asks with the same key and
    // gets the same identity
    let key = match std::fs::read_to_string(&f.key) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|source| JoinError::Key { path: f.key.clone(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate().map_err(JoinError::Keygen)?;
            write(&f.key, &key.serialize_pem(), true)?;
            if let Some(k) = keeper {
                k.keep(&f).await?;
            }
            key
        }
        Err(source) => return Err(JoinError::Io { path: f.key.clone(), source }),
    };
    let csr = csr(&key)?;

    let (_keep, rx) = watch::channel(Arc::new(cfg));
    let channel = tls_channel(gateway, server_name, rx, &ChannelOptions::default())
        .map_err(|e| JoinError::Refused(e.to_string()))?;
    let resp = BootstrapClient::new(channel)
        .join(JoinRequest {
            token: token.to_owned(),
            csr_pem: csr,
            cluster_id: cluster_id.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(|s| JoinError::Refused(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    if let Some(pin) = &join.ca_pin
        && join.ca_file.is_none()
        && opni_metrics_transport::tls::ca_pin_of_pem(&resp.ca_pem).as_deref() != Some(pin.as_str())
    {
        return Err(JoinError::Refused("the CA certificate the gateway sent does not match bootstrap.caPin".into()));
    }
    write(&f.ca, &resp.ca_pem, false)?;
    write(&f.cert, &resp.certificate_chain_pem, false)?;
    if let Some(k) = keeper {
        k.keep(&f).await?;
    }
    tracing::info!(cluster = %resp.cluster_id, "joined the gateway");
    Ok(f)
}

fn csr(key: &rcgen::KeyPair) -> Result<String, JoinError> {
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(JoinError::Keygen)?;
    params.serialize_request(key).map_err(JoinError::Keygen)?.pem().map_err(JoinError::Keygen)
}

/// The validity period of the certificate in `path`.
fn validity(path: &Path) -> Option<(SystemTime, SystemTime)> {
    let chain = opni_metrics_transport::tls::read_certs("certificate", path).ok()?;
    Leaf::parse(&chain).ok().map(|l| l.validity())
}

/// When a certificate valid over `(from, until)` is renewed: at two thirds of its lifetime.
pub fn renew_at((from, until): (SystemTime, SystemTime)) -> SystemTime {
    from + until.duration_since(from).unwrap_or_default() * 2 / 3
}

/// Renewal failures.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The gateway refused or could not be reached.
    #[error("the gateway refused to renew: {code:?}: {message}")]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The answer is not a certificate for this agent's key and cluster.
    #[error("the renewed certificate is unusable: {0}")]
    Answer(String),
    /// Key generation or a file failed.
    #[error(transparent)]
    Local(#[from] JoinError),
}

/// Renews the identity in `dir` once: a new key, `Renew` over `channel` (authenticated by the
/// current certificate), then the new key, certificate and CA replace the old ones (each file
/// atomically). Returns the new validity period.
///
/// # Errors
/// [`RenewError`]; the old identity is left in place.
pub async fn renew(
    dir: &Path,
    channel: opni_metrics_transport::channel::GatewayChannel,
) -> Result<(SystemTime, SystemTime), RenewError> {
    let f = files(dir);
    let key = rcgen::KeyPair::generate().map_err(JoinError::Keygen)?;
    let resp = BootstrapClient::new(channel)
        .renew(RenewRequest { csr_pem: csr(&key)? })
        .await
        .map_err(|s| RenewError::Refused { code: s.code(), message: s.message().to_owned() })?
        .into_inner();
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(resp.certificate_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RenewError::Answer(format!("certificate_chain_pem: {e}")))?;
    let leaf = chain.first().ok_or_else(|| RenewError::Answer("no certificate".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| RenewError::Answer(format!("certificate: {e}")))?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(RenewError::Answer("the certificate is not for the key sent".into()));
    }
    let old = opni_metrics_transport::tls::read_certs("certificate", &f.cert)
        .ok()
        .and_then(|c| opni_metrics_transport::tls::peer_cluster_id(&c).ok());
    let issued = Leaf::parse(&chain).map_err(|e| RenewError::Answer(e.to_string()))?;
    let new = issued.cluster.as_ref().map_err(|e| RenewError::Answer(e.to_string()))?;
    if old.as_ref().is_some_and(|o| o != new) {
        return Err(RenewError::Answer(format!("the certificate names cluster {new}, not this agent's")));
    }
    let period = issued.validity();
    // key and certificate each replaced atomically, next to each other; a reload that reads
    // between the two sees a mismatched pair, refuses it and keeps the old one until the
    // trigger that follows
    write(&f.key, &key.serialize_pem(), true)?;
    write(&f.cert, &resp.certificate_chain_pem, false)?;
    if !resp.ca_pem.is_empty() {
        write(&f.ca, &resp.ca_pem, false)?;
    }
    Ok(period)
}

/// Keeps the identity in `dir` renewed: at [`renew_at`] of the current certificate, then of
/// each new one; failures are retried with backoff (1 s doubling to 5 min) until the
/// certificate expires, and after (the agent then needs a new `Join`). `reload` is notified
/// after each renewal, and `keeper` (if any) keeps the new identity; `on_event` is told each
/// certificate's end and each renewal. Runs until dropped.
pub async fn keep_renewed(
    dir: PathBuf,
    channel: opni_metrics_transport::channel::GatewayChannel,
    reload: Arc<tokio::sync::Notify>,
    keeper: Option<Arc<dyn IdentityKeeper>>,
    on_event: impl Fn(RenewEvent) + Send + Sync + 'static,
) {
    let f = files(&dir);
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(period) = validity(&f.cert) else {
            tracing::warn!(cert = %f.cert.display(), "cannot read the agent certificate's validity; retrying in 60s");
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        on_event(RenewEvent::Valid { until: period.1 });
        let wait = renew_at(period).duration_since(SystemTime::now()).unwrap_or_default();
        if !wait.is_zero() {
            // at most an hour at a time: the wall clock may jump (suspend, NTP)
            tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
            continue;
        }
        match renew(&dir, channel.clone()).await {
            Ok((_, until)) => {
                backoff = Duration::from_secs(1);
                tracing::info!(
                    valid_for_s = until.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                    "agent certificate renewed"
                );
                reload.notify_one();
                if let Some(k) = &keeper
                    && let Err(e) = k.keep(&f).await
                {
                    // the kept copy is still valid: a restart restores it and renews again
                    tracing::warn!(error = %opni_metrics_core::error_chain(&e), "cannot keep the renewed identity");
                }
                on_event(RenewEvent::Renewed);
            }
            Err(e) => {
                let left = period.1.duration_since(SystemTime::now()).unwrap_or_default();
                tracing::warn!(error = %e, expires_in_s = left.as_secs(), retry_in_s = backoff.as_secs(), "certificate renewal failed");
                on_event(RenewEvent::Failed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// What [`keep_renewed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewEvent {
    /// The current certificate is valid until then.
    Valid {
        /// Its end.
        until: SystemTime,
    },
    /// A renewal succeeded.
    Renewed,
    /// A renewal failed (it is retried).
    Failed,
}

/// An [`IdentityKeeper`] that keeps the identity in a Kubernetes Secret (type `Opaque`, keys
/// `tls.key`, `tls.crt`, `ca.crt`), applied server-side as `opni-metrics-agent`.
#[cfg(feature = "kubernetes")]
#[derive(Clone)]
pub struct SecretKeeper {
    client: kube::Client,
    namespace: String,
    name: String,
}

#[cfg(feature = "kubernetes")]
impl std::fmt::Debug for SecretKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeeper({}/{})", self.namespace, self.name)
    }
}

#[cfg(feature = "kubernetes")]
impl SecretKeeper {
    /// Keeps the identity in Secret `namespace/name`.
    pub fn new(client: kube::Client, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into(), name: name.into() }
    }

    fn error(&self, source: impl std::error::Error + Send + Sync + 'static) -> KeepError {
        KeepError { place: format!("Secret {}/{}", self.namespace, self.name), source: Box::new(source) }
    }

    fn slots(files: &TlsFiles) -> [(&'static str, &Path, bool); 3] {
        [("tls.key", &files.key, true), ("tls.crt", &files.cert, false), ("ca.crt", &files.ca, false)]
    }
}

#[cfg(feature = "kubernetes")]
impl IdentityKeeper for SecretKeeper {
    fn restore<'a>(&'a self, files: &'a TlsFiles) -> futures::future::BoxFuture<'a, Result<(), KeepError>> {
        Box::pin(async move {
            let Some(data) = opni_metrics_kube::secret::read(&self.client, &self.namespace, &self.name)
                .await
                .map_err(|e| self.error(e))?
            else {
                return Ok(());
            };
            // the Secret is the truth: its parts replace the files, and files it lacks go
            for (key, path, private) in Self::slots(files) {
                match data.get(key) {
                    Some(v) => {
                        let text = String::from_utf8(v.clone()).map_err(|e| self.error(e))?;
                        write(path, &text, private).map_err(|e| self.error(e))?;
                    }
                    None => match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.error(e)),
                    },
                }
            }
            tracing::info!(secret = %self.name, parts = data.len(), "agent identity restored from its Secret");
            Ok(())
        })
    }

    fn keep<'a>(&'a self, files: &'a TlsFiles) -> futures::future::BoxFuture<'a, Result<(), KeepError>> {
        Box::pin(async move {
            let mut data = std::collections::BTreeMap::new();
            for (key, path, _) in Self::slots(files) {
                match std::fs::read(path) {
                    Ok(v) => {
                        data.insert(key.to_owned(), v);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(self.error(e)),
                }
            }
            opni_metrics_kube::secret::apply(&self.client, &self.namespace, &self.name, data)
                .await
                .map_err(|e| self.error(e))
        })
    }
}
