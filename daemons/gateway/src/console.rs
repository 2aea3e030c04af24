//! The admin console: server-rendered pages for the fleet, under `/console/` on the query
//! listener (TLS as configured there).
//!
//! # Who may do what
//! A visitor signs in with OpenID Connect (authorization code with PKCE, against the issuer
//! readers are checked against, with its audience as the client id), with an API key, or, from a
//! loopback peer only, with the admin token. Readers see the clusters their role bindings grant,
//! and nothing else. Admins (the admin token, or a subject or group listed in
//! [`ConsoleSettings::admin_subjects`]) see every cluster and may act: install and uninstall the
//! capability, cancel an uninstall, add clusters, dry-run Cortex configurations.
//!
//! Every action goes through the same service code as the gRPC management API, so the console
//! can do nothing the CLI could not, and reports the same errors, in words.
//!
//! # Security
//! Sessions live in this replica's memory, behind an `HttpOnly`, `Secure`,
//! `SameSite=Lax` cookie; every POST carries the session's CSRF token; every page is sent with a
//! Content-Security-Policy that allows scripts and styles only from `/console/static/`, no
//! framing, and forms only to this origin. Secrets are never rendered: Cortex configurations come
//! redacted from CortexOps, and a bootstrap token is shown once, to the admin who made it.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{Caller, Subject};
use opni_metrics_transport::http::RemotePeer;

use crate::auth::Authenticator;
use crate::readers::{Principal, Readers};

mod actions;
mod assets;
mod ingest;
mod login;
mod pages;
mod session;

pub(crate) use ingest::{IngestHistory, Sampler};
use session::{SESSION_COOKIE, Session, Sessions, User};

/// The largest form body read.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Console settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleSettings {
    /// Serve the console. Default `true`.
    pub enabled: bool,
    /// Signed-in readers who are admins: `user:NAME` or `group:NAME`.
    pub admin_subjects: Vec<Subject>,
    /// Where the identity provider sends the browser back after login: the console's own
    /// `/console/callback` URL as the browser reaches it. `None`: OpenID Connect login is off
    /// (API keys and, from loopback, the admin token still work).
    pub oidc_redirect_url: Option<String>,
    /// The OAuth client secret, for providers that require one with PKCE.
    pub oidc_client_secret: Option<String>,
    /// Scopes asked for besides `openid`. Default `profile`, `email`, `groups`.
    pub oidc_scopes: Vec<String>,
    /// How long a session lasts. Default 8 h.
    pub session_ttl: Duration,
    /// Sessions (and logins in progress) kept at most; the oldest go first. Default 10,000.
    pub max_sessions: usize,
    /// The agent-facing address printed in join commands (`host:port`); the gRPC listen
    /// address when `None`.
    pub join_address: Option<String>,
    /// How often ingestion statistics are sampled for the charts, from the first sign-in on.
    /// Default 30 s.
    pub sample_interval: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_subjects: Vec::new(),
            oidc_redirect_url: None,
            oidc_client_secret: None,
            oidc_scopes: vec!["profile".into(), "email".into(), "groups".into()],
            session_ttl: Duration::from_secs(8 * 3600),
            max_sessions: 10_000,
            join_address: None,
            sample_interval: Duration::from_secs(30),
        }
    }
}

/// What the console works with: the same services the management API serves.
pub(crate) struct Backend {
    pub(crate) state: crate::state::State,
    pub(crate) capability: crate::capability::CapabilityService,
    pub(crate) cortexops: crate::cortexops::CortexOpsService,
    pub(crate) bootstrap: crate::bootstrap::BootstrapService,
    pub(crate) api: crate::cortex_api::CortexApi,
    pub(crate) ca_path: std::path::PathBuf,
    pub(crate) join_address: String,
}

/// The console as a `tower::Service` over HTTP requests; [`Gateway::serve`](crate::Gateway::serve)
/// mounts it under `/console/` on the query listener.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    settings: ConsoleSettings,
    readers: Readers,
    admin: Arc<dyn Authenticator>,
    sessions: Sessions,
    pub(crate) backend: Backend,
    pub(crate) history: IngestHistory,
    sampler: Sampler,
}

/// A page or fragment's answer.
type Reply = Response<Full<Bytes>>;

impl Console {
    pub(crate) fn new(
        settings: ConsoleSettings,
        readers: Readers,
        admin: Arc<dyn Authenticator>,
        backend: Backend,
        history: IngestHistory,
        sampler: Sampler,
    ) -> Self {
        let sessions = Sessions::new(settings.session_ttl, settings.max_sessions);
        Self { inner: Arc::new(Inner { settings, readers, admin, sessions, backend, history, sampler }) }
    }

    /// Whether `path` is the console's.
    pub fn owns(path: &str) -> bool {
        path == "/console" || path.starts_with("/console/")
    }
}

impl tower::Service<Request<Incoming>> for Console {
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let form = if parts.method == Method::POST {
                match Limited::new(body, MAX_FORM_BYTES).collect().await {
                    Ok(b) => Some(b.to_bytes()),
                    Err(_) => return Ok(secure(text(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))),
                }
            } else {
                None
            };
            Ok(secure(inner.route(&parts, form.as_deref()).await))
        })
    }
}

/// The request as handlers see it.
pub(crate) struct Ctx<'a> {
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) session: Option<(String, Session)>,
}

impl Ctx<'_> {
    pub(crate) fn user(&self) -> Option<&User> {
        self.session.as_ref().map(|(_, s)| &s.user)
    }

    pub(crate) fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |(_, s)| s.csrf.as_str())
    }

    pub(crate) fn query(&self, name: &str) -> Option<String> {
        form_value(self.parts.uri.query().unwrap_or("").as_bytes(), name)
    }
}

