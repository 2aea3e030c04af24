//! Certificates for tests, made with rcgen: a CA, a gateway server certificate, agent client
//! certificates naming a cluster in their URI SAN, and the bad ones (expired, untrusted, wrong
//! SAN) the security tests need. Written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

/// The URI SAN prefix the gateway reads the cluster id from.
pub const CLUSTER_URI_PREFIX: &str = "urn:opni-metrics:cluster:";

/// Paths of one certificate, its key and the CA bundle to trust for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
    /// PEM CA bundle for verifying the peer.
    pub ca: PathBuf,
}

impl CertFiles {
    /// The files as the daemons' YAML config names them: `{cert: …, key: …, ca: …}`.
    pub fn tls_yaml(&self) -> String {
        format!("{{cert: {}, key: {}, ca: {}}}", self.cert.display(), self.key.display(), self.ca.display())
    }
}

/// A test certificate authority writing into a directory.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_path: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("static params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// Options of a leaf certificate.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// DNS SANs (server certificates).
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<std::net::IpAddr>,
    /// URI SANs (agent certificates carry `urn:opni-metrics:cluster:<id>`).
    pub uris: Vec<String>,
    /// Already expired.
    pub expired: bool,
    /// Valid from now for this long (default: rcgen's long validity).
    pub valid_for: Option<std::time::Duration>,
    /// Server (true) or client (false) usage.
    pub server: bool,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    ///
    /// # Panics
    /// On I/O errors (test code).
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("create pki dir");
        let key = KeyPair::generate().expect("generate key");
        let ca = CertifiedIssuer::self_signed(ca_params(name), key).expect("self-sign CA");
        let ca_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        Self { dir: dir.to_owned(), ca, ca_path }
    }

    /// The CA certificate file.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Issues a leaf certificate named `name`, trusting `peer_ca` for the peer.
    ///
    /// # Panics
    /// On rcgen or I/O errors (test code).
    pub fn issue(&self, name: &str, leaf: &Leaf, peer_ca: &Path) -> CertFiles {
        let mut p = CertificateParams::new(leaf.dns.clone()).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        for ip in &leaf.ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &leaf.uris {
            p.subject_alt_names.push(SanType::URI(uri.as_str().try_into().expect("ia5 uri")));
        }
        p.extended_key_usages =
            vec![if leaf.server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Some(d) = leaf.valid_for {
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::seconds(1);
            p.not_after = now + time::Duration::milliseconds(i64::try_from(d.as_millis()).expect("duration"));
        }
        if leaf.expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("generate key");
        let cert = p.signed_by(&key, &self.ca).expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
            ca: peer_ca.to_owned(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A gateway server certificate for `localhost` and 127.0.0.1, trusting this CA for agents.
    pub fn gateway(&self, name: &str) -> CertFiles {
        let leaf = Leaf {
            dns: vec!["localhost".into()],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            server: true,
            ..Leaf::default()
        };
        self.issue(name, &leaf, &self.ca_path)
    }

    /// An agent client certificate naming `cluster`, trusting this CA for the gateway.
    pub fn agent(&self, name: &str, cluster: &str) -> CertFiles {
        let leaf = Leaf { uris: vec![format!("{CLUSTER_URI_PREFIX}{cluster}")], ..Leaf::default() };
        self.issue(name, &leaf, &self.ca_path)
    }

    /// [`Pki::agent`], valid from now for `valid_for` only.
    pub fn short_lived_agent(&self, name: &str, cluster: &str, valid_for: std::time::Duration) -> CertFiles {
        let leaf = Leaf {
            uris: vec![format!("{CLUSTER_URI_PREFIX}{cluster}")],
            valid_for: Some(valid_for),
            ..Leaf::default()
        };
        self.issue(name, &leaf, &self.ca_path)
    }
}
