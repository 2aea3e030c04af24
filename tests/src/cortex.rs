//! A Cortex-semantics test upstream: the HTTP APIs of Cortex's distributor, query frontend,
//! ruler, ingesters and status pages, as far as the gateway uses them, with Cortex's
//! multi-tenancy rules — for the endpoints no real server here can serve.
//!
//! What it honours:
//! - every tenant-scoped endpoint requires `X-Scope-OrgID` (401 `no org id` without it) and
//!   records every value of every case variant it received;
//! - push (`/api/v1/push`) takes exactly one tenant and forwards the body unchanged to that
//!   tenant's backend, a real Prometheus remote-write receiver (one per tenant, so tenants are
//!   really isolated); a tenant without a backend gets 500;
//! - the Prometheus query API under `/prometheus/api/v1/` proxies to the tenant's backend; a
//!   `|`-joined list of tenants is a federated query (Cortex's `-tenant-federation.enabled`):
//!   vectors and matrices of every tenant, each series labelled `__tenant_id__`; series and
//!   label listings merged;
//! - the ruler's configuration API (`/api/v1/rules[/{ns}[/{group}]]`: YAML, 202 on writes, 404
//!   for a missing group) and its Prometheus-format listing (`/prometheus/api/v1/rules`), per
//!   tenant, in memory;
//! - `/distributor/all_user_stats` (JSON), rings (`/{distributor,ingester,ruler}/ring`, JSON
//!   with `Accept: application/json`), `/memberlist`, `/config[?mode=diff|defaults]`, `/ready`,
//!   and `/ingester/flush` (counted).
//!
//! What it does not emulate: rule evaluation (listed rules stay `health: unknown`), query
//! sharding, limits, the compactor and store-gateway (their rings answer 404, as when they do
//! not run), and HA tracking.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every value of every case variant of `X-Scope-OrgID`.
    pub org_ids: Vec<String>,
    /// Whether an `Authorization` header reached it.
    pub had_authorization: bool,
}

type Groups = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Default)]
struct Inner {
    backends: BTreeMap<String, String>,
    seen: Vec<Seen>,
    rules: BTreeMap<String, Groups>,
    samples: BTreeMap<String, u64>,
    series: BTreeMap<String, BTreeSet<String>>,
    flushes: u64,
    fail: Option<u16>,
    fail_next: Vec<u16>,
}

/// The running test upstream.
#[derive(Clone)]
pub struct CortexUpstream {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for CortexUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CortexUpstream").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn org_ids(h: &HeaderMap) -> Vec<String> {
    h.iter()
        .filter(|(n, _)| n.as_str().eq_ignore_ascii_case("x-scope-orgid"))
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn yaml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/yaml")], body).into_response()
}

fn prom(v: Value) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response()
}

impl CortexUpstream {
    /// Starts on 127.0.0.1 on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let me = Self { addr, inner: Arc::new(Mutex::new(Inner::default())), client };
        let app = Router::new()
            .route("/api/v1/push", post(push))
            .route("/prometheus/api/v1/rules", get(prom_rules))
            .route("/prometheus/api/v1/{*rest}", any(query))
            .route("/api/v1/rules", get(rules_all))
            .route("/api/v1/rules/{ns}", get(rules_ns).post(rules_load).delete(rules_delete_ns))
            .route("/api/v1/rules/{ns}/{group}", get(rules_get).delete(rules_delete))
            .route("/distributor/all_user_stats", get(user_stats))
            .route("/{component}/ring", get(ring))
            .route("/memberlist", get(memberlist))
            .route("/config", get(config))
            .route("/ready", get(ready))
            .route("/ingester/flush", any(flush))
            .layer(axum::middleware::from_fn_with_state(me.clone(), record))
            .with_state(me.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stores `tenant`'s data in the Prometheus receiver at `base_url`.
    pub fn backend(&self, tenant: &str, base_url: &str) {
        self.lock().backends.insert(tenant.to_owned(), base_url.trim_end_matches('/').to_owned());
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn seen_at(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.uri.starts_with(prefix)).collect()
    }

    /// Answers every request except push with `status` (`None`: normally).
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail = status;
    }

