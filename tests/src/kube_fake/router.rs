//! The HTTP front: path parsing, discovery, dispatch to the store and to watches.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};

use super::selectors::{FieldSelector, LabelSelector};
use super::ssa::Scope;
use super::store::{ApiError, Change, DeleteOptions, ListOptions, PatchKind, Store};
use super::watch::{self, WatchFilter, WatchParams, partial_metadata};
use super::{FakeApiServer, FakeState, Identity, RequestRecord, ResourceType};

/// The request header that names the caller when the request does not come from
/// [`FakeApiServer::client`] (for example over [`FakeApiServer::serve`]).
pub const IDENTITY_HEADER_NAME: &str = "x-fake-identity";

/// The real server's request body limit.
const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// A request for a served resource.
#[derive(Debug, Clone)]
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    scope: Scope,
}

/// Where a path leads.
#[derive(Debug)]
enum Route {
    /// A discovery document, `/version`, or a health check.
    Document(Value),
    /// A resource.
    Resource(Target),
    /// Nothing served here.
    NotFound,
}

/// Legacy discovery and `/version`.
fn document(store: &Store, segments: &[&str]) -> Option<Value> {
    let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    let resources = |group: &str, version: &str| -> Option<Value> {
        let served: Vec<&ResourceType> =
            store.types.values().filter(|rt| rt.group == group && rt.version == version).collect();
        if served.is_empty() {
            return None;
        }
        let mut list = Vec::new();
        for rt in served {
            list.push(json!({
                "name": rt.plural,
                "singularName": rt.kind.to_lowercase(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }));
            if rt.status_subresource {
                list.push(json!({
                    "name": format!("{}/status", rt.plural),
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}))
    };
    let group_doc = |group: &str| -> Option<Value> {
        let mut versions: Vec<&str> =
            store.types.values().filter(|rt| rt.group == group).map(|rt| rt.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        let preferred = *versions.last()?;
        let entry = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
        Some(json!({
            "name": group,
            "versions": versions.iter().map(|v| entry(v)).collect::<Vec<_>>(),
            "preferredVersion": entry(preferred),
        }))
    };
    match segments {
        ["version"] => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64",
        })),
        ["healthz" | "readyz" | "livez"] => Some(Value::String("ok".to_owned())),
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}],
        })),
        ["api", version] => resources("", version),
        ["apis"] => {
            let mut groups: Vec<&str> =
                store.types.values().map(|rt| rt.group.as_str()).filter(|g| !g.is_empty()).collect();
            groups.sort_unstable();
            groups.dedup();
            let groups: Vec<Value> = groups.into_iter().filter_map(group_doc).collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", group] => group_doc(group).map(|mut g| {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }),
        ["apis", group, version] => resources(group, version),
        _ => None,
    }
}

fn route(store: &Store, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if let Some(doc) = document(store, &segments) {
        return Route::Document(doc);
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::NotFound,
    };
    // `namespaces/{ns}/{plural}...` unless it is `namespaces/{name}/status` of the namespaces type.
    let (namespace, rest) = match rest {
        ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some(*sub)),
        _ => return Route::NotFound,
    };
    let Some(rt) = store.type_of(group, plural).filter(|rt| rt.version == version).cloned() else {
        return Route::NotFound;
    };
    let scope = match sub {
        None => Scope::Main,
        Some("status") if rt.status_subresource => Scope::Status,
        Some(_) => return Route::NotFound,
    };
    match (rt.namespaced, &namespace, &name) {
        // A cluster-scoped type under a namespace, or one namespaced object without its namespace.
        (false, Some(_), _) | (true, None, Some(_)) => Route::NotFound,
        _ => Route::Resource(Target { rt, namespace, name, scope }),
    }
}

fn json_response(status: u16, value: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(http::header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.code, &error.status())
}

/// The caller: the in-process client's tag, else the identity header, else "http".
fn identity(request_identity: Option<&Identity>, headers: &HeaderMap) -> String {
    request_identity
        .map(|i| i.0.clone())
        .unwrap_or_else(|| headers.get(IDENTITY_HEADER_NAME).and_then(|v| v.to_str().ok()).unwrap_or("http").to_owned())
}

/// The field manager of a non-apply write: `fieldManager`, else the User-Agent up to the first `/`.
fn update_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// Parsed query parameters.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &http::Uri) -> Result<Self, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn selectors(query: &Query, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), &rt.group, &rt.plural, &[])
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
}

/// An apply body: JSON, or YAML.
fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        serde_saphyr::from_slice::<Value>(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    })
}

