//! The gateway's embedded certificate authority: generated on first start and kept in the data
//! directory; it signs the gateway's serving certificate and every agent certificate issued at
//! `Join` (cluster id in the URI SAN).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opni_metrics_core::ClusterId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use opni_metrics_transport::tls::{TlsFiles, cluster_uri};

/// CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation, parsing or signing failed.
    #[error("{context}")]
    Rcgen {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

fn rc(context: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Rcgen { context, source }
}

/// Writes `contents` to `path` readable by the owner only, atomically (a temporary file,
/// synced, then renamed over `path`), so a crash never leaves a half-written key.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    let io = |source| CaError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

fn validity(p: &mut CertificateParams, d: Duration) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
}

/// The embedded CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir` (`ca.pem`, `ca-key.pem`), creating it on first start.
    ///
    /// # Errors
    /// [`CaError`] naming the file.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.to_owned(), source })?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        if !cert_path.exists() {
            let key = KeyPair::generate().map_err(rc("generate CA key"))?;
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA parameters"))?;
            p.distinguished_name.push(DnType::CommonName, "opni-metrics CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            validity(&mut p, Duration::from_secs(10 * 365 * 24 * 3600));
            let cert = p.self_signed(&key).map_err(rc("self-sign CA"))?;
            write_private(&key_path, &key.serialize_pem())?;
            write_private(&cert_path, &cert.pem())?;
            tracing::info!(dir = %dir.display(), "created the embedded CA");
        }
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(rc("parse CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rc("parse CA certificate"))?;
        Ok(Self { issuer, cert_pem, dir: dir.to_owned() })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues (or re-issues) the gateway's serving certificate for `names` (DNS names or IP
    /// addresses) and returns the files for the agent-facing listener.
    ///
    /// # Errors
    /// [`CaError`].
    pub fn server_files(&self, names: &[String]) -> Result<TlsFiles, CaError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc("server parameters"))?;
        p.distinguished_name.push(DnType::CommonName, "opni-metrics-gateway");
        for n in names {
            p.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.as_str().try_into().map_err(rc("server DNS name"))?),
            });
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, Duration::from_secs(365 * 24 * 3600));
        let key = KeyPair::generate().map_err(rc("generate server key"))?;
        let cert = p.signed_by(&key, &self.issuer).map_err(rc("sign server certificate"))?;
        let files =
            TlsFiles { cert: self.dir.join("server.pem"), key: self.dir.join("server-key.pem"), ca: self.cert_path() };
        write_private(&files.key, &key.serialize_pem())?;
        write_private(&files.cert, &format!("{}{}", cert.pem(), self.cert_pem))?;
        Ok(files)
    }

    /// Signs an agent's CSR: only its public key is used; the certificate names `cluster` in its
    /// URI SAN, is for client auth only, and is valid for `valid_for`. Returns the PEM chain.
    ///
    /// # Errors
    /// [`CaError::Rcgen`] for an unparsable or badly signed CSR.
    pub fn sign_agent(&self, csr_pem: &str, cluster: &ClusterId, valid_for: Duration) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(rc("parse CSR"))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc("agent parameters"))?;
        p.distinguished_name.push(DnType::CommonName, cluster.as_str());
        p.subject_alt_names = vec![SanType::URI(cluster_uri(cluster).as_str().try_into().map_err(rc("cluster URI"))?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, valid_for);
        let cert = p.signed_by(&csr.public_key, &self.issuer).map_err(rc("sign agent certificate"))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}