    /// Answers the next requests (except push) with these statuses, one each (0: normally),
    /// then normally.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().fail_next = statuses.to_vec();
    }

    /// Flushes received.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// A tenant's rule groups: namespace → group → YAML.
    pub fn rules(&self, tenant: &str) -> Groups {
        self.lock().rules.get(tenant).cloned().unwrap_or_default()
    }

    fn tenant_of(&self, h: &HeaderMap) -> Result<Vec<String>, (StatusCode, &'static str)> {
        let ids = org_ids(h);
        match ids.as_slice() {
            [] => Err((StatusCode::UNAUTHORIZED, "no org id")),
            [one] => Ok(one.split('|').map(str::to_owned).collect()),
            _ => Err((StatusCode::BAD_REQUEST, "multiple org id headers")),
        }
    }

    async fn proxy(
        &self,
        method: Method,
        url: String,
        ct: Option<String>,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let mut b = http::Request::builder().method(method).uri(url);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body)).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }
}

async fn record(
    State(up): State<CortexUpstream>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let seen = Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        org_ids: org_ids(req.headers()),
        had_authorization: req.headers().contains_key("authorization"),
    };
    let fail = {
        let mut i = up.lock();
        i.seen.push(seen);
        if req.uri().path() != "/api/v1/push" && !i.fail_next.is_empty() {
            Some(i.fail_next.remove(0)).filter(|c| *c != 0)
        } else {
            i.fail
        }
    };
    if let Some(code) = fail
        && req.uri().path() != "/api/v1/push"
    {
        return text(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure");
    }
    next.run(req).await
}

async fn push(State(up): State<CortexUpstream>, headers: HeaderMap, body: Bytes) -> Response {
    let tenants = match up.tenant_of(&headers) {
        Ok(t) => t,
        Err((status, msg)) => return text(status, msg),
    };
    let [tenant] = tenants.as_slice() else {
        return text(StatusCode::BAD_REQUEST, "push takes exactly one tenant");
    };
    if let Some(decoded) = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .ok()
        .and_then(|b| crate::rw::WriteRequest::decode(b.as_slice()).ok())
    {
        let mut i = up.lock();
        let n: usize = decoded.timeseries.iter().map(|t| t.samples.len()).sum();
        *i.samples.entry(tenant.clone()).or_default() += n as u64;
        let set = i.series.entry(tenant.clone()).or_default();
        for t in &decoded.timeseries {
            set.insert(t.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(","));
        }
    }
    let backend = up.lock().backends.get(tenant).cloned();
    let Some(backend) = backend else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("test upstream: no backend for tenant {tenant}"));
    };
    let mut b = http::Request::builder().method(Method::POST).uri(format!("{backend}/api/v1/write"));
    for h in ["content-type", "content-encoding", "x-prometheus-remote-write-version"] {
        if let Some(v) = headers.get(h) {
            b = b.header(h, v);
        }
    }
    let Ok(req) = b.body(Full::new(body)) else { return text(StatusCode::BAD_REQUEST, "bad request") };
    match up.client.request(req).await {
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (status, body).into_response()
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn query(
    State(up): State<CortexUpstream>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenants = match up.tenant_of(&headers) {
        Ok(t) => t,
        Err((status, msg)) => return text(status, msg),
    };
    let q = q.map(|q| format!("?{q}")).unwrap_or_default();
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut answers = Vec::new();
    for t in &tenants {
        let backend = up.lock().backends.get(t).cloned();
        let Some(backend) = backend else { continue };
        match up.proxy(method.clone(), format!("{backend}/api/v1/{rest}{q}"), ct.clone(), body.clone()).await {
            Ok((200, b)) => answers.push((t.clone(), serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))),
            Ok((s, b)) => {
                return (StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY), b).into_response();
            }
            Err(e) => return text(StatusCode::BAD_GATEWAY, e),
        }
    }
    if rest == "status/buildinfo" {
        return prom(
            json!({"status": "success", "data": {"version": "cortex-test-upstream", "revision": "", "branch": "", "goVersion": ""}}),
        );
    }
    if let [(_, only)] = answers.as_slice()
        && tenants.len() == 1
    {
        return prom(only.clone());
    }
    prom(merge(&rest, answers))
}