fn delete_options(query: &Query, body: &[u8]) -> Result<(DeleteOptions, bool), ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(body)? };
    let policy = body.get("propagationPolicy").and_then(Value::as_str).or_else(|| query.get("propagationPolicy"));
    let orphan = policy == Some("Orphan")
        || body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || query.get("orphanDependents") == Some("true");
    let dry_run = body.get("dryRun").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let pre = |key: &str| body.pointer(&format!("/preconditions/{key}")).and_then(Value::as_str).map(str::to_owned);
    Ok((DeleteOptions { precondition_rv: pre("resourceVersion"), precondition_uid: pre("uid"), orphan }, dry_run))
}

/// Everything about one request the dispatcher needs.
struct Call<'a> {
    method: &'a Method,
    query: &'a Query,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// Runs one store operation; with `dryRun` on a copy of the store.
fn run_store_op<T>(
    state: &mut FakeState,
    dry_run: bool,
    op: impl FnOnce(&mut Store, &mut Vec<Change>) -> Result<T, ApiError>,
) -> (Result<T, ApiError>, Vec<Change>) {
    let mut changes = Vec::new();
    let result = if dry_run {
        let mut scratch = state.store.clone();
        let result = op(&mut scratch, &mut changes);
        changes.clear();
        result
    } else {
        op(&mut state.store, &mut changes)
    };
    (result, changes)
}

/// A non-watch resource request; returns (status, body) and the changes to publish.
fn dispatch(state: &mut FakeState, target: &Target, call: &Call<'_>) -> (Result<(u16, Value), ApiError>, Vec<Change>) {
    let Target { rt, namespace, name, scope } = target;
    let ns = namespace.as_deref();
    let query = call.query;
    let dry_run = query.get("dryRun").is_some_and(|v| !v.is_empty());
    let partial = call
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let manager = update_manager(query, call.headers);
    let ok = |v: Value| (200, v);
    match (call.method, name) {
        (&Method::GET, Some(name)) => {
            let result = state
                .store
                .get(rt, ns, name)
                .map(|s| ok(if partial { partial_metadata(&s.object) } else { s.object.clone() }))
                .ok_or_else(|| ApiError::not_found(rt, name));
            (result, Vec::new())
        }
        (&Method::GET, None) => {
            let result = selectors(query, rt).and_then(|(labels, fields)| {
                let limit = query.get("limit").and_then(|l| l.parse().ok());
                let options =
                    ListOptions { labels, fields, limit, continue_token: query.get("continue").map(str::to_owned) };
                let mut list = state.store.list(rt, ns, &options)?;
                if partial && let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                    for item in items.iter_mut() {
                        *item = partial_metadata(item);
                    }
                    list["kind"] = json!("PartialObjectMetadataList");
                    list["apiVersion"] = json!("meta.k8s.io/v1");
                }
                Ok(ok(list))
            });
            (result, Vec::new())
        }
        (&Method::POST, None) if *scope == Scope::Main && (ns.is_some() || !rt.namespaced) => {
            if query.get("force").is_some() {
                return (
                    Err(ApiError::for_code(422, "force: Forbidden: may not be specified for non-apply patch")),
                    vec![],
                );
            }
            let body = match parse_body(call.body) {
                Ok(b) => b,
                Err(e) => return (Err(e), Vec::new()),
            };
            let (result, changes) =
                run_store_op(state, dry_run, |store, changes| store.create(rt, ns, body, &manager, changes));
            (result.map(|v| (201, v)), changes)
        }
        (&Method::PUT, Some(name)) => {
            let body = match parse_body(call.body) {
                Ok(b) => b,
                Err(e) => return (Err(e), Vec::new()),
            };
            let (result, changes) = run_store_op(state, dry_run, |store, changes| {
                store.replace(rt, ns, name, *scope, body, &manager, changes)
            });
            (result.map(ok), changes)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = call
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned())
                .unwrap_or_default();
            let force = query.get("force");
            if content_type == "application/apply-patch+yaml" {
                let Some(field_manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
                    return (
                        Err(ApiError::for_code(
                            422,
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        )),
                        Vec::new(),
                    );
                };
                let force = match force {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return (Err(ApiError::bad_request(format!("invalid force value {other:?}"))), Vec::new());
                    }
                };
                let body = match parse_apply_body(call.body) {
                    Ok(b) => b,
                    Err(e) => return (Err(e), Vec::new()),
                };
                let (result, changes) = run_store_op(state, dry_run, |store, changes| {
                    store.apply(rt, ns, name, *scope, body, field_manager, force, changes)
                });
                return (result.map(|(v, created)| (if created { 201 } else { 200 }, v)), changes);
            }
            let kind = match content_type.as_str() {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                other => {
                    return (
                        Err(ApiError::for_code(
                            415,
                            format!(
                                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                            ),
                        )),
                        Vec::new(),
                    );
                }
            };
            if force.is_some() {
                return (
                    Err(ApiError::for_code(422, "force: Forbidden: may not be specified for non-apply patch")),
                    vec![],
                );
            }
            let (result, changes) = run_store_op(state, dry_run, |store, changes| {
                store.patch(rt, ns, name, *scope, kind, call.body, &manager, changes)
            });
            (result.map(ok), changes)
        }
        (&Method::DELETE, Some(name)) if *scope == Scope::Main => {
            let (options, body_dry_run) = match delete_options(query, call.body) {
                Ok(o) => o,
                Err(e) => return (Err(e), Vec::new()),
            };
            let (result, changes) = run_store_op(state, dry_run || body_dry_run, |store, changes| {
                store.delete(rt, ns, name, &options, changes)
            });
            (result.map(ok), changes)
        }
        (&Method::DELETE, None) if *scope == Scope::Main && (ns.is_some() || !rt.namespaced) => {
            let parsed = delete_options(query, call.body).and_then(|d| Ok((d, selectors(query, rt)?)));
            let ((options, body_dry_run), (labels, fields)) = match parsed {
                Ok(p) => p,
                Err(e) => return (Err(e), Vec::new()),
            };
            let list = ListOptions { labels, fields, limit: None, continue_token: None };
            let (result, changes) = run_store_op(state, dry_run || body_dry_run, |store, changes| {
                store.delete_collection(rt, ns, &list, &options, changes)
            });
            (result.map(ok), changes)
        }
        _ => (Err(ApiError::for_code(405, "the server does not allow this method on the requested resource")), vec![]),
    }
}