/// Field `name` of a URL-encoded form.
pub(crate) fn form_value(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

impl Inner {
    async fn route(self: &Arc<Self>, parts: &http::request::Parts, form: Option<&[u8]>) -> Reply {
        let path = parts.uri.path().trim_end_matches('/');
        let session = session::cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| self.sessions.get(id).map(|s| (id.to_owned(), s)));
        let ctx = Ctx { parts, session };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').skip(1).collect();
        let method = &parts.method;
        // unauthenticated routes
        match (method, segments.as_slice()) {
            (&Method::GET, ["static", "app.css"]) => return asset("text/css; charset=utf-8", assets::CSS),
            (&Method::GET, ["static", "app.js"]) => return asset("text/javascript; charset=utf-8", assets::JS),
            (&Method::GET, ["login"]) => return self.login_page(&ctx, None),
            (&Method::POST, ["login", "key"]) => return self.login_key(&ctx, form.unwrap_or_default()).await,
            (&Method::POST, ["login", "token"]) => return self.login_token(&ctx, form.unwrap_or_default()),
            (&Method::GET, ["login", "oidc"]) => return self.login_oidc().await,
            (&Method::GET, ["callback"]) => return self.callback(&ctx).await,
            _ => {}
        }
        let Some((id, s)) = &ctx.session else {
            return if segments.first() == Some(&"fragment") {
                text(StatusCode::UNAUTHORIZED, "signed out")
            } else {
                redirect("/console/login")
            };
        };
        if *method == Method::POST {
            let given = form.and_then(|f| form_value(f, "csrf")).unwrap_or_default();
            if !session::same(&given, &s.csrf) {
                return self.error_page(
                    &ctx,
                    StatusCode::FORBIDDEN,
                    "This form expired or did not come from this console. Reload the page and try again.",
                );
            }
        }
        let user = s.user.clone();
        let form = form.unwrap_or_default();
        match (method, segments.as_slice()) {
            (&Method::POST, ["logout"]) => {
                self.sessions.remove(id);
                let mut r = redirect("/console/login");
                set_header(&mut r, header::SET_COOKIE, &session::set_cookie(SESSION_COOKIE, "", Duration::ZERO));
                r
            }
            (&Method::GET, [] | [""]) => self.clusters_page(&ctx, &user).await,
            (&Method::GET, ["fragment", "clusters"]) => self.clusters_fragment(&ctx, &user).await,
            (&Method::GET, ["clusters", cluster]) => self.cluster_page(&ctx, &user, cluster).await,
            (&Method::GET, ["fragment", "cluster", cluster]) => self.cluster_fragment(&user, cluster).await,
            (&Method::GET, ["cortex"]) => self.cortex_page(&ctx, &user, None).await,
            (&Method::GET, ["ingestion"]) => self.ingestion_page(&ctx, &user).await,
            (&Method::GET, ["fragment", "ingestion"]) => self.ingestion_fragment(&user).await,
            (&Method::GET, ["rules"]) => self.rules_page(&ctx, &user).await,
            (&Method::POST, rest) if !user.admin => {
                let _ = rest;
                self.error_page(&ctx, StatusCode::FORBIDDEN, "Only admins may change things; you can look around.")
            }
            (&Method::POST, ["clusters", cluster, action]) => self.cluster_action(&ctx, cluster, action, form).await,
            (&Method::POST, ["bootstrap"]) => self.bootstrap(&ctx, &user, form).await,
            (&Method::POST, ["cortex", "dry-run"]) => self.cortex_page(&ctx, &user, Some(form)).await,
            _ => self.error_page(&ctx, StatusCode::NOT_FOUND, "There is no such page."),
        }
    }

    /// The clusters `user` may see.
    pub(crate) async fn visible(&self, user: &User) -> Result<BTreeSet<ClusterId>, String> {
        let principal = match (&user.caller, user.admin) {
            (_, true) | (None, _) => Principal::Admin,
            (Some(c), false) => Principal::Reader(c.clone()),
        };
        self.readers.tenants(&principal).await.map_err(|e| opni_metrics_core::error_chain(&e))
    }

    /// Whether `caller` is an admin by the console's settings.
    fn is_admin(&self, caller: &Caller) -> bool {
        self.settings.admin_subjects.iter().any(|s| match s {
            Subject::User(u) => *u == caller.subject,
            Subject::Group(g) => caller.groups.contains(g),
        })
    }

    /// Starts a session for `user` and sends the browser to the clusters page; the first
    /// sign-in starts the ingestion sampler.
    fn sign_in(&self, user: User) -> Reply {
        self.sampler.start();
        let Some(id) = self.sessions.create(user) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available for a session");
        };
        let mut r = redirect("/console/");
        set_header(&mut r, header::SET_COOKIE, &session::set_cookie(SESSION_COOKIE, &id, self.settings.session_ttl));
        r
    }

    fn peer_is_loopback(parts: &http::request::Parts) -> bool {
        parts.extensions.get::<RemotePeer>().is_some_and(|p| p.0.ip().is_loopback())
    }
}

/// Headers every console answer carries.
fn secure(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn set_header(r: &mut Reply, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(name, v);
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(markup.into_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

pub(crate) fn redirect(to: &str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    set_header(&mut r, header::LOCATION, to);
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

/// Binds an action's outcome message to the session that made it, so a crafted link cannot
/// show words of someone else's choosing.
pub(crate) fn flash_sig(csrf: &str, level: &str, message: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("{csrf}\x1f{level}\x1f{message}").as_bytes());
    opni_metrics_core::digest::hex(&d[..16])
}
