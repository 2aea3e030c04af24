//! The agent's identity: a key and a certificate issued by the gateway at `Join`, kept in the
//! agent's data directory and used for mutual TLS from then on.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opni_metrics_proto::bootstrap::v1::JoinRequest;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use tokio::sync::watch;

use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use opni_metrics_transport::tls::TlsFiles;

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
    #[error("no certificate in {dir} and no bootstrap token to get one: set bootstrap.token and bootstrap.caFile")]
    NoToken {
        /// The identity directory.
        dir: PathBuf,
    },
    /// Key or CSR generation failed.
    #[error("generate a key and CSR")]
    Keygen(#[source] rcgen::Error),
    /// The CA file is unusable.
    #[error("bootstrap.caFile")]
    Ca(#[from] opni_metrics_transport::tls::TlsError),
    /// The gateway refused.
    #[error("the gateway refused to join: {0}")]
    Refused(String),
}

/// Where the identity lives.
pub fn files(dir: &Path) -> TlsFiles {
    TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: dir.join("ca.pem") }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), JoinError> {
    let io = |source| JoinError::Io { path: path.to_owned(), source };
    let mode = if private { 0o600 } else { 0o644 };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The identity in `dir`, joining first (with `token`, trusting `ca_file` for the gateway) when
/// there is none yet. Returns the files and the cluster id.
///
/// # Errors
/// [`JoinError`].
pub async fn ensure(
    dir: &Path,
    gateway: &str,
    server_name: &str,
    token: Option<&str>,
    cluster_id: Option<&str>,
    ca_file: Option<&Path>,
) -> Result<TlsFiles, JoinError> {
    let f = files(dir);
    if f.cert.exists() && f.key.exists() && f.ca.exists() {
        return Ok(f);
    }
    let (Some(token), Some(ca_file)) = (token, ca_file) else {
        return Err(JoinError::NoToken { dir: dir.to_owned() });
    };
    std::fs::create_dir_all(dir).map_err(|source| JoinError::Io { path: dir.to_owned(), source })?;
    let key = rcgen::KeyPair::generate().map_err(JoinError::Keygen)?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(JoinError::Keygen)?;
    let csr = params.serialize_request(&key).map_err(JoinError::Keygen)?.pem().map_err(JoinError::Keygen)?;

    let cfg = opni_metrics_transport::tls::anonymous_client_config(ca_file)?;
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
    write(&f.key, &key.serialize_pem(), true)?;
    write(&f.ca, &resp.ca_pem, false)?;
    write(&f.cert, &resp.certificate_chain_pem, false)?;
    tracing::info!(cluster = %resp.cluster_id, "joined the gateway");
    Ok(f)
}