/// A federated answer: series labelled with their tenant, listings merged.
fn merge(rest: &str, answers: Vec<(String, Value)>) -> Value {
    let data = |v: &Value| v.get("data").cloned().unwrap_or(Value::Null);
    if rest == "query" || rest == "query_range" {
        let mut kind = "vector".to_owned();
        let mut result = Vec::new();
        for (t, a) in &answers {
            let d = data(a);
            if let Some(k) = d.get("resultType").and_then(Value::as_str) {
                kind = k.to_owned();
            }
            for mut s in d.get("result").and_then(Value::as_array).cloned().unwrap_or_default() {
                if let Some(m) = s.get_mut("metric").and_then(Value::as_object_mut) {
                    m.insert("__tenant_id__".into(), Value::String(t.clone()));
                }
                result.push(s);
            }
        }
        return json!({"status": "success", "data": {"resultType": kind, "result": result}});
    }
    let mut merged: Vec<Value> = Vec::new();
    let mut meta = serde_json::Map::new();
    for (_, a) in &answers {
        match data(a) {
            Value::Array(items) => {
                for i in items {
                    if !merged.contains(&i) {
                        merged.push(i);
                    }
                }
            }
            Value::Object(o) => meta.extend(o),
            _ => {}
        }
    }
    if rest == "metadata" {
        return json!({"status": "success", "data": meta});
    }
    json!({"status": "success", "data": merged})
}

fn group_yaml(name: &str, body: &Value) -> String {
    let mut g = body.clone();
    if let Some(o) = g.as_object_mut() {
        o.insert("name".into(), Value::String(name.to_owned()));
    }
    serde_saphyr::to_string(&g).unwrap_or_default()
}

fn groups_yaml(groups: &Groups, only: Option<&str>) -> String {
    let mut out = BTreeMap::<String, Vec<Value>>::new();
    for (ns, gs) in groups {
        if only.is_some_and(|o| o != ns) {
            continue;
        }
        for y in gs.values() {
            out.entry(ns.clone()).or_default().push(serde_saphyr::from_str(y).unwrap_or(Value::Null));
        }
    }
    serde_saphyr::to_string(&out).unwrap_or_default()
}

async fn rules_all(State(up): State<CortexUpstream>, headers: HeaderMap) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let g = up.lock().rules.get(&t).cloned().unwrap_or_default();
    if g.is_empty() {
        return text(StatusCode::NOT_FOUND, "no rule groups found");
    }
    yaml(StatusCode::OK, groups_yaml(&g, None))
}

async fn rules_ns(State(up): State<CortexUpstream>, Path(ns): Path<String>, headers: HeaderMap) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let g = up.lock().rules.get(&t).cloned().unwrap_or_default();
    if !g.contains_key(&ns) {
        return text(StatusCode::NOT_FOUND, "no rule groups found");
    }
    yaml(StatusCode::OK, groups_yaml(&g, Some(&ns)))
}

async fn rules_get(
    State(up): State<CortexUpstream>,
    Path((ns, group)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let y = up.lock().rules.get(&t).and_then(|g| g.get(&ns)).and_then(|g| g.get(&group)).cloned();
    match y {
        Some(y) => yaml(StatusCode::OK, y),
        None => text(StatusCode::NOT_FOUND, "group does not exist"),
    }
}

async fn rules_load(
    State(up): State<CortexUpstream>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let Ok(text_body) = std::str::from_utf8(&body) else { return text(StatusCode::BAD_REQUEST, "not UTF-8") };
    let v: Value = match serde_saphyr::from_str(text_body) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("unable to decode rule group: {e}")),
    };
    let Some(name) = v.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return text(StatusCode::BAD_REQUEST, "invalid rules config: rule group name must not be empty");
    };
    let y = group_yaml(&name, &v);
    up.lock().rules.entry(t).or_default().entry(ns).or_default().insert(name, y);
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"success","data":null,"errorType":"","error":""}"#,
    )
        .into_response()
}

