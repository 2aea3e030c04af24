//! Who is reading: the authentication of the query proxy's and `CortexAdmin`'s callers, and
//! the tenants each may read.
//!
//! A reader sends `Authorization: Bearer <credential>` (or `Basic` with the credential as the
//! password, for clients that only speak basic auth, such as promtool):
//! - an API key (`omk_<id>_<secret>`, see [`opni_metrics_core::access`]), looked up in the
//!   store by its id and compared by hash; or
//! - an OpenID Connect ID or access token: a JWT whose signature is checked against the
//!   issuer's JWKS (fetched on first use, again after the refresh interval, and at once, at
//!   most every `min_refresh_interval`, when a token names a key id not in the cached set,
//!   which is how a key rotation is picked up), and whose `iss`, `aud`, `exp` and `nbf` are
//!   enforced. Only asymmetric algorithms are accepted (RS*, PS*, ES256/384, EdDSA): a JWKS
//!   is public, so an HMAC key from it would let anyone sign.
//!
//! The subject and groups come from configurable claims; what they may read comes only from
//! role bindings ([`State::readable_tenants`]). Admins (the management [`Authenticator`]) may
//! read every registered cluster.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{Caller, PresentedKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use crate::auth::Authenticator;
use crate::forward::{HttpClient, UpstreamError, upstream_client};
use crate::settings::{OidcSettings, UpstreamSettings};
use crate::state::{State, StateError};

/// The largest JWKS or discovery document read.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// The longest bearer credential considered.
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// Signature algorithms accepted.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a reader was not authenticated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer credential: send Authorization: Bearer <token or API key>")]
    Missing,
    /// The credential is neither an API key nor a JWT.
    #[error("malformed bearer credential: {0}")]
    Malformed(String),
    /// An API key that does not exist (or was revoked).
    #[error("unknown or revoked API key")]
    UnknownApiKey,
    /// A JWT that failed a check (signature, issuer, audience, expiry ...).
    #[error("token refused: {0}")]
    Token(String),
    /// JWTs are not accepted: no issuer is configured.
    #[error("tokens are not accepted here (no OpenID Connect issuer is configured); use an API key")]
    NoIssuer,
    /// The issuer's keys could not be fetched.
    #[error("the identity provider's keys are unavailable: {0}")]
    Jwks(String),
    /// The store failed.
    #[error("state")]
    State(#[from] StateError),
}

impl ReaderError {
    /// Whether the caller is at fault (401) rather than the gateway or its dependencies (503).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, Self::Jwks(_) | Self::State(_))
    }
}

/// What a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The management authenticator admitted it: every registered cluster.
    Admin,
    /// A reader: what its role bindings grant.
    Reader(Caller),
}

/// Authenticates readers and resolves their tenants.
#[derive(Clone)]
pub struct Readers {
    state: State,
    oidc: Option<Arc<Oidc>>,
    admin: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("oidc", &self.oidc.as_ref().map(|o| &o.settings.issuer)).finish()
    }
}

impl Readers {
    /// Readers over `state`, with OIDC when `oidc` is set; `admin` admits admins.
    ///
    /// # Errors
    /// The issuer's CA file is unusable.
    pub fn new(state: State, oidc: Option<OidcSettings>, admin: Arc<dyn Authenticator>) -> Result<Self, UpstreamError> {
        let oidc = oidc.map(Oidc::new).transpose()?.map(Arc::new);
        Ok(Self { state, oidc, admin })
    }

