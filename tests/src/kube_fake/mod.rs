//! An in-process fake Kubernetes API server for controller tests.
//!
//! No real API server can run on the build machines (no kube-apiserver, k3s, kwok or envtest), so
//! the controllers' tests talk to this one: the **real** `kube` client, kube-runtime watchers,
//! reflectors and `Controller`s, through [`FakeApiServer::client`] (in process, no sockets) or over
//! plain HTTP through [`FakeApiServer::serve`] and a generated kubeconfig (for the daemon binaries).
//! It is an axum `Router` over a JSON object store.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use opni_metrics_tests::kube_fake::FakeApiServer;
//!
//! let server = FakeApiServer::new();
//! let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("a".into());
//! api.create(&PostParams::default(), &cm).await.unwrap();
//! assert!(server.get("", "configmaps", Some("default"), "a").is_some());
//! assert_eq!(server.writes_by("test"), 1);
//! # }
//! ```
//!
//! # What it emulates
//!
//! - **Types**: a registry of served [`ResourceType`]s; by default core/v1 namespaces (cluster
//!   scoped), configmaps, secrets, services, serviceaccounts, pods; apps/v1 deployments and
//!   statefulsets (with `/status`); policy/v1 poddisruptionbudgets; rbac.authorization.k8s.io/v1
//!   clusterroles and clusterrolebindings (cluster scoped), roles and rolebindings;
//!   coordination.k8s.io/v1 leases; core/v1 and events.k8s.io/v1 events;
//!   apiextensions.k8s.io/v1 customresourcedefinitions. Tests add CRD-backed types with
//!   [`FakeApiServer::register`], also while clients run ("operator installed later"), or by
//!   creating a `CustomResourceDefinition` object: its storage version (else the first served one),
//!   scope and status subresource become served at once and the server marks it `NamesAccepted` and
//!   `Established` (a status write of its own). [`FakeApiServer::unregister`], or deleting the CRD
//!   object, deletes the type's objects (DELETED events) and ends its watches (the real server
//!   waits for the custom resources to go before the CRD does). Only one version of a type is
//!   served (no conversion). Paths of unserved types
//!   answer 404 `the server could not find the requested resource` (reason NotFound), which is how a
//!   missing CRD looks. Legacy discovery (`/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`)
//!   and `/version` reflect the registry.
//! - **URLs**: `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` and the same under
//!   `/apis/{group}/{version}`; the cluster-wide path of a namespaced type lists and watches across
//!   namespaces.
//! - **Store**: one global, increasing `resourceVersion` for every change; `uid`,
//!   `creationTimestamp` (RFC 3339) and `generation: 1` on create; `generation` bumped only when
//!   something outside `metadata` and `status` changes (and when a deletion is deferred by
//!   finalizers); `metadata.namespace` from the path; `generateName`. A write that changes nothing
//!   is a no-op (no new resourceVersion, no event), like the real server — so a controller that
//!   re-applies an unchanged object does not wake itself up. Explicit `null`s are not stored.
//! - **Verbs**: POST (201; 409 `AlreadyExists`), GET (404 `NotFound` as a `Status`), PUT (a stale
//!   `metadata.resourceVersion` → 409 `Conflict`; absent → unconditional), PATCH as
//!   `application/merge-patch+json`, `application/json-patch+json` (including `test`; a failed
//!   patch → 422 `Invalid`; `test` of a missing path against `null` passes, like the real server),
//!   `application/strategic-merge-patch+json` (**handled as a JSON merge patch**: no `$patch`
//!   directives, lists replaced rather than merged by key) and server-side apply
//!   (`application/apply-patch+yaml`, JSON or YAML body; `fieldManager` required → 422 like the real
//!   server; `force=true|false`; creates a missing object with 201). A patch whose result carries a
//!   different `metadata.resourceVersion` (or `uid`) → 409. DELETE (404 if missing; `preconditions`
//!   → 409 on mismatch) and DELETE of a collection (with selectors). `dryRun` runs the request on a
//!   copy of the store. Writes without `fieldManager` are attributed to the User-Agent's first
//!   `/`-separated part, else `unknown`.
//! - **`/status`**: for types with a status subresource, writes to the main resource keep the
//!   stored `.status`, writes to `/status` change only `.status` (POST drops `.status`); other
//!   types treat `.status` as ordinary content and have no `/status` path.
//! - **Finalizers**: DELETE of an object with finalizers sets `deletionTimestamp` (and
//!   `deletionGracePeriodSeconds: 0`), keeps it and answers it; the write that leaves the
//!   finalizers empty removes it (one DELETED event). Adding a new finalizer to an object being
//!   deleted is rejected with 422 (`Forbidden: no new finalizers can be added...`), as in the real
//!   server.
//! - **Garbage collection**: when an object is finally removed, every object whose
//!   `ownerReferences[].uid` names it is deleted (same finalizer rules, recursively) — at once,
//!   inside the request, whereas the real garbage collector is asynchronous. A dependent with
//!   another owner that still exists only loses the dangling reference. `propagationPolicy=Orphan`
//!   (or `orphanDependents`) removes the references instead; `Foreground` behaves like `Background`.
//! - **Server-side apply**, simplified: `metadata.managedFields` in the real format (`manager`,
//!   `operation` Apply/Update, `apiVersion`, `time`, `fieldsType: FieldsV1`, `fieldsV1`,
//!   `subresource`). A field is a leaf path: **maps recurse; lists are atomic** (real Kubernetes
//!   merges associative lists such as `containers`, `ports`, `ownerReferences` or `finalizers`
//!   item by item). Empty maps own nothing. System metadata, `apiVersion` and `kind` are never
//!   owned. Apply conflicts (409 `Conflict`, the real message `Apply failed with 1 conflict:
//!   conflict with "kubectl-edit" using v1 at ...: .data.key` and `FieldManagerConflict` causes)
//!   arise when another manager owns a field the apply would change; `force` takes such fields
//!   over; fields applied with an equal value become shared. Fields the applier applied before
//!   but no longer applies, and nobody else owns, are removed. Non-apply writes give the manager
//!   every field they changed or added (operation Update) and take it from everyone else; removed
//!   fields are removed from everyone. Entries of the same manager name never conflict.
//! - **LIST**: `{Kind}List` with the current global `resourceVersion`, items sorted by namespace
//!   and name with `apiVersion`/`kind`; `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists,
//!   `!`) and `fieldSelector` (`metadata.name`, `metadata.namespace`, plus the few type-specific
//!   fields of pods and secrets; others → 400 `field label not supported`); `limit`/`continue`
//!   pagination. `resourceVersion`/`resourceVersionMatch` are ignored: the latest state is served.
//!   `Accept: ...;as=PartialObjectMetadata` (metadata-only GET/LIST/WATCH) is supported.
//! - **WATCH**: newline-delimited `{"type","object"}` events. From `resourceVersion=R`: every
//!   retained event after R, then live events; from an unset or `0` resourceVersion: a synthetic
//!   ADDED per current object, then live (with `sendInitialEvents=true` followed by the
//!   `k8s.io/initial-events-end` bookmark). A bounded, global history (default 10 000 events,
//!   [`FakeApiServer::set_history_limit`]): a too old R gets one ERROR event with a 410 `Expired`
//!   Status and the stream ends (kube-runtime relists). Selectors apply; an object that stops
//!   matching is seen as DELETED and one that starts matching as ADDED. Deletions carry the last
//!   state with a new resourceVersion. `allowWatchBookmarks=true` gets a BOOKMARK after every
//!   second without events ([`FakeApiServer::set_bookmark_interval`]); `timeoutSeconds` ends the
//!   stream; a watcher that falls behind the live channel has its stream ended (it re-watches and
//!   gets the replay); [`FakeApiServer::disconnect_watches`] ends every stream.
//! - **Third-party schemas**: an object of a kind whose real CRD is in `../shared/crds/upstream/`
//!   (prometheus-operator, grafana-operator, cert-manager) must fit its schema on every write
//!   ([`crate::crd_schema`]); a field a real server would prune or a value it would refuse is a
//!   422 `Invalid` naming each path, and nothing is stored.
//! - **Tests' hooks**: a log of every request with the caller's identity; fault injection
//!   ([`FakeApiServer::fail_next`]: answers without side effects); state inspection and
//!   change-driven waiting ([`FakeApiServer::wait_until`]) with no sleeping or polling.
//!
//! # What it does not emulate
//!
//! Authentication, authorization and RBAC evaluation (everything is allowed; RBAC objects are
//! stored only); admission (no defaulting or webhooks, names are not validated, schemas other
//! than the third-party ones above are not checked and nothing is pruned, `selectableFields` are
//! not served);
//! namespaces' lifecycle (objects may live in namespaces that do not exist; deleting a namespace
//! does not delete its content); controllers (no Deployment rollouts, no pods from StatefulSets, no
//! Endpoints, no ServiceAccount tokens); pods' graceful deletion (pods go at once); associative
//! lists and strategic-merge directives; `Foreground` deletion ordering and `blockOwnerDeletion`;
//! collection of objects created with already-dangling owner references; the `scale`, `eviction`,
//! `exec`, `log` and other subresources; `resourceVersion` semantics of GET/LIST (always latest)
//! and of a watch from a future resourceVersion (treated as now); protobuf, CBOR and Table output;
//! aggregated discovery; `generation` exists on every type (the real server sets it only for types
//! whose strategy does, such as apps and custom resources); DELETE answers the object, never a
//! `Status`.

