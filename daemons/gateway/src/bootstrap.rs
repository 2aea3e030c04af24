//! The `Bootstrap` service: bootstrap tokens (TTL, max uses, revocable) and `Join`, which trades
//! a token and a CSR for a client certificate naming the new cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use opni_metrics_core::digest::hex;
use opni_metrics_core::registry::{Cluster, validate_labels};
use opni_metrics_core::{ClusterId, Timestamp};
use opni_metrics_proto::IntoStatus;
use opni_metrics_proto::bootstrap::v1::bootstrap_server::Bootstrap;
use opni_metrics_proto::bootstrap::v1::{
    BootstrapToken, CreateTokenRequest, JoinRequest, JoinResponse, RenewRequest, RevokeTokenRequest, TokenList,
};
use opni_metrics_proto::convert::{std_duration, wire_timestamp};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::ca::Ca;
use super::errors::status;
use super::state::{State, StateError, now};

/// Longest token lifetime.
pub(crate) const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A stored token (the secret only as a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredToken {
    pub(crate) id: String,
    secret_sha256: String,
    created_at: Timestamp,
    expires_at: Timestamp,
    max_uses: u32,
    uses: u32,
    labels: BTreeMap<String, String>,
}

/// How long after a join the same token and key get the same answer again (a client whose
/// answer was lost retries within this).
pub(crate) const RETRY_WINDOW: Duration = Duration::from_secs(600);

/// A cluster's join, kept so that a retried `Join` (same token, same key) gets the same
/// identity instead of `ALREADY_EXISTS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinRecord {
    pub(crate) cluster: ClusterId,
    token_id: String,
    /// SHA-256 of the CSR's public key (SubjectPublicKeyInfo).
    key_sha256: String,
    chain_pem: String,
    joined_at: Timestamp,
}

/// SHA-256 (hex) of a CSR's public key.
fn csr_key_sha256(csr_pem: &str) -> Result<String, Status> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
    Ok(hex(ring::digest::digest(
        &ring::digest::SHA256,
        &rcgen::PublicKeyData::subject_public_key_info(&csr.public_key),
    )
    .as_ref()))
}

/// The serial (hex) and end of the leaf of a PEM chain the CA just issued.
fn issued(chain_pem: &str) -> Option<(String, Timestamp)> {
    use rustls_pki_types::pem::PemObject;
    let chain =
        rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>().ok()?;
    let leaf = opni_metrics_transport::tls::Leaf::parse(&chain).ok()?;
    let ms = leaf.not_after.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some((leaf.serial, Timestamp(u64::try_from(ms).ok()?)))
}

fn sha256(s: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

fn random_hex(n: usize) -> Result<String, Status> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).map_err(|_| Status::internal("no randomness available"))?;
    Ok(hex(&b))
}

/// The `Bootstrap` service. On the agent-facing listener (`public`), only `Join` and `Renew`
/// are served; `Renew` only there.
#[derive(Clone)]
pub(crate) struct BootstrapService {
    state: State,
    ca: Arc<Ca>,
    public: bool,
    cert_validity: Duration,
    limiter: Option<Arc<JoinLimiter>>,
    admission: Option<Arc<crate::admission::Admission>>,
}

/// `Join` attempts per peer address: a token bucket of `per_minute` refilled evenly.
struct JoinLimiter {
    per_minute: u32,
    buckets: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
}

/// Peers tracked at most; beyond, full buckets are forgotten first.
const MAX_TRACKED_PEERS: usize = 65_536;

impl JoinLimiter {
    /// Takes one attempt for `ip`, or says how long until one is available.
    fn take(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Result<(), Duration> {
        let cap = f64::from(self.per_minute);
        let per_sec = cap / 60.0;
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() >= MAX_TRACKED_PEERS {
            b.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < cap);
        }
        let (tokens, at) = b.entry(ip).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

impl std::fmt::Debug for BootstrapService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapService").field("public", &self.public).finish_non_exhaustive()
    }
}

impl BootstrapService {
    /// The service; `public` limits it to `Join`.
    pub(crate) fn new(state: State, ca: Arc<Ca>, public: bool, cert_validity: Duration) -> Self {
        Self { state, ca, public, cert_validity, limiter: None, admission: None }
    }

    /// Checks `Renew` callers' certificates against the revoked serials of `admission`.
    pub(crate) fn with_admission(mut self, admission: Arc<crate::admission::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Records the certificate just issued to `id`, so that deleting the cluster revokes it.
    async fn record(&self, id: &ClusterId, chain_pem: &str) -> Result<(), Status> {
        let Some((serial, end)) = issued(chain_pem) else {
            return Err(Status::internal("the issued certificate cannot be read back"));
        };
        self.state.record_issued(id, &serial, end).await.map_err(status)
    }

    /// Limits `Join` to `per_minute` attempts per peer address.
    pub(crate) fn with_join_rate(mut self, per_minute: u32) -> Self {
        self.limiter = Some(Arc::new(JoinLimiter { per_minute, buckets: Default::default() }));
        self
    }

    /// Takes one attempt from the caller's bucket, if this service limits attempts.
    #[allow(clippy::result_large_err)]
    fn limit<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        if let (Some(limiter), Some(peer)) = (&self.limiter, crate::auth::peer_addr(request))
            && let Err(wait) = limiter.take(peer.ip(), std::time::Instant::now())
        {
            return Err(Status::resource_exhausted(format!(
                "too many {what} attempts from {}; retry in {}s",
                peer.ip(),
                wait.as_secs().max(1)
            )));
        }
        Ok(())
    }

