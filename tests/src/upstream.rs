//! A scriptable remote-write upstream: answers with a chosen status, hangs, or proxies to a
//! real receiver; records every push (a POST: headers, tenant, decoded sample count). Other GETs
//! answer 404 and are not recorded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with this status, headers and body.
    Answer {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: String,
    },
    /// Never answer.
    Hang,
    /// Forward to this URL (a real receiver) and relay its answer.
    Proxy(String),
}

impl Behaviour {
    /// A plain answer.
    pub fn status(status: u16) -> Self {
        Self::Answer { status, headers: Vec::new(), body: String::new() }
    }
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its headers.
    pub headers: HeaderMap,
    /// Every value of every case variant of `X-Scope-OrgID`.
    pub tenants: Vec<String>,
    /// Samples in the body (0 if it did not decode).
    pub samples: usize,
    /// Body size.
    pub bytes: usize,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    requests: Vec<Recorded>,
    /// Tenants whose deletion was requested through Cortex's purger API.
    purged: Vec<String>,
    /// Status polls answered "not yet" before "deleted".
    purge_polls_pending: u32,
    /// Whether `GET /ready` answers 200 (else 503).
    ready: bool,
    /// Behaviours for single tenants, over `behaviour`.
    per_tenant: std::collections::HashMap<String, Behaviour>,
}

/// A running scriptable upstream; stops on drop.
#[derive(Debug)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: watch::Sender<()>,
}

impl Upstream {
    /// Starts on 127.0.0.1 with `behaviour`.
    ///
    /// # Panics
    /// If it cannot bind.
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::serve(behaviour, None).await
    }

    /// Starts on 127.0.0.1 serving HTTPS with `tls` (which may require client certificates).
    ///
    /// # Panics
    /// If it cannot bind.
    pub async fn start_tls(behaviour: Behaviour, tls: rustls::ServerConfig) -> Self {
        Self::serve(behaviour, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
    }

    async fn serve(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            behaviour,
            requests: Vec::new(),
            purged: Vec::new(),
            purge_polls_pending: 1,
            ready: true,
            per_tenant: std::collections::HashMap::new(),
        }));
        let (stop, mut stopped) = watch::channel(());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let st = Arc::clone(&st);
                let tls = tls.clone();
                let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&st), req));
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(acceptor) => {
                            // a failed handshake (no or a wrong client certificate) serves nothing
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state, _stop: stop }
    }

    /// What the upstream does with requests of `tenant` (over the general behaviour).
    pub fn set_for(&self, tenant: &str, b: Behaviour) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).per_tenant.insert(tenant.to_owned(), b);
    }

    /// The push URL.
    pub fn url(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    /// Changes what it does from now on.
    pub fn set(&self, b: Behaviour) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).behaviour = b;
    }

    /// Makes `GET /ready` answer 200 (`true`) or 503, as Cortex's readiness endpoint does.
    pub fn set_ready(&self, ready: bool) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).ready = ready;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).requests.clone()
    }

    /// Tenants whose data deletion was requested (`POST /purger/delete_tenant`).
    pub fn purged(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).purged.clone()
    }

    /// Samples received in requests answered 2xx.
    pub fn samples_accepted(&self) -> usize {
        self.requests().iter().filter(|r| (200..300).contains(&r.status)).map(|r| r.samples).sum()
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path().starts_with("/purger/") {
        return Ok(purger(&state, &req));
    }
    if req.uri().path() == "/ready" {
        let ready = state.lock().unwrap_or_else(PoisonError::into_inner).ready;
        let mut r = Response::new(Full::new(Bytes::from_static(if ready { b"ready" } else { b"not ready" })));
        if !ready {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        return Ok(r);
    }
    if req.method() != http::Method::POST {
        // a push is a POST; other reads (a console's statistics, say) find nothing here, as on
        // a distributor without those APIs, and are not pushes to record
        let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    }
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let tenants: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.as_str().eq_ignore_ascii_case("x-scope-orgid"))
        .map(|(_, v)| v.to_str().unwrap_or("<non-ascii>").to_owned())
        .collect();
    let samples = crate::rw::decode(&body).map(|r| r.timeseries.iter().map(|t| t.samples.len()).sum()).unwrap_or(0);
    let behaviour = {
        let st = state.lock().unwrap_or_else(PoisonError::into_inner);
        let tenant: Option<&String> = tenants.first();
        tenant.and_then(|t| st.per_tenant.get(t)).unwrap_or(&st.behaviour).clone()
    };
    let (status, resp) = match behaviour {
        Behaviour::Answer { status, headers, body } => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(&v)) {
                    r.headers_mut().insert(k, v);
                }
            }
            (status, r)
        }
        Behaviour::Hang => {
            futures_pending().await;
            unreachable!()
        }
        Behaviour::Proxy(url) => {
            let mut h: Vec<(&str, &str)> = Vec::new();
            for name in ["content-type", "content-encoding", "x-prometheus-remote-write-version"] {
                if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    h.push((name, v));
                }
            }
            match crate::http::send(http::Method::POST, &url, &h, body.clone()).await {
                Ok(r) => {
                    let mut resp = Response::new(Full::new(r.body));
                    *resp.status_mut() = r.status;
                    (r.status.as_u16(), resp)
                }
                Err(e) => {
                    let mut resp = Response::new(Full::new(Bytes::from(e)));
                    *resp.status_mut() = StatusCode::BAD_GATEWAY;
                    (502, resp)
                }
            }
        }
    };
    state.lock().unwrap_or_else(PoisonError::into_inner).requests.push(Recorded {
        headers,
        tenants,
        samples,
        bytes: body.len(),
        status,
    });
    Ok(resp)
}

async fn futures_pending() {
    std::future::pending::<()>().await;
}

/// Cortex's tenant deletion API: `POST /purger/delete_tenant`, then
/// `GET /purger/delete_tenant_status` answers `blocks_deleted: false` once, then `true`.
fn purger(state: &Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let tenant = req.headers().get("x-scope-orgid").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let body = match (req.method().as_str(), req.uri().path()) {
        ("POST", "/purger/delete_tenant") if !tenant.is_empty() => {
            st.purged.push(tenant);
            st.purge_polls_pending = 1;
            String::new()
        }
        ("GET", "/purger/delete_tenant_status") if st.purged.contains(&tenant) => {
            let done = st.purge_polls_pending == 0;
            st.purge_polls_pending = st.purge_polls_pending.saturating_sub(1);
            format!("{{\"blocks_deleted\":{done}}}")
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"bad purger request")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    Response::new(Full::new(Bytes::from(body)))
}
