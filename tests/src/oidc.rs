//! A test OpenID Connect issuer: discovery document and JWKS over HTTP, ES256 keys made with
//! rcgen, tokens signed with jsonwebtoken, and key rotation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A signing key and its id.
#[derive(Clone)]
pub struct Key {
    /// The key id (`kid`).
    pub kid: String,
    encoding: EncodingKey,
}

impl Key {
    /// A fresh ES256 key.
    pub fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        Self { kid: kid.to_owned(), encoding: EncodingKey::from_ec_der(&pair.serialize_der()) }
    }

    fn jwk(&self) -> Jwk {
        let mut j = Jwk::from_encoding_key(&self.encoding, Algorithm::ES256).expect("jwk");
        j.common.key_id = Some(self.kid.clone());
        j
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).expect("sign")
    }
}

struct Inner {
    published: Vec<Key>,
    fetches: u64,
    /// Who `/authorize` signs in (a provider where that user is already signed in).
    user: Option<(String, Vec<String>)>,
    /// Codes issued and not yet redeemed.
    codes: std::collections::HashMap<String, Grant>,
    /// Token requests refused, with why.
    refused: Vec<String>,
}

/// An authorization code's grant.
#[derive(Clone)]
struct Grant {
    challenge: String,
    redirect_uri: String,
    nonce: Option<String>,
    sub: String,
    groups: Vec<String>,
}

/// The running issuer.
#[derive(Clone)]
pub struct Issuer {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The audience tokens are issued for.
pub const AUDIENCE: &str = "grafana";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Issuer {
    /// Starts on 127.0.0.1 with one published key, `k1`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Inner {
            published: vec![Key::generate("k1")],
            fetches: 0,
            user: None,
            codes: std::collections::HashMap::new(),
            refused: Vec::new(),
        };
        let me = Self { addr, inner: Arc::new(Mutex::new(inner)) };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", axum::routing::post(token))
            .with_state(me.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issuer URL (`iss`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current signing key.
    pub fn key(&self) -> Key {
        self.lock().published.last().cloned().expect("a key")
    }

    /// Publishes a new key `kid` and withdraws the old ones.
    pub fn rotate(&self, kid: &str) -> Key {
        let k = Key::generate(kid);
        self.lock().published = vec![k.clone()];
        k
    }

    /// Makes `/authorize` sign in `sub` in `groups` (the authorization-code flow with PKCE:
    /// S256 only, codes used once, bound to the redirect URI).
    pub fn sign_in_as(&self, sub: &str, groups: &[&str]) {
        self.lock().user = Some((sub.to_owned(), groups.iter().map(|g| (*g).to_owned()).collect()));
    }

    /// Token requests refused so far, with why.
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    /// How often the JWKS was fetched.
    pub fn fetches(&self) -> u64 {
        self.lock().fetches
    }

    /// Standard claims for `sub` in `groups`, valid for an hour.
    pub fn claims(&self, sub: &str, groups: &[&str]) -> Value {
        let t = now();
        json!({"iss": self.url(), "aud": AUDIENCE, "sub": sub, "groups": groups, "iat": t, "nbf": t - 5, "exp": t + 3600})
    }

    /// A valid token for `sub` in `groups`, signed with the current key.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.key().sign(&self.claims(sub, groups))
    }
}

/// Seconds since the epoch.
pub fn epoch_now() -> i64 {
    now()
}

fn json_response(v: String) -> axum::response::Response {
    axum::response::IntoResponse::into_response(([("content-type", "application/json")], v))
}

async fn discovery(State(i): State<Issuer>) -> axum::response::Response {
    json_response(
        json!({
            "issuer": i.url(),
            "jwks_uri": format!("{}/jwks", i.url()),
            "authorization_endpoint": format!("{}/authorize", i.url()),
            "token_endpoint": format!("{}/token", i.url()),
            "code_challenge_methods_supported": ["S256"],
        })
        .to_string(),
    )
}

fn error(status: u16, code: &str) -> axum::response::Response {
    let mut r = json_response(json!({ "error": code }).to_string());
    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    r
}

async fn authorize(
    State(i): State<Issuer>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("client_id") != AUDIENCE || get("code_challenge_method") != "S256" {
        return error(400, "invalid_request");
    }
    let challenge = get("code_challenge");
    let redirect_uri = get("redirect_uri");
    if challenge.len() < 43 || redirect_uri.is_empty() || !get("scope").split(' ').any(|s| s == "openid") {
        return error(400, "invalid_request");
    }
    let Some((sub, groups)) = i.lock().user.clone() else { return error(401, "login_required") };
    let code = format!("code-{}-{}", now(), i.lock().codes.len());
    let nonce = q.get("nonce").cloned();
    i.lock().codes.insert(code.clone(), Grant { challenge, redirect_uri: redirect_uri.clone(), nonce, sub, groups });
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .finish();
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = axum::http::StatusCode::FOUND;
    if let Ok(v) = format!("{redirect_uri}{sep}{query}").parse() {
        r.headers_mut().insert("location", v);
    }
    r
}

async fn token(State(i): State<Issuer>, body: axum::body::Bytes) -> axum::response::Response {
    use base64::Engine as _;
    use sha2::Digest as _;
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let refuse = |why: &str| {
        i.lock().refused.push(why.to_owned());
        error(400, "invalid_grant")
    };
    if get("grant_type") != "authorization_code" || get("client_id") != AUDIENCE {
        return refuse("grant type or client");
    }
    let Some(grant) = i.lock().codes.remove(&get("code")) else { return refuse("unknown or used code") };
    if grant.redirect_uri != get("redirect_uri") {
        return refuse("redirect_uri differs");
    }
    let computed =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if computed != grant.challenge {
        return refuse("code_verifier does not match the challenge");
    }
    let groups: Vec<&str> = grant.groups.iter().map(String::as_str).collect();
    let mut claims = i.claims(&grant.sub, &groups);
    if let Some(n) = grant.nonce {
        claims["nonce"] = Value::String(n);
    }
    let id_token = i.key().sign(&claims);
    json_response(
        json!({"access_token": id_token, "id_token": id_token, "token_type": "Bearer", "expires_in": 3600}).to_string(),
    )
}

async fn jwks(State(i): State<Issuer>) -> axum::response::Response {
    let set = {
        let mut g = i.lock();
        g.fetches += 1;
        JwkSet { keys: g.published.iter().map(Key::jwk).collect() }
    };
    json_response(serde_json::to_string(&set).unwrap_or_default())
}