    fn management(&self) -> Result<(), Status> {
        if self.public {
            Err(Status::permission_denied("token management is served on the management listener"))
        } else {
            Ok(())
        }
    }

    fn to_wire(t: &StoredToken, secret: Option<&str>) -> BootstrapToken {
        BootstrapToken {
            id: t.id.clone(),
            token: secret.map(|s| format!("{}.{s}", t.id)).unwrap_or_default(),
            created_at: Some(wire_timestamp(t.created_at)),
            expires_at: Some(wire_timestamp(t.expires_at)),
            max_uses: t.max_uses,
            uses: t.uses,
            labels: t.labels.clone().into_iter().collect(),
            ca_pin: String::new(),
        }
    }

    /// The token, if it exists and its secret matches (compared in constant time), whether or
    /// not it is expired or used up. Reads only.
    async fn authentic(&self, token: &str) -> Result<(StoredToken, opni_metrics_core::Revision), Status> {
        let Some((id, secret)) = token.split_once('.') else {
            return Err(Status::invalid_argument("token: expected <id>.<secret>"));
        };
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() > 256 {
            return Err(Status::invalid_argument("token: expected <id>.<secret>"));
        }
        let Some((t, rev)) = self.state.token(id).await.map_err(status)? else {
            return Err(Status::unauthenticated("unknown or revoked bootstrap token"));
        };
        let given = sha256(secret);
        let same = given.len() == t.secret_sha256.len()
            && given.bytes().zip(t.secret_sha256.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return Err(Status::unauthenticated("unknown or revoked bootstrap token"));
        }
        Ok((t, rev))
    }

    /// The token, if it is authentic, unexpired and has uses left.
    async fn usable(&self, token: &str) -> Result<(StoredToken, opni_metrics_core::Revision), Status> {
        let (t, rev) = self.authentic(token).await?;
        if now() >= t.expires_at {
            return Err(Status::permission_denied("bootstrap token has expired"));
        }
        if t.max_uses > 0 && t.uses >= t.max_uses {
            return Err(Status::permission_denied(format!(
                "bootstrap token has been used {} of {} times",
                t.uses, t.max_uses
            )));
        }
        Ok((t, rev))
    }

    /// The earlier join this request repeats: the same token (its secret checked, even if now
    /// used up or expired) and the same public key, within [`RETRY_WINDOW`], for a cluster that
    /// still exists (and is the one asked for, if one is). Anything else is not a retry.
    async fn retried(
        &self,
        token: &str,
        key_sha256: &str,
        wanted: Option<&ClusterId>,
    ) -> Result<Option<JoinRecord>, Status> {
        let Some((token_id, _)) = token.split_once('.') else { return Ok(None) };
        let matches = |j: &JoinRecord| j.token_id == token_id && j.key_sha256 == key_sha256;
        // a named cluster's join is read directly; only a generated id needs the scan
        let found = match wanted {
            Some(id) => self.state.join(id).await.map_err(status)?.filter(|j| matches(j)),
            None => self.state.joins().await.map_err(status)?.into_iter().find(|j| matches(j)),
        };
        let Some(j) = found else { return Ok(None) };
        if now().as_millis().saturating_sub(j.joined_at.as_millis()) > RETRY_WINDOW.as_millis() as u64 {
            return Ok(None);
        }
        if self.state.cluster(&j.cluster).await.map_err(status)?.is_none() {
            return Ok(None);
        }
        Ok(Some(j))
    }