mod router;
mod selectors;
mod ssa;
mod store;
mod watch;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::sync::broadcast;
use tower::ServiceExt;

use self::store::{Change, Store};
use self::watch::WatchMsg;

pub use self::router::IDENTITY_HEADER_NAME;

/// A served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `configmaps`.
    pub plural: String,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
    /// Has a `/status` subresource.
    pub status_subresource: bool,
}

impl ResourceType {
    /// A namespaced type without a status subresource.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced: true,
            status_subresource: false,
        }
    }

    /// A cluster-scoped type without a status subresource.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self { namespaced: false, ..Self::namespaced(group, version, kind, plural) }
    }

    /// The same type with a `/status` subresource.
    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// The type of a kube `Resource` (a k8s-openapi type or a `#[derive(CustomResource)]` type).
    pub fn of<K>(status_subresource: bool) -> Self
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        let namespaced =
            std::any::TypeId::of::<K::Scope>() == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>();
        Self {
            group: K::group(&()).into_owned(),
            version: K::version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            namespaced,
            status_subresource,
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Our `MonitoringCluster` (`metrics.opni.io/v1beta1`, with status).
    pub fn monitoring_cluster() -> Self {
        Self::namespaced("metrics.opni.io", "v1beta1", "MonitoringCluster", "monitoringclusters").with_status()
    }

    /// cert-manager's `Certificate` and `Issuer` (`cert-manager.io/v1`, with status).
    pub fn cert_manager() -> [Self; 2] {
        [
            Self::namespaced("cert-manager.io", "v1", "Certificate", "certificates").with_status(),
            Self::namespaced("cert-manager.io", "v1", "Issuer", "issuers").with_status(),
        ]
    }

    /// The types [`FakeApiServer::new`] serves.
    pub fn defaults() -> Vec<ResourceType> {
        vec![
            Self::cluster("", "v1", "Namespace", "namespaces").with_status(),
            Self::namespaced("", "v1", "ConfigMap", "configmaps"),
            Self::namespaced("", "v1", "Secret", "secrets"),
            Self::namespaced("", "v1", "Service", "services").with_status(),
            Self::namespaced("", "v1", "ServiceAccount", "serviceaccounts"),
            Self::namespaced("", "v1", "Pod", "pods").with_status(),
            Self::namespaced("apps", "v1", "Deployment", "deployments").with_status(),
            Self::namespaced("apps", "v1", "StatefulSet", "statefulsets").with_status(),
            Self::namespaced("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets").with_status(),
            Self::cluster("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles"),
            Self::cluster("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings"),
            Self::namespaced("rbac.authorization.k8s.io", "v1", "Role", "roles"),
            Self::namespaced("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
            Self::namespaced("coordination.k8s.io", "v1", "Lease", "leases"),
            Self::namespaced("", "v1", "Event", "events"),
            Self::namespaced("events.k8s.io", "v1", "Event", "events"),
            Self::cluster(store::CRD_GROUP, "v1", "CustomResourceDefinition", store::CRD_PLURAL).with_status(),
        ]
    }
}

/// The in-process client's tag on every request (see [`FakeApiServer::client`]).
#[derive(Debug, Clone)]
struct Identity(String);

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Who sent it: the identity given to [`FakeApiServer::client`], else the
    /// [`IDENTITY_HEADER_NAME`] header, else `"http"`.
    pub identity: String,
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Raw query string (`""` if none).
    pub query: String,
    /// The status answered (200 for a watch that started streaming).
    pub status: u16,
}