    /// The reader behind `headers`' bearer credential.
    ///
    /// # Errors
    /// [`ReaderError`].
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ReaderError> {
        let value = headers.get(http::header::AUTHORIZATION).ok_or(ReaderError::Missing)?;
        let value = value.to_str().map_err(|_| ReaderError::Malformed("not ASCII".into()))?;
        let (scheme, credential) = value.split_once(' ').ok_or(ReaderError::Missing)?;
        let basic;
        let credential = if scheme.eq_ignore_ascii_case("bearer") {
            credential.trim()
        } else if scheme.eq_ignore_ascii_case("basic") {
            // clients that only speak basic auth (promtool, some Grafana set-ups) send the
            // credential as the password; the user name carries no meaning
            basic = basic_password(credential.trim())?;
            basic.as_str()
        } else {
            return Err(ReaderError::Missing);
        };
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(ReaderError::Malformed(format!("longer than {MAX_CREDENTIAL_BYTES} bytes")));
        }
        if credential.starts_with(opni_metrics_core::access::API_KEY_PREFIX) {
            let key = PresentedKey::parse(credential)
                .ok_or_else(|| ReaderError::Malformed("API keys look like omk_<16 hex>_<64 hex>".into()))?;
            return self.state.api_key_caller(&key).await?.ok_or(ReaderError::UnknownApiKey);
        }
        if credential.split('.').count() != 3 {
            return Err(ReaderError::Malformed("neither an API key nor a JWT".into()));
        }
        let oidc = self.oidc.as_ref().ok_or(ReaderError::NoIssuer)?;
        oidc.verify(credential).await
    }

    /// An admin (per the management authenticator) or an authenticated reader.
    ///
    /// # Errors
    /// [`ReaderError`] when neither.
    pub async fn principal<T>(&self, req: &tonic::Request<T>) -> Result<Principal, ReaderError> {
        let mut probe = tonic::Request::new(());
        *probe.metadata_mut() = req.metadata().clone();
        for ext in [req.extensions().get::<opni_metrics_transport::grpc::PeerIdentity>().cloned()].into_iter().flatten()
        {
            probe.extensions_mut().insert(ext);
        }
        if let Some(info) = req.extensions().get::<tonic::transport::server::TcpConnectInfo>() {
            probe.extensions_mut().insert(info.clone());
        }
        if self.admin.authenticate(&probe).is_ok() {
            return Ok(Principal::Admin);
        }
        self.authenticate(&req.metadata().clone().into_headers()).await.map(Principal::Reader)
    }

    /// Every tenant `principal` may read now: all registered clusters for an admin.
    ///
    /// # Errors
    /// Store errors.
    pub async fn tenants(&self, principal: &Principal) -> Result<BTreeSet<ClusterId>, StateError> {
        match principal {
            Principal::Admin => Ok(self.state.clusters().await?.into_iter().map(|c| c.id).collect()),
            Principal::Reader(c) => self.state.readable_tenants(c).await,
        }
    }
}

/// The endpoints of an OpenID Connect login, from the issuer's discovery document.
#[derive(Debug, Clone)]
pub(crate) struct LoginEndpoints {
    pub(crate) authorization: String,
    pub(crate) token: String,
}

impl Readers {
    /// The OpenID Connect issuer readers are checked against, if any.
    pub(crate) fn oidc_settings(&self) -> Option<&OidcSettings> {
        self.oidc.as_ref().map(|o| &o.settings)
    }

    /// The issuer's authorization and token endpoints (discovery).
    pub(crate) async fn login_endpoints(&self) -> Result<LoginEndpoints, String> {
        let oidc = self.oidc.as_ref().ok_or("no OpenID Connect issuer is configured")?;
        let doc = oidc.discovery().await?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("the discovery document has no {name}"))
        };
        Ok(LoginEndpoints { authorization: field("authorization_endpoint")?, token: field("token_endpoint")? })
    }

    /// POSTs `form` to the issuer's token endpoint `url`.
    pub(crate) async fn token_request(&self, url: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let oidc = self.oidc.as_ref().ok_or("no OpenID Connect issuer is configured")?;
        oidc.post_form(url, form).await
    }

    /// Checks an ID token like any reader's token, and returns its caller and claims.
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
    ) -> Result<(Caller, serde_json::Map<String, Value>), ReaderError> {
        let oidc = self.oidc.as_ref().ok_or(ReaderError::NoIssuer)?;
        oidc.verify_claims(token).await
    }

    /// The reader behind an API key.
    ///
    /// # Errors
    /// [`ReaderError`]: malformed or unknown.
    pub(crate) async fn api_key(&self, key: &str) -> Result<Caller, ReaderError> {
        if key.len() > MAX_CREDENTIAL_BYTES {
            return Err(ReaderError::Malformed(format!("longer than {MAX_CREDENTIAL_BYTES} bytes")));
        }
        let key = PresentedKey::parse(key.trim())
            .ok_or_else(|| ReaderError::Malformed("API keys look like omk_<16 hex>_<64 hex>".into()))?;
        self.state.api_key_caller(&key).await?.ok_or(ReaderError::UnknownApiKey)
    }
}