    async fn consume(&self, token: &str) -> Result<BTreeMap<String, String>, Status> {
        loop {
            let (mut t, rev) = self.usable(token).await?;
            t.uses += 1;
            if self.state.replace_token(&t, rev).await.map_err(status)? {
                return Ok(t.labels);
            }
        }
    }
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Result<Response<BootstrapToken>, Status> {
        self.management()?;
        let r = request.into_inner();
        let ttl = match r.ttl {
            Some(d) => std_duration("ttl", &d).map_err(Status::from)?,
            None => Duration::from_secs(3600),
        };
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "ttl: must be within 1s..={}h",
                MAX_TOKEN_TTL.as_secs() / 3600
            )));
        }
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        validate_labels(&labels).map_err(|e| e.into_status())?;
        let id = random_hex(6)?;
        let secret = random_hex(24)?;
        let at = now();
        let t = StoredToken {
            id: id.clone(),
            secret_sha256: sha256(&secret),
            created_at: at,
            expires_at: at.after(ttl),
            max_uses: r.max_uses,
            uses: 0,
            labels,
        };
        self.state.create_token(&t).await.map_err(status)?;
        let mut wire = Self::to_wire(&t, Some(&secret));
        wire.ca_pin = opni_metrics_transport::tls::ca_pin_of_pem(self.ca.cert_pem()).unwrap_or_default();
        Ok(Response::new(wire))
    }

    async fn list_tokens(&self, _: Request<()>) -> Result<Response<TokenList>, Status> {
        self.management()?;
        let items = self.state.tokens().await.map_err(status)?.iter().map(|t| Self::to_wire(t, None)).collect();
        Ok(Response::new(TokenList { items }))
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<()>, Status> {
        self.management()?;
        let id = request.into_inner().id;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument("id: not a token id"));
        }
        if self.state.delete_token(&id).await.map_err(status)? {
            Ok(Response::new(()))
        } else {
            Err(Status::not_found(format!("no token {id}")))
        }
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.limit(&request, "Join")?;
        let r = request.into_inner();
        // the token first: a caller without an authentic one learns nothing (whether the
        // cluster exists) and costs no CA work
        self.authentic(&r.token).await?;
        let named = !r.cluster_id.is_empty();
        let id = if r.cluster_id.is_empty() {
            ClusterId::new(format!("cluster-{}", random_hex(4)?)).map_err(|e| e.into_status())?
        } else {
            opni_metrics_proto::convert::cluster_id("cluster_id", r.cluster_id).map_err(Status::from)?
        };
        if r.csr_pem.len() > 16 * 1024 {
            return Err(Status::invalid_argument("csr_pem: larger than 16 KiB"));
        }
        let key = csr_key_sha256(&r.csr_pem)?;
        if let Some(again) = self.retried(&r.token, &key, named.then_some(&id)).await? {
            tracing::info!(cluster = %again.cluster, "join retried; the same identity is returned");
            return Ok(Response::new(JoinResponse {
                certificate_chain_pem: again.chain_pem,
                ca_pem: self.ca.cert_pem().to_owned(),
                cluster_id: again.cluster.to_string(),
            }));
        }
        // a new join needs a token with uses left
        self.usable(&r.token).await?;
        if self.state.cluster(&id).await.map_err(status)?.is_some() {
            return Err(StateError::ClusterExists(id).into_status());
        }
        // check the CSR before spending a token use
        let chain = self
            .ca
            .sign_agent(&r.csr_pem, &id, self.cert_validity)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {}", opni_metrics_core::error_chain(&e))))?;
        let labels = self.consume(&r.token).await?;
        let mut cluster = Cluster::new(id.clone());
        cluster.labels = labels;
        self.state.create_cluster(&cluster).await.map_err(status)?;
        self.record(&id, &chain).await?;
        let token_id = r.token.split_once('.').map_or("", |(t, _)| t).to_owned();
        let record =
            JoinRecord { cluster: id.clone(), token_id, key_sha256: key, chain_pem: chain.clone(), joined_at: now() };
        self.state.put_join(&record).await.map_err(status)?;
        tracing::info!(cluster = %id, "cluster joined");
        Ok(Response::new(JoinResponse {
            certificate_chain_pem: chain,
            ca_pem: self.ca.cert_pem().to_owned(),
            cluster_id: id.to_string(),
        }))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<JoinResponse>, Status> {
        if !self.public {
            return Err(Status::permission_denied("Renew is served to agents, on the agent-facing listener"));
        }
        // the current certificate authenticates (its expiry checked on this request, its
        // serial against the revoked ones)
        // registered or not: from the in-memory registry view, or the store without one
        let (id, registered) = match &self.admission {
            Some(a) => {
                let (id, m) = a.caller(&request)?;
                (id, Some(m.is_some()))
            }
            None => (crate::auth::cluster_of(&request)?, None),
        };
        self.limit(&request, "Renew")?;
        let csr_pem = request.into_inner().csr_pem;
        if csr_pem.len() > 16 * 1024 {
            return Err(Status::invalid_argument("csr_pem: larger than 16 KiB"));
        }
        let registered = match registered {
            Some(r) => r,
            None => self.state.cluster(&id).await.map_err(status)?.is_some(),
        };
        if !registered {
            tracing::warn!(cluster = %id, "renewal refused: the cluster is not registered");
            return Err(Status::permission_denied(format!(
                "cluster {id} is not registered (it was deleted); its certificate is not renewed"
            )));
        }
        let chain = self
            .ca
            .sign_agent(&csr_pem, &id, self.cert_validity)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {}", opni_metrics_core::error_chain(&e))))?;
        self.record(&id, &chain).await?;
        tracing::info!(cluster = %id, valid_for_s = self.cert_validity.as_secs(), "certificate renewed");
        Ok(Response::new(JoinResponse {
            certificate_chain_pem: chain,
            ca_pem: self.ca.cert_pem().to_owned(),
            cluster_id: id.to_string(),
        }))
    }
}