/// The fallback handler every request goes through.
pub(crate) async fn handle(State(server): State<FakeApiServer>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let who = identity(parts.extensions.get::<Identity>(), &parts.headers);
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let method = parts.method.clone();
    let record = |status: u16| RequestRecord {
        identity: who.clone(),
        method: method.clone(),
        path: path.clone(),
        query: raw_query.clone(),
        status,
    };
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            let error = ApiError::for_code(413, "the request body is too large");
            server.record(record(413));
            return error_response(&error);
        }
    };
    let query = match Query::parse(&parts.uri) {
        Ok(q) => q,
        Err(e) => {
            server.record(record(e.code));
            return error_response(&e);
        }
    };

    match answer(&server, &parts, &method, &query, &body, record) {
        Some(response) => response,
        // a hanging fault: no answer until the client gives up
        None => std::future::pending().await,
    }
}

/// Answers a parsed request under the state lock; `None` for a request that must hang.
fn answer(
    server: &FakeApiServer,
    parts: &http::request::Parts,
    method: &Method,
    query: &Query,
    body: &[u8],
    record: impl Fn(u16) -> RequestRecord,
) -> Option<Response> {
    let who = record(0).identity;
    let path = parts.uri.path();
    let mut state = server.lock();
    let route = route(&state.store, path);
    let (plural, name) = match &route {
        Route::Resource(t) => (Some(t.rt.plural.as_str()), t.name.as_deref()),
        _ => (None, None),
    };
    if let Some(code) = state.take_fault(&who, method, plural, name) {
        state.requests.push(record(code));
        drop(state);
        server.notify();
        if code == 0 {
            return None;
        }
        return Some(error_response(&ApiError::for_code(code, format!("injected fault: {code}"))));
    }
    let (status, response) = match route {
        Route::NotFound => {
            let e = ApiError::no_resource();
            (e.code, error_response(&e))
        }
        Route::Document(doc) if method == Method::GET => (200, json_response(200, &doc)),
        Route::Document(_) => {
            let e = ApiError::for_code(405, "the server does not allow this method on the requested resource");
            (e.code, error_response(&e))
        }
        Route::Resource(target) if method == Method::GET && target.name.is_none() && query.flag("watch") => {
            match start_watch(server, &state, &target, query, &parts.headers) {
                Ok(response) => (200, response),
                Err(e) => (e.code, error_response(&e)),
            }
        }
        Route::Resource(target) => {
            let call = Call { method, query, headers: &parts.headers, body };
            let (result, changes) = dispatch(&mut state, &target, &call);
            server.publish(&mut state, changes);
            match result {
                Ok((status, value)) => (status, json_response(status, &value)),
                Err(e) => (e.code, error_response(&e)),
            }
        }
    };
    state.requests.push(record(status));
    drop(state);
    server.notify();
    Some(response)
}

fn start_watch(
    server: &FakeApiServer,
    state: &FakeState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(query, &target.rt)?;
    let partial = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let filter = WatchFilter {
        rt: target.rt.clone(),
        namespace: target.namespace.clone(),
        labels,
        fields,
        partial_metadata: partial,
    };
    let params = WatchParams {
        resource_version: query.get("resourceVersion").map(str::to_owned),
        timeout: query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs),
        bookmarks: query.flag("allowWatchBookmarks"),
        send_initial_events: query.flag("sendInitialEvents"),
    };
    let prepared = watch::prepare(state, server.subscribe(), filter, params)?;
    Ok(prepared.into_response())
}