async fn rules_delete(
    State(up): State<CortexUpstream>,
    Path((ns, group)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let mut i = up.lock();
    let removed = i.rules.get_mut(&t).and_then(|g| g.get_mut(&ns)).and_then(|g| g.remove(&group));
    if let Some(g) = i.rules.get_mut(&t) {
        g.retain(|_, v| !v.is_empty());
    }
    match removed {
        Some(_) => (StatusCode::ACCEPTED, r#"{"status":"success"}"#).into_response(),
        None => text(StatusCode::NOT_FOUND, "group does not exist"),
    }
}

async fn rules_delete_ns(State(up): State<CortexUpstream>, Path(ns): Path<String>, headers: HeaderMap) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    up.lock().rules.entry(t).or_default().remove(&ns);
    (StatusCode::ACCEPTED, r#"{"status":"success"}"#).into_response()
}

async fn prom_rules(State(up): State<CortexUpstream>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let t = match up.tenant_of(&headers) {
        Ok(t) => t.join("|"),
        Err((status, msg)) => return text(status, msg),
    };
    let want = q.as_deref().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("type=")).map(str::to_owned));
    let g = up.lock().rules.get(&t).cloned().unwrap_or_default();
    let mut groups = Vec::new();
    for (ns, gs) in &g {
        for y in gs.values() {
            let v: Value = serde_saphyr::from_str(y).unwrap_or(Value::Null);
            let rules: Vec<Value> = v
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let (kind, name) = match (r.get("alert"), r.get("record")) {
                        (Some(a), _) => ("alerting", a.as_str().unwrap_or_default()),
                        (_, Some(rec)) => ("recording", rec.as_str().unwrap_or_default()),
                        _ => return None,
                    };
                    let short = if kind == "alerting" { "alert" } else { "record" };
                    if want.as_deref().is_some_and(|w| w != short) {
                        return None;
                    }
                    let mut o = json!({"name": name, "query": r.get("expr").cloned().unwrap_or(Value::Null),
                        "type": kind, "health": "unknown", "labels": r.get("labels").cloned().unwrap_or(json!({}))});
                    if kind == "alerting" {
                        o["state"] = json!("inactive");
                        o["alerts"] = json!([]);
                    }
                    Some(o)
                })
                .collect();
            if rules.is_empty() && want.is_some() {
                continue;
            }
            groups.push(json!({"name": v.get("name").cloned().unwrap_or(Value::Null), "file": ns, "rules": rules,
                "interval": v.get("interval").cloned().unwrap_or(json!(60))}));
        }
    }
    prom(json!({"status": "success", "data": {"groups": groups}}))
}

async fn user_stats(State(up): State<CortexUpstream>) -> Response {
    let i = up.lock();
    let stats: Vec<Value> = i
        .samples
        .iter()
        .map(|(t, n)| {
            let series = i.series.get(t).map_or(0, BTreeSet::len);
            json!({"userID": t, "ingestionRate": *n as f64, "numSeries": series, "APIIngestionRate": *n as f64, "RuleIngestionRate": 0.0})
        })
        .collect();
    prom(Value::Array(stats))
}

async fn ring(State(up): State<CortexUpstream>, Path(component): Path<String>) -> Response {
    if !["distributor", "ingester", "ruler"].contains(&component.as_str()) {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let shard = json!({"id": format!("{component}-1"), "state": "ACTIVE", "address": format!("127.0.0.1:{}", up.port() + 1),
        "timestamp": "2026-01-01T00:00:00Z", "zone": "", "tokens": []});
    prom(json!({"shards": [shard], "now": "2026-01-01T00:00:00Z"}))
}

async fn memberlist() -> Response {
    prom(json!({"members": [{"name": "cortex-1", "address": "127.0.0.1:7946", "state": 0}]}))
}

async fn config(RawQuery(q): RawQuery) -> Response {
    let body = match q.as_deref() {
        Some("mode=diff") => "target: all\n",
        Some("mode=defaults") => "target: all\nauth_enabled: true\nserver:\n  http_listen_port: 80\n",
        _ => "target: all\nauth_enabled: true\nserver:\n  http_listen_port: 9009\n",
    };
    yaml(StatusCode::OK, body.to_owned())
}

async fn ready() -> Response {
    text(StatusCode::OK, "ready")
}

async fn flush(State(up): State<CortexUpstream>) -> Response {
    up.lock().flushes += 1;
    StatusCode::NO_CONTENT.into_response()
}