fn basic_password(encoded: &str) -> Result<String, ReaderError> {
    use base64::Engine as _;
    if encoded.len() > MAX_CREDENTIAL_BYTES * 2 {
        return Err(ReaderError::Malformed(format!("longer than {MAX_CREDENTIAL_BYTES} bytes")));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ReaderError::Malformed("basic credentials are not base64".into()))?;
    let text = String::from_utf8(raw).map_err(|_| ReaderError::Malformed("basic credentials are not UTF-8".into()))?;
    let (_, password) =
        text.split_once(':').ok_or_else(|| ReaderError::Malformed("basic credentials need user:password".into()))?;
    Ok(password.to_owned())
}

struct CachedKeys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    without_kid: Vec<(DecodingKey, Option<Algorithm>)>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

struct Oidc {
    settings: OidcSettings,
    client: HttpClient,
    keys: RwLock<CachedKeys>,
    fetching: Mutex<()>,
}

fn algorithm(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl Oidc {
    fn new(settings: OidcSettings) -> Result<Self, UpstreamError> {
        let url = settings
            .jwks_url
            .clone()
            .or_else(|| settings.issuer.parse().ok())
            .unwrap_or_else(|| http::Uri::from_static("https://invalid"));
        let up =
            UpstreamSettings { url, ca: settings.ca.clone(), timeout: Duration::from_secs(10), ..Default::default() };
        let client = upstream_client(&up)?;
        let keys =
            RwLock::new(CachedKeys { by_kid: HashMap::new(), without_kid: Vec::new(), fetched: None, attempted: None });
        Ok(Self { settings, client, keys, fetching: Mutex::new(()) })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {}", opni_metrics_core::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    /// The issuer's discovery document.
    async fn discovery(&self) -> Result<Value, String> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        self.get_json(&url).await
    }

    /// POSTs a form to the issuer (its token endpoint) and reads the JSON answer.
    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {}", opni_metrics_core::error_chain(&e)))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: HTTP {status}, not JSON: {e}"))?;
        if !status.is_success() {
            let what = doc.get("error").and_then(Value::as_str).unwrap_or("no error code");
            return Err(format!("{url}: HTTP {status}: {what}"));
        }
        Ok(doc)
    }

    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(u) = &self.settings.jwks_url {
            return Ok(u.to_string());
        }
        let discovery = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let doc = self.get_json(&discovery).await?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{discovery}: no jwks_uri"))
    }

    /// Fetches the key set (one fetch at a time; a caller that waited for another's fetch
    /// uses its result).
    async fn refresh(&self, force: bool) -> Result<(), String> {
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        {
            let k = self.keys.read().await;
            if let Some(at) = k.attempted {
                if at >= started {
                    return Ok(());
                }
                let min = if force { self.settings.min_refresh_interval } else { self.settings.refresh_interval };
                if at.elapsed() < min && k.fetched.is_some() {
                    return Ok(());
                }
            }
        }
        self.keys.write().await.attempted = Some(Instant::now());
        let url = self.jwks_url().await?;
        let doc = self.get_json(&url).await?;
        let set: JwkSet = serde_json::from_value(doc).map_err(|e| format!("{url}: not a JWK set: {e}"))?;
        let mut by_kid = HashMap::new();
        let mut without_kid = Vec::new();
        for jwk in &set.keys {
            // symmetric keys are never accepted from a public document
            if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let alg = jwk.common.key_algorithm.and_then(algorithm);
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), (key, alg));
                }
                None => without_kid.push((key, alg)),
            }
        }
        let mut k = self.keys.write().await;
        k.by_kid = by_kid;
        k.without_kid = without_kid;
        k.fetched = Some(Instant::now());
        Ok(())
    }

    async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        let k = self.keys.read().await;
        let fits = |a: &Option<Algorithm>| a.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => k.by_kid.get(kid).filter(|(_, a)| fits(a)).map(|(key, _)| key.clone()).into_iter().collect(),
            None => k
                .without_kid
                .iter()
                .chain(k.by_kid.values())
                .filter(|(_, a)| fits(a))
                .map(|(key, _)| key.clone())
                .collect(),
        }
    }

    async fn verify(&self, token: &str) -> Result<Caller, ReaderError> {
        self.verify_claims(token).await.map(|(caller, _)| caller)
    }

    /// Checks `token` and returns its caller and all its claims.
    async fn verify_claims(&self, token: &str) -> Result<(Caller, serde_json::Map<String, Value>), ReaderError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| ReaderError::Malformed(format!("JWT header: {e}")))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(ReaderError::Token(format!("signature algorithm {:?} is not accepted", header.alg)));
        }
        let stale = {
            let k = self.keys.read().await;
            k.fetched.is_none_or(|at| at.elapsed() >= self.settings.refresh_interval)
        };
        if stale && let Err(e) = self.refresh(false).await {
            // keep using the cached keys if there are any
            if self.keys.read().await.fetched.is_none() {
                return Err(ReaderError::Jwks(e));
            }
            tracing::warn!(error = %e, "refreshing the identity provider's keys failed; using the cached ones");
        }
        let mut keys = self.candidates(header.kid.as_deref(), header.alg).await;
        if keys.is_empty() {
            // an unknown key id: maybe the issuer rotated its keys
            self.refresh(true).await.map_err(ReaderError::Jwks)?;
            keys = self.candidates(header.kid.as_deref(), header.alg).await;
        }
        if keys.is_empty() {
            return Err(ReaderError::Token("signed by a key the issuer does not publish".into()));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.settings.leeway.as_secs();
        let mut last = None;
        for key in &keys {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &v) {
                Ok(data) => return self.caller(&data.claims).map(|c| (c, data.claims)),
                Err(e) => last = Some(e),
            }
        }
        let reason = match last.as_ref().map(jsonwebtoken::errors::Error::kind) {
            Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature) => "expired".to_owned(),
            Some(jsonwebtoken::errors::ErrorKind::ImmatureSignature) => "not valid yet (nbf)".to_owned(),
            Some(jsonwebtoken::errors::ErrorKind::InvalidAudience) => "issued for another audience".to_owned(),
            Some(jsonwebtoken::errors::ErrorKind::InvalidIssuer) => "issued by another issuer".to_owned(),
            Some(jsonwebtoken::errors::ErrorKind::InvalidSignature) => "bad signature".to_owned(),
            Some(jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c)) => format!("claim {c} is missing"),
            Some(k) => format!("{k:?}"),
            None => "no key".to_owned(),
        };
        Err(ReaderError::Token(reason))
    }

    fn caller(&self, claims: &serde_json::Map<String, Value>) -> Result<Caller, ReaderError> {
        let subject =
            claims.get(&self.settings.subject_claim).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(
                || ReaderError::Token(format!("claim {} is missing or not a string", self.settings.subject_claim)),
            )?;
        let groups: BTreeSet<String> = match claims.get(&self.settings.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => BTreeSet::from([s.clone()]),
            _ => BTreeSet::new(),
        };
        Ok(Caller { subject: subject.to_owned(), groups })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn bearer_credentials_are_parsed_before_any_work() {
        let store: Arc<dyn opni_metrics_core::store::Store> =
            Arc::new(opni_metrics_core::store::MemoryStore::default());
        let state = State::new(store, opni_metrics_core::node::UpstreamState::Installed);
        let readers = Readers::new(state, None, Arc::new(crate::auth::AdminToken::new("t"))).unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(matches!(readers.authenticate(&HeaderMap::new()).await, Err(ReaderError::Missing)));
        assert!(matches!(readers.authenticate(&with("Digest abc")).await, Err(ReaderError::Missing)));
        assert!(matches!(readers.authenticate(&with("Basic !!")).await, Err(ReaderError::Malformed(_))));
        // "u:omk_12" as basic credentials: the password is the credential
        assert!(matches!(readers.authenticate(&with("Basic dTpvbWtfMTI=")).await, Err(ReaderError::Malformed(_))));
        assert!(matches!(readers.authenticate(&with("Bearer omk_12")).await, Err(ReaderError::Malformed(_))));
        assert!(matches!(readers.authenticate(&with("Bearer nonsense")).await, Err(ReaderError::Malformed(_))));
        assert!(matches!(readers.authenticate(&with("Bearer a.b.c")).await, Err(ReaderError::NoIssuer)));
        let unknown = format!("Bearer omk_{}_{}", "0".repeat(16), "1".repeat(64));
        assert!(matches!(readers.authenticate(&with(&unknown)).await, Err(ReaderError::UnknownApiKey)));
    }
}
