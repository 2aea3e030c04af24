//! TLS for every hop: mutual TLS 1.3 between agent and gateway, identity from the client
//! certificate's URI SAN, certificates reloaded from disk without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opni_metrics_core::ClusterId;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

/// Prefix of the URI SAN that names a cluster in an agent certificate.
pub const CLUSTER_URI_PREFIX: &str = "urn:opni-metrics:cluster:";

/// The URI SAN naming `cluster`.
pub fn cluster_uri(cluster: &ClusterId) -> String {
    format!("{CLUSTER_URI_PREFIX}{cluster}")
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused the configuration (e.g. key does not match certificate).
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. empty CA bundle).
    #[error("invalid client CA bundle: {0}")]
    Verifier(String),
    /// A CA pin is not `sha256:` and 64 hex digits.
    #[error("invalid CA pin {0:?}: expected sha256:<64 hex digits>, as `opni-metrics tokens create` prints")]
    Pin(String),
}

/// Why a peer certificate does not name a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No client certificate was presented.
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("unparsable client certificate")]
    Unparsable,
    /// No URI SAN with the cluster prefix.
    #[error("client certificate has no {CLUSTER_URI_PREFIX} URI SAN")]
    NoClusterSan,
    /// More than one cluster SAN: ambiguous.
    #[error("client certificate names more than one cluster")]
    Ambiguous,
    /// The SAN's cluster id is invalid.
    #[error("client certificate names an invalid cluster id: {0}")]
    InvalidId(#[from] opni_metrics_core::id::IdError),
}

/// What the leaf of a certificate chain (leaf first) says about its holder, read with one parse:
/// the gateway reads it once per handshake, the agent once per renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The cluster named by its URI SAN, or why it names none.
    pub cluster: Result<ClusterId, IdentityError>,
    /// Its serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// When it starts being valid.
    pub not_before: SystemTime,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

impl Leaf {
    /// Reads the first certificate of `chain`.
    ///
    /// # Errors
    /// [`IdentityError::NoCertificate`] for an empty chain, [`IdentityError::Unparsable`] for a
    /// leaf that is not X.509 or whose validity is before 1970. A leaf without a usable cluster
    /// SAN still parses: that is in [`Leaf::cluster`].
    pub fn parse(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| IdentityError::Unparsable)?;
        let at = |t: x509_parser::time::ASN1Time| {
            u64::try_from(t.timestamp())
                .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
                .map_err(|_| IdentityError::Unparsable)
        };
        Ok(Self {
            cluster: cluster_san(&cert),
            serial: serial_hex(cert.raw_serial()),
            not_before: at(cert.validity().not_before)?,
            not_after: at(cert.validity().not_after)?,
        })
    }

    /// The validity period, `(not_before, not_after)`.
    pub fn validity(&self) -> (SystemTime, SystemTime) {
        (self.not_before, self.not_after)
    }
}

/// The one cluster a certificate's URI SANs name.
fn cluster_san(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<ClusterId, IdentityError> {
    let san = cert.subject_alternative_name().map_err(|_| IdentityError::Unparsable)?;
    let mut found = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(id) = uri.strip_prefix(CLUSTER_URI_PREFIX)
        {
            if found.is_some() {
                return Err(IdentityError::Ambiguous);
            }
            found = Some(ClusterId::new(id)?);
        }
    }
    found.ok_or(IdentityError::NoClusterSan)
}

/// The cluster named by a verified peer certificate chain (leaf first).
///
/// # Errors
/// [`IdentityError`].
pub fn peer_cluster_id(chain: &[CertificateDer<'_>]) -> Result<ClusterId, IdentityError> {
    Leaf::parse(chain)?.cluster
}

/// A certificate serial's bytes as lowercase hex, without leading zero bytes.
fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    opni_metrics_core::digest::hex(&raw[start..])
}

/// Paths of a certificate chain, its key and the CA bundle that verifies peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle used to verify the peer.
    pub ca: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
///
/// # Errors
/// [`TlsError::Pem`] naming the file.
pub fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem { what, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in file".to_owned()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
///
/// # Errors
/// [`TlsError::Pem`] naming the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A root store holding every certificate of the PEM bundle at `path`.
///
/// # Errors
/// [`TlsError::Pem`] naming the file.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in read_certs("CA bundle", path)? {
        store.add(c).map_err(|e| TlsError::Pem { what: "CA bundle", path: path.to_owned(), reason: e.to_string() })?;
    }
    Ok(Arc::new(store))
}

