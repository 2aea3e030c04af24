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
        let me = Self { addr, inner: Arc::new(Mutex::new(Inner { published: vec![Key::generate("k1")], fetches: 0 })) };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
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
    json_response(json!({"issuer": i.url(), "jwks_uri": format!("{}/jwks", i.url())}).to_string())
}

async fn jwks(State(i): State<Issuer>) -> axum::response::Response {
    let set = {
        let mut g = i.lock();
        g.fetches += 1;
        JwkSet { keys: g.published.iter().map(Key::jwk).collect() }
    };
    json_response(serde_json::to_string(&set).unwrap_or_default())
}
