//! The gateway's certificate authority: it signs the gateway's serving certificate and every
//! agent certificate issued at `Join` (cluster id in the URI SAN).
//!
//! Either embedded (generated on first start and kept in the data directory, one per replica)
//! or supplied by the operator ([`Ca::load`]: a certificate and key every replica mounts, such as
//! a Kubernetes Secret or a cert-manager CA issuer's secret), which is what several replicas
//! need: an agent that joined through one is then trusted by all, and a pod restart keeps every
//! agent's identity valid.
//!
//! Private files are checked on every start: the ones the gateway writes (the embedded CA's key,
//! the serving key) must be readable by their owner only, an operator's key by no one outside
//! its owner and group (Kubernetes' `fsGroup` makes secret files group-readable).

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
    /// A private key file can be read by others.
    #[error("{path} is readable by others (mode {mode:o}); make it 0600 (or 0440 in a Secret volume)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key does not belong to the certificate.
    #[error("the key {key} does not belong to the CA certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate cannot sign certificates.
    #[error("{path} is not a CA certificate (basic constraints do not allow signing)")]
    NotCa {
        /// The certificate file.
        path: PathBuf,
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

/// Refuses a private file whose mode grants any of `forbidden`.
pub(crate) fn check_private(path: &Path, forbidden: u32) -> Result<(), CaError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| CaError::Io { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(CaError::Permissions { path: path.to_owned(), mode });
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn pem_first(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.as_ref().to_vec())
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Valid from a little before now (for peers whose clocks are behind: 5 minutes, or a tenth of
/// a short lifetime, so that two thirds of the lifetime, when agents renew, is still ahead).
fn validity(p: &mut CertificateParams, d: Duration) {
    let now = time::OffsetDateTime::now_utc();
    let skew = Duration::from_secs(300).min(d / 10);
    p.not_before = now - time::Duration::milliseconds(i64::try_from(skew.as_millis()).unwrap_or(300_000));
    p.not_after = now + time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
}

/// The embedded CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// Where the serving certificate is written.
    dir: PathBuf,
    /// The CA certificate file agents are given.
    cert_path: PathBuf,
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
        check_private(&key_path, 0o077)?;
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(rc("parse CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rc("parse CA certificate"))?;
        Ok(Self { issuer, cert_pem, dir: dir.to_owned(), cert_path })
    }

    /// Loads an operator's CA from `cert` and `key` (PEM; the first certificate of `cert` is the
    /// CA), writing the serving certificate into `work_dir`. Every replica given the same files
    /// issues certificates every other replica trusts.
    ///
    /// # Errors
    /// [`CaError`]: a file is unreadable, the key is readable by others, the key does not
    /// belong to the certificate, or the certificate is not a CA's.
    pub fn load(cert: &Path, key: &Path, work_dir: &Path) -> Result<Self, CaError> {
        std::fs::create_dir_all(work_dir).map_err(|source| CaError::Io { path: work_dir.to_owned(), source })?;
        check_private(key, 0o007)?;
        let cert_pem = read(cert)?;
        let keypair = KeyPair::from_pem(&read(key)?).map_err(rc("parse CA key"))?;
        let first = pem_first(&cert_pem).ok_or_else(|| CaError::NotCa { path: cert.to_owned() })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&first).map_err(|_| CaError::NotCa { path: cert.to_owned() })?;
        if x509.tbs_certificate.subject_pki.raw != rcgen::PublicKeyData::subject_public_key_info(&keypair).as_slice() {
            return Err(CaError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() });
        }
        if !x509.is_ca() {
            return Err(CaError::NotCa { path: cert.to_owned() });
        }
        let issuer = Issuer::from_ca_cert_der(&first.clone().into(), keypair).map_err(rc("parse CA certificate"))?;
        // agents are given exactly the CA certificate
        let own_pem = pem_encode(&first);
        let cert_path = work_dir.join("ca.pem");
        std::fs::write(&cert_path, &own_pem).map_err(|source| CaError::Io { path: cert_path.clone(), source })?;
        tracing::info!(cert = %cert.display(), "using the operator's CA");
        Ok(Self { issuer, cert_pem: own_pem, dir: work_dir.to_owned(), cert_path })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.cert_path.clone()
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