impl RequestRecord {
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
    }

    /// A GET with `watch=true`/`watch=1`.
    pub fn is_watch(&self) -> bool {
        self.method == Method::GET && self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// An injected failure: the next `times` requests that match answer `code` without side effects
/// (409 as reason `Conflict`, 500 `InternalError`, 503 `ServiceUnavailable`, 429, 404, ...), or,
/// made with [`Fault::hang`], never answer at all (an API server or network that stalls: the
/// request is recorded with status 0 and waits until the client gives up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this method (any if `None`).
    pub method: Option<Method>,
    /// Only requests for this plural resource name (any resource request if `None`).
    pub plural: Option<String>,
    /// Only requests naming this object (any if `None`).
    pub name: Option<String>,
    /// Only requests of the client with this identity (any if `None`).
    pub identity: Option<String>,
    /// The status code to answer; 0: no answer ever.
    pub code: u16,
    /// How many requests fail.
    pub times: usize,
}

impl Fault {
    /// One failure with `code` for any request.
    pub fn new(code: u16) -> Self {
        Self { method: None, plural: None, name: None, identity: None, code, times: 1 }
    }

    /// One request that is never answered.
    pub fn hang() -> Self {
        Self::new(0)
    }

    /// Only for requests of the client made with `identity`.
    #[must_use]
    pub fn identity(mut self, identity: &str) -> Self {
        self.identity = Some(identity.to_owned());
        self
    }