/// A TLS 1.3 client config that trusts the CA bundle at `ca` and presents no certificate; ALPN
/// h2. For `Join`, before the agent has an identity.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn anonymous_client_config(ca: &Path) -> Result<ClientConfig, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo; `None` if it does not parse.
fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    ring::digest::digest(&ring::digest::SHA256, c.public_key().raw).as_ref().try_into().ok()
}

/// The pin of a CA certificate, as kubeadm makes them: `sha256:` and the hex SHA-256 of its
/// SubjectPublicKeyInfo. `None` if the certificate does not parse.
pub fn ca_pin(cert: &CertificateDer<'_>) -> Option<String> {
    spki_sha256(cert).map(|h| format!("sha256:{}", opni_metrics_core::digest::Digest::from_bytes(h)))
}

/// The pin of the first certificate in a PEM text.
pub fn ca_pin_of_pem(pem: &str) -> Option<String> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    ca_pin(&cert)
}

fn parse_pin(pin: &str) -> Result<[u8; 32], TlsError> {
    let hex = pin.strip_prefix("sha256:").ok_or_else(|| TlsError::Pin(pin.to_owned()))?;
    opni_metrics_core::digest::Digest::parse(&hex.to_ascii_lowercase())
        .map(|d| *d.as_bytes())
        .map_err(|_| TlsError::Pin(pin.to_owned()))
}

/// Verifies a server against the CA in its own chain whose public key matches a pin.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let anchor = intermediates.iter().find(|c| spki_sha256(c) == Some(self.pin)).ok_or_else(|| {
            rustls::Error::General("no CA certificate in the gateway's chain matches the pin".to_owned())
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let rest: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| *c != anchor).cloned().collect();
        verifier.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Like [`anonymous_client_config`], but trusting the CA certificate the server sends in its
/// own chain if that CA's public key matches `pin` (`sha256:<hex>`, see [`ca_pin`]) — how an
/// agent joins knowing only the pin, as kubeadm does, instead of being given the CA file. The
/// server's certificate is then verified against that CA as usual (name, validity, signature).
///
/// # Errors
/// [`TlsError::Pin`] for a malformed pin.
pub fn pinned_client_config(pin: &str) -> Result<ClientConfig, TlsError> {
    let verifier = PinnedCa { pin: parse_pin(pin)?, provider: provider() };
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

impl TlsFiles {
    /// A TLS 1.3 server config that requires a client certificate signed by the CA; ALPN h2.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        self.server_config_with(false)
    }

    /// Like [`TlsFiles::server_config`], but a client certificate is optional when
    /// `optional_client_auth`: connections without one carry no identity, and every RPC that
    /// needs an identity refuses them (`Join` is the one that does not).
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn server_config_with(&self, optional_client_auth: bool) -> Result<ServerConfig, TlsError> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots(&self.ca)?, provider());
        let builder = if optional_client_auth { builder.allow_unauthenticated() } else { builder };
        let verifier = builder.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(read_certs("certificate", &self.cert)?, read_key(&self.key)?)?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }

    /// A TLS 1.2/1.3 server config without client authentication, for HTTP listeners whose
    /// callers authenticate per request (ALPN h2 and http/1.1); `ca` is not used.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn server_config_without_client_auth(&self) -> Result<ServerConfig, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(read_certs("certificate", &self.cert)?, read_key(&self.key)?)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// A TLS 1.3 client config presenting this certificate and trusting only the CA; ALPN h2.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&self.ca)?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(read_certs("certificate", &self.cert)?, read_key(&self.key)?)?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }

    fn modified(&self) -> Option<[SystemTime; 3]> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some([m(&self.cert)?, m(&self.key)?, m(&self.ca)?])
    }

    /// Builds a config with `build` now, then rebuilds it whenever one of the files changes
    /// (checked every `interval`); a broken update is logged and the last good config kept.
    /// The task runs in `tasks` and ends when every receiver is dropped or at shutdown.
    ///
    /// # Errors
    /// The first build's [`TlsError`].
    pub fn watch<C, F>(
        &self,
        interval: Duration,
        build: F,
        tasks: &crate::Tasks,
    ) -> Result<watch::Receiver<Arc<C>>, TlsError>
    where
        C: Send + Sync + 'static,
        F: Fn(&TlsFiles) -> Result<C, TlsError> + Send + 'static,
    {
        self.watch_triggered(interval, build, tasks, Arc::new(tokio::sync::Notify::new()))
    }

    /// [`TlsFiles::watch`], also looking at the files at once whenever `trigger` is notified
    /// (by whoever just rewrote them).
    ///
    /// # Errors
    /// The first build's [`TlsError`].
    pub fn watch_triggered<C, F>(
        &self,
        interval: Duration,
        build: F,
        tasks: &crate::Tasks,
        trigger: Arc<tokio::sync::Notify>,
    ) -> Result<watch::Receiver<Arc<C>>, TlsError>
    where
        C: Send + Sync + 'static,
        F: Fn(&TlsFiles) -> Result<C, TlsError> + Send + 'static,
    {
        let (tx, rx) = watch::channel(Arc::new(build(self)?));
        let files = self.clone();
        let mut seen = files.modified();
        tasks.spawn("tls-reload", async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = trigger.notified() => {}
                }
                if tx.is_closed() {
                    return;
                }
                let now = files.modified();
                if now == seen {
                    continue;
                }
                match build(&files) {
                    Ok(cfg) => {
                        seen = now;
                        tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded");
                        let _ = tx.send(Arc::new(cfg));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but could not be loaded; keeping the previous ones")
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str], serial: &[u8]) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris.iter().map(|u| rcgen::SanType::URI((*u).try_into().unwrap())).collect();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        p.not_before = rcgen::date_time_ymd(2026, 1, 1);
        p.not_after = rcgen::date_time_ymd(2026, 2, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn one_parse_reads_cluster_serial_and_validity() {
        let leaf = Leaf::parse(&[cert(&["urn:opni-metrics:cluster:east-1"], &[0, 0x0a, 0xbc])]).unwrap();
        assert_eq!(leaf.cluster, Ok(ClusterId::new("east-1").unwrap()));
        assert_eq!(leaf.serial, "0abc", "leading zero bytes dropped, lowercase hex");
        let day = |d: u64| std::time::UNIX_EPOCH + Duration::from_secs(d * 86_400);
        // 2026-01-01 and 2026-02-01 are days 20454 and 20485 since 1970-01-01
        assert_eq!(leaf.validity(), (day(20_454), day(20_485)));
    }

    #[test]
    fn a_leaf_without_one_cluster_still_parses_and_says_why() {
        let none = Leaf::parse(&[cert(&["https://example.com/"], &[1])]).unwrap();
        assert_eq!(none.cluster, Err(IdentityError::NoClusterSan));
        let two = Leaf::parse(&[cert(&["urn:opni-metrics:cluster:a", "urn:opni-metrics:cluster:b"], &[1])]).unwrap();
        assert_eq!(two.cluster, Err(IdentityError::Ambiguous));
        let bad = Leaf::parse(&[cert(&["urn:opni-metrics:cluster:.."], &[1])]).unwrap();
        assert!(matches!(bad.cluster, Err(IdentityError::InvalidId(_))), "{:?}", bad.cluster);
        assert_eq!(Leaf::parse(&[]), Err(IdentityError::NoCertificate));
        assert_eq!(Leaf::parse(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]), Err(IdentityError::Unparsable));
    }

    #[test]
    fn a_pin_is_the_ca_key_digest_in_either_case() {
        let ca = cert(&[], &[7]);
        let pin = ca_pin(&ca).unwrap();
        assert_eq!(parse_pin(&pin).ok(), spki_sha256(&ca));
        assert_eq!(parse_pin(&pin.to_ascii_uppercase().replace("SHA256:", "sha256:")).ok(), spki_sha256(&ca));
        for bad in ["", "sha256:", "md5:00", &pin[7..], &format!("{pin}0"), &pin.replace('a', "g")] {
            assert!(matches!(parse_pin(bad), Err(TlsError::Pin(p)) if p == bad), "{bad:?}");
        }
    }
}