    /// Only for `method`.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only for the resource `plural`.
    #[must_use]
    pub fn plural(mut self, plural: &str) -> Self {
        self.plural = Some(plural.to_owned());
        self
    }

    /// Only for the object `name`.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Fail `times` requests.
    #[must_use]
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }
}

/// The server's state, as predicates of [`FakeApiServer::wait_until`] see it.
#[derive(Debug)]
pub struct FakeState {
    store: Store,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    bookmark_interval: Duration,
    requests: Vec<RequestRecord>,
    faults: Vec<Fault>,
}

impl FakeState {
    /// The stored object (`namespace` is ignored for cluster-scoped types).
    pub fn get(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        let rt = self.store.type_of(group, plural)?;
        self.store.get(rt, namespace, name).map(|s| &s.object)
    }

    /// Every stored object of a type, sorted by namespace and name.
    pub fn list(&self, group: &str, plural: &str) -> Vec<&Value> {
        self.store.all(group, plural).collect()
    }

    /// Whether a type is served.
    pub fn is_registered(&self, group: &str, plural: &str) -> bool {
        self.store.type_of(group, plural).is_some()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.rv
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    /// How many writes (POST/PUT/PATCH/DELETE, answered with any status) `identity` sent.
    pub fn writes_by(&self, identity: &str) -> usize {
        self.requests.iter().filter(|r| r.identity == identity && r.is_write()).count()
    }

    /// Takes one failure from the first fault matching the request.
    fn take_fault(&mut self, who: &str, method: &Method, plural: Option<&str>, name: Option<&str>) -> Option<u16> {
        let index = self.faults.iter().position(|f| {
            f.times > 0
                && f.identity.as_deref().is_none_or(|i| i == who)
                && f.method.as_ref().is_none_or(|m| m == method)
                && f.plural.as_deref().is_none_or(|p| Some(p) == plural)
                && f.name.as_deref().is_none_or(|n| Some(n) == name)
        })?;
        let fault = &mut self.faults[index];
        fault.times -= 1;
        let code = fault.code;
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(code)
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<FakeState>,
    events: broadcast::Sender<WatchMsg>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// The fake API server. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

/// How many live events a watcher may fall behind before its stream is ended.
const LIVE_CHANNEL_CAPACITY: usize = 4096;

impl FakeApiServer {
    /// A server with the [default types](ResourceType::defaults) and no objects.
    pub fn new() -> Self {
        let mut store = Store::default();
        for rt in ResourceType::defaults() {
            store.register(rt);
        }
        let state = FakeState {
            store,
            history: VecDeque::new(),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            requests: Vec::new(),
            faults: Vec::new(),
        };
        let (events, _) = broadcast::channel(LIVE_CHANNEL_CAPACITY);
        let (changed, _) = tokio::sync::watch::channel(0);
        Self { inner: Arc::new(Inner { state: Mutex::new(state), events, changed }) }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    fn subscribe(&self) -> broadcast::Receiver<WatchMsg> {
        self.inner.events.subscribe()
    }

    fn record(&self, record: RequestRecord) {
        self.lock().requests.push(record);
        self.notify();
    }

    /// Appends changes to the history and sends them to live watches (under the state lock, so
    /// watches see them in resourceVersion order).
    ///
    /// A change of a `CustomResourceDefinition` also updates the registry (see [`Store::sync_crd`]).
    fn publish(&self, state: &mut FakeState, changes: Vec<Change>) {
        let mut queue: VecDeque<Change> = changes.into();
        while let Some(change) = queue.pop_front() {
            let change = Arc::new(change);
            state.history.push_back(Arc::clone(&change));
            // No receiver is fine.
            let _ = self.inner.events.send(WatchMsg::Event(Arc::clone(&change)));
            if change.group == store::CRD_GROUP && change.plural == store::CRD_PLURAL {
                let mut more = Vec::new();
                let removed = state.store.sync_crd(&change, &mut more);
                queue.extend(more);
                for (group, plural) in removed {
                    let _ = self.inner.events.send(WatchMsg::TypeRemoved(group, plural));
                }
            }
        }
        state.trim_history();
    }

    /// Serves a type (replacing one with the same group and plural).
    pub fn register(&self, resource: ResourceType) {
        self.lock().store.register(resource);
        self.notify();
    }

    /// Stops serving a type and deletes its objects, like deleting a CRD: watches see DELETED
    /// events and then end; further requests answer 404.
    pub fn unregister(&self, plural: &str, group: &str) {
        {
            let mut state = self.lock();
            let mut changes = Vec::new();
            state.store.unregister(group, plural, &mut changes);
            self.publish(&mut state, changes);
            let _ = self.inner.events.send(WatchMsg::TypeRemoved(group.to_owned(), plural.to_owned()));
        }
        self.notify();
    }

    /// How many events the watch history keeps (default 10 000); trims at once.
    pub fn set_history_limit(&self, limit: usize) {
        let mut state = self.lock();
        state.history_limit = limit;
        state.trim_history();
    }

    /// How long a watch with bookmarks stays silent before it gets a BOOKMARK (default 1 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.lock().bookmark_interval = interval;
    }

    /// Ends every open watch stream (clients re-watch from their last resourceVersion).
    pub fn disconnect_watches(&self) {
        let _ = self.inner.events.send(WatchMsg::Disconnect);
    }

    /// The axum router that answers every request (identity: the [`IDENTITY_HEADER_NAME`] header,
    /// else `"http"`).
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback(router::handle).with_state(self.clone())
    }

    /// A real kube client talking to this server in process; every request it sends is recorded
    /// with `identity`. Its default namespace is `default`.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the kube client spawns its request buffer).
    pub fn client(&self, identity: &str) -> kube::Client {
        let identity = Identity(identity.to_owned());
        let service = self.router().map_request(move |mut request: http::Request<kube::client::Body>| {
            request.extensions_mut().insert(identity.clone());
            request
        });
        kube::Client::new(service, "default")
    }

    /// Serves the same API over plain HTTP on 127.0.0.1 (a free port) until the returned
    /// [`ServedApi`] is dropped.
    ///
    /// # Errors
    /// If the listener cannot be bound.
    pub async fn serve(&self) -> std::io::Result<ServedApi> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        let router = self.router();
        tokio::spawn(async move {
            let mut stop_accepting = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    _ = stop_accepting.changed() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let router = router.clone();
                let mut stop_connection = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        router.clone().oneshot(request)
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stop_connection.changed() => {}
                    }
                });
            }
        });
        Ok(ServedApi { addr, _stop: stop })
    }

    /// The stored object (`namespace` is ignored for cluster-scoped types).
    pub fn get(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.lock().get(group, plural, namespace, name).cloned()
    }

    /// Every stored object of a type, sorted by namespace and name.
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        self.lock().list(group, plural).into_iter().cloned().collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// How many writes (POST/PUT/PATCH/DELETE, answered with any status) `identity` sent.
    pub fn writes_by(&self, identity: &str) -> usize {
        self.lock().writes_by(identity)
    }

    /// Makes the next matching requests fail (see [`Fault`]). Faults queue up; each request takes
    /// from the first matching one.
    pub fn fail_next(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    /// Waits until `condition` holds, re-checking it on every change of the state (objects,
    /// registry, request log): no sleeping, no polling.
    ///
    /// # Panics
    /// If it does not hold within `timeout` (test code: the panic is the failure report).
    pub async fn wait_until<F: Fn(&FakeState) -> bool>(&self, condition: F, timeout: Duration) {
        let mut changes = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let holds = condition(&self.lock());
            if holds {
                return;
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                let state = self.lock();
                if condition(&state) {
                    return;
                }
                let recent: Vec<String> = state
                    .requests
                    .iter()
                    .rev()
                    .take(10)
                    .map(|r| format!("{} {} {}?{} -> {}", r.identity, r.method, r.path, r.query, r.status))
                    .collect();
                panic!(
                    "kube_fake: condition not met within {timeout:?} (resourceVersion {}); last requests, newest first:\n{}",
                    state.store.rv,
                    recent.join("\n")
                );
            }
        }
    }

    /// Whether `condition` keeps holding for `period`, re-checked on every change of the state
    /// (no polling): `false` as soon as a change breaks it.
    pub async fn holds_throughout<F: Fn(&FakeState) -> bool>(&self, condition: F, period: Duration) -> bool {
        let mut changes = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + period;
        loop {
            if !condition(&self.lock()) {
                return false;
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return condition(&self.lock());
            }
        }
    }

    /// Waits until the object exists and satisfies `predicate`; returns it.
    ///
    /// # Panics
    /// If that does not happen within `timeout`.
    pub async fn wait_for_object(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        self.wait_until(|s| s.get(group, plural, namespace, name).is_some_and(&predicate), timeout).await;
        self.get(group, plural, namespace, name).unwrap_or_default()
    }

    /// Waits until the object does not exist.
    ///
    /// # Panics
    /// If it still exists after `timeout`.
    pub async fn wait_for_absence(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        timeout: Duration,
    ) {
        self.wait_until(|s| s.get(group, plural, namespace, name).is_none(), timeout).await;
    }
}

/// The API served over HTTP (see [`FakeApiServer::serve`]); dropping it stops serving and closes
/// its connections.
#[derive(Debug)]
pub struct ServedApi {
    addr: SocketAddr,
    _stop: tokio::sync::watch::Sender<()>,
}

impl ServedApi {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server: one cluster, one user without credentials, one context with
    /// `namespace`.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: {namespace}
current-context: fake
users:
- name: fake
  user: {{}}
preferences: {{}}
",
            url = self.url()
        )
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) with namespace `default` to `path`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml("default"))
    }
}
