//! The object store: objects, the global resourceVersion, and every write's semantics.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use serde_json::{Map, Value, json};

use super::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::ssa::{self, ApplyOutcome, ApplyRequest, ManagedEntry, Scope};

/// `(group, plural)`.
pub(crate) type TypeKey = (String, String);
/// `(namespace or "", name)`.
pub(crate) type ObjKey = (String, String);

/// Manager name the garbage collector writes with.
const GC_MANAGER: &str = "generic-garbage-collector";

/// An API error, answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

/// An object of a third-party kind must fit the real operator's CRD schema
/// ([`crate::crd_schema`]): a field a real API server would prune, or a value it would refuse,
/// is a 422 here, so the test that wrote it fails and names the field.
fn check_schema(rt: &ResourceType, name: &str, object: &Value) -> Result<(), ApiError> {
    let Some(schemas) = crate::crd_schema::Schemas::upstream() else { return Ok(()) };
    schemas.check(object).map_err(|findings| ApiError::invalid(rt, name, format!("[{}]", findings.join(", "))))
}

/// `configmaps` or `deployments.apps`, as the real server names resources in messages.
fn resource_name(rt: &ResourceType) -> String {
    if rt.group.is_empty() { rt.plural.clone() } else { format!("{}.{}", rt.plural, rt.group) }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty()
        && let Value::Object(map) = &mut d
    {
        map.insert("group".to_owned(), Value::String(rt.group.clone()));
    }
    d
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self { code, reason: reason.to_owned(), message: message.into(), details: None }
    }

    /// The reason the real server uses for a bare status code.
    pub(crate) fn for_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            410 => "Expired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, message)
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} {name:?} not found", resource_name(rt))).with_details(details(rt, name))
    }

    /// What a path of an unserved resource answers.
    pub(crate) fn no_resource() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} {name:?} already exists", resource_name(rt)))
            .with_details(details(rt, name))
    }

    pub(crate) fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} {name:?}: {why}", resource_name(rt)))
            .with_details(details(rt, name))
    }

    pub(crate) fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(422, "Invalid", format!("{} {name:?} is invalid: {message}", resource_name(rt)))
            .with_details(details(rt, name))
    }

    /// The `Status` object.
    pub(crate) fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut status) {
            map.insert("details".to_owned(), details.clone());
        }
        status
    }
}

/// What happened to an object, for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change; every change has its own resourceVersion.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) kind: ChangeKind,
    pub(crate) group: String,
    pub(crate) plural: String,
    /// The new state (for a deletion: the last state, carrying the deletion's resourceVersion).
    pub(crate) object: Value,
    /// The state before.
    pub(crate) previous: Option<Value>,
}

/// A stored object with its field ownership.
#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub(crate) object: Value,
    pub(crate) managed: Vec<ManagedEntry>,
    /// Deleted with `propagationPolicy=Orphan` while finalizers were pending.
    orphan: bool,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub(crate) precondition_rv: Option<String>,
    pub(crate) precondition_uid: Option<String>,
    pub(crate) orphan: bool,
}

/// Options of a LIST.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListOptions {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
}

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
}

/// The store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Store {
    pub(crate) rv: u64,
    pub(crate) types: BTreeMap<TypeKey, ResourceType>,
    pub(crate) objects: BTreeMap<TypeKey, BTreeMap<ObjKey, StoredObject>>,
    /// Uids of objects removed for good, for the collector's check of new dependents.
    removed_uids: std::collections::BTreeSet<String>,
}

/// The current time as the API server prints it (RFC 3339, seconds).
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

pub(crate) fn type_key(rt: &ResourceType) -> TypeKey {
    (rt.group.clone(), rt.plural.clone())
}

fn obj_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ObjKey {
    let ns = if rt.namespaced { namespace.unwrap_or_default() } else { "" };
    (ns.to_owned(), name.to_owned())
}

fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    match &mut object["metadata"] {
        Value::Object(meta) => meta,
        _ => unreachable!("metadata was just made a map"),
    }
}

fn meta_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    meta(object).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The object without the fields every write changes (for no-op detection).
fn without_volatile(object: &Value) -> Value {
    let mut o = object.clone();
    let m = meta_mut(&mut o);
    m.remove("resourceVersion");
    m.remove("managedFields");
    o
}

/// The object without `metadata` and `status` (what bumps `metadata.generation`).
fn spec_part(object: &Value) -> Value {
    let mut o = object.clone();
    if let Value::Object(map) = &mut o {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    o
}

fn must_be_object(body: Value) -> Result<Value, ApiError> {
    if body.is_object() {
        Ok(body)
    } else {
        Err(ApiError::bad_request("the body of the request must be a JSON object"))
    }
}

/// Checks `kind`/`apiVersion` in a body when present.
fn check_type(rt: &ResourceType, body: &Value, required: bool) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str);
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    if required && (kind.is_none() || api_version.is_none()) {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {}, Kind={}",
            api_version.unwrap_or("/"),
            kind.unwrap_or_default()
        )));
    }
    if let Some(kind) = kind
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match {}", rt.kind)));
    }
    if let Some(api_version) = api_version
        && api_version != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    Ok(())
}

/// Checks (and fills) `metadata.name`/`metadata.namespace` of a body against the URL.
fn check_identity(rt: &ResourceType, body: &mut Value, namespace: Option<&str>, name: &str) -> Result<(), ApiError> {
    let m = meta_mut(body);
    match m.get("name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            m.insert("name".to_owned(), Value::String(name.to_owned()));
        }
    }
    check_namespace(rt, m, namespace)
}

fn check_namespace(rt: &ResourceType, m: &mut Map<String, Value>, namespace: Option<&str>) -> Result<(), ApiError> {
    if rt.namespaced {
        let ns = namespace.unwrap_or_default();
        match m.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                m.insert("namespace".to_owned(), Value::String(ns.to_owned()));
            }
        }
    } else {
        m.remove("namespace");
    }
    Ok(())
}

/// Applies a JSON patch; a `test` of a missing path against `null` passes (as in the real server).
fn apply_json_patch(doc: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let ops: Vec<json_patch::PatchOperation> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    for op in &ops {
        if let json_patch::PatchOperation::Test(test) = op
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| ApiError::for_code(422, e.to_string()))?;
    }
    Ok(())
}

/// The group of `CustomResourceDefinition`s.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";
/// Their plural.
pub(crate) const CRD_PLURAL: &str = "customresourcedefinitions";
/// Manager name of the server's own status writes.
const SERVER_MANAGER: &str = "kube-apiserver";

/// The type a `CustomResourceDefinition` object defines: its storage version (else the first served
/// one), scope, and whether that version has a status subresource.
pub(crate) fn crd_type(crd: &Value) -> Option<ResourceType> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?;
    let kind = spec.pointer("/names/kind")?.as_str()?;
    let plural = spec.pointer("/names/plural")?.as_str()?;
    let versions = spec.get("versions")?.as_array()?;
    let version = versions
        .iter()
        .find(|v| v.get("storage") == Some(&Value::Bool(true)))
        .or_else(|| versions.iter().find(|v| v.get("served") == Some(&Value::Bool(true))))?;
    Some(ResourceType {
        group: group.to_owned(),
        version: version.get("name")?.as_str()?.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        status_subresource: version.pointer("/subresources/status").is_some(),
    })
}

impl Store {
    /// Keeps the registry in step with a `CustomResourceDefinition` change: a created or changed
    /// CRD serves its type and is marked `Established` (a status write of its own); a removed one
    /// stops serving it and deletes its objects. Returns the types that stopped being served.
    pub(crate) fn sync_crd(&mut self, change: &Change, changes: &mut Vec<Change>) -> Vec<(String, String)> {
        let Some(rt) = crd_type(&change.object) else { return Vec::new() };
        if change.kind == ChangeKind::Deleted {
            self.unregister(&rt.group, &rt.plural, changes);
            return vec![(rt.group, rt.plural)];
        }
        let mut removed = Vec::new();
        if let Some(previous) = change.previous.as_ref().and_then(crd_type)
            && (previous.group != rt.group || previous.plural != rt.plural)
        {
            self.unregister(&previous.group, &previous.plural, changes);
            removed.push((previous.group, previous.plural));
        }
        if self.type_of(&rt.group, &rt.plural) != Some(&rt) {
            self.register(rt.clone());
        }
        let established = change.object.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| {
            c.iter().any(|c| c.get("type") == Some(&json!("Established")) && c.get("status") == Some(&json!("True")))
        });
        let Some(crd_rt) = self.type_of(CRD_GROUP, CRD_PLURAL).cloned() else { return removed };
        let Some(name) = meta_str(&change.object, "name").map(str::to_owned) else { return removed };
        if !established && let Some(stored) = self.get(&crd_rt, None, &name).cloned() {
            let now = now();
            let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": ""});
            let mut new = stored.object.clone();
            new["status"] = json!({
                "acceptedNames": change.object.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
                "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
                "storedVersions": [rt.version],
            });
            let mut managed = stored.managed.clone();
            ssa::record_update(
                &mut managed,
                &stored.object,
                &new,
                SERVER_MANAGER,
                Scope::Status,
                &crd_rt.api_version(),
                &now,
            );
            // The CRD exists and gains no finalizer: this cannot fail.
            let _ = self.commit_update(&crd_rt, &obj_key(&crd_rt, None, &name), new, managed, changes);
        }
        removed
    }

    pub(crate) fn type_of(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types.get(&(group.to_owned(), plural.to_owned()))
    }

    pub(crate) fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> Option<&StoredObject> {
        self.objects.get(&type_key(rt)).and_then(|objects| objects.get(&obj_key(rt, namespace, name)))
    }

    /// Every stored object of a type, ordered by namespace and name.
    pub(crate) fn all(&self, group: &str, plural: &str) -> impl Iterator<Item = &Value> {
        self.objects.get(&(group.to_owned(), plural.to_owned())).into_iter().flat_map(|m| m.values()).map(|s| &s.object)
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().flat_map(BTreeMap::values).any(|s| meta_str(&s.object, "uid") == Some(uid))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Sets what the server owns in an object before storing it.
    fn finish(rt: &ResourceType, object: &mut Value, managed: &[ManagedEntry], rv: u64) {
        if let Value::Object(map) = object {
            map.insert("apiVersion".to_owned(), Value::String(rt.api_version()));
            map.insert("kind".to_owned(), Value::String(rt.kind.clone()));
        }
        let m = meta_mut(object);
        m.insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
        m.remove("selfLink");
        if managed.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".to_owned(), Value::Array(managed.iter().map(ManagedEntry::render).collect()));
        }
    }

    /// Registers (or replaces) a served type.
    pub(crate) fn register(&mut self, rt: ResourceType) {
        self.types.insert(type_key(&rt), rt);
    }

    /// Stops serving a type and deletes its objects (like deleting a CRD).
    pub(crate) fn unregister(&mut self, group: &str, plural: &str, changes: &mut Vec<Change>) {
        let key = (group.to_owned(), plural.to_owned());
        if let Some(objects) = self.objects.remove(&key) {
            for (_, stored) in objects {
                let rv = self.next_rv();
                let mut object = stored.object.clone();
                meta_mut(&mut object).insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
                changes.push(Change {
                    rv,
                    kind: ChangeKind::Deleted,
                    group: group.to_owned(),
                    plural: plural.to_owned(),
                    object,
                    previous: Some(stored.object),
                });
            }
        }
        self.types.remove(&key);
    }

    fn insert_new(
        &mut self,
        rt: &ResourceType,
        mut object: Value,
        managed: Vec<ManagedEntry>,
        changes: &mut Vec<Change>,
    ) -> Value {
        let m = meta_mut(&mut object);
        m.insert("uid".to_owned(), Value::String(new_uid()));
        m.insert("creationTimestamp".to_owned(), Value::String(now()));
        m.insert("generation".to_owned(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        let namespace = m.get("namespace").and_then(Value::as_str).map(str::to_owned);
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let rv = self.next_rv();
        Self::finish(rt, &mut object, &managed, rv);
        self.objects.entry(type_key(rt)).or_default().insert(
            obj_key(rt, namespace.as_deref(), &name),
            StoredObject { object: object.clone(), managed, orphan: false },
        );
        changes.push(Change {
            rv,
            kind: ChangeKind::Added,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            object: object.clone(),
            previous: None,
        });
        // The garbage collector removes an object all of whose owners were deleted (a controller
        // that wrote a dependent from a stale cache after its owner went): done at once here,
        // the real collector does it shortly after. Owner uids this server never saw are left
        // alone, so tests may name owners they do not create.
        let owners: Vec<String> = meta(&object)
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_owned).collect())
            .unwrap_or_default();
        if !owners.is_empty() && owners.iter().all(|uid| self.removed_uids.contains(uid)) {
            self.delete_object(rt, &obj_key(rt, namespace.as_deref(), &name), false, changes);
        }
        object
    }

    /// POST.
    pub(crate) fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        manager: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let mut object = must_be_object(body)?;
        ssa::strip_nulls(&mut object);
        check_type(rt, &object, false)?;
        let m = meta_mut(&mut object);
        let name = match (m.get("name").and_then(Value::as_str), m.get("generateName").and_then(Value::as_str)) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                let mut name;
                loop {
                    name = format!("{prefix}{}", random_suffix());
                    if self.get(rt, namespace, &name).is_none() {
                        break;
                    }
                }
                name
            }
            _ => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let m = meta_mut(&mut object);
        m.insert("name".to_owned(), Value::String(name.clone()));
        check_namespace(rt, m, namespace)?;
        if m.get("resourceVersion").is_some_and(|v| v.as_str() != Some("")) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        m.remove("resourceVersion");
        m.remove("managedFields");
        if self.get(rt, namespace, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.status_subresource
            && let Value::Object(map) = &mut object
        {
            map.remove("status");
        }
        let mut managed = Vec::new();
        ssa::record_update(&mut managed, &json!({}), &object, manager, Scope::Main, &rt.api_version(), &now());
        check_schema(rt, &name, &object)?;
        Ok(self.insert_new(rt, object, managed, changes))
    }

    /// Restricts a write to its scope and restores what clients cannot change.
    fn prepare_update(rt: &ResourceType, old: &Value, mut new: Value, scope: Scope) -> Value {
        ssa::strip_nulls(&mut new);
        match scope {
            Scope::Status => {
                let mut out = old.clone();
                if let Value::Object(map) = &mut out {
                    match new.get("status") {
                        Some(status) => map.insert("status".to_owned(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                out
            }
            Scope::Main => {
                let old_meta = meta(old).cloned().unwrap_or_default();
                let m = meta_mut(&mut new);
                for key in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "resourceVersion",
                ] {
                    match old_meta.get(key) {
                        Some(v) => m.insert(key.to_owned(), v.clone()),
                        None => m.remove(key),
                    };
                }
                m.remove("managedFields");
                if rt.status_subresource
                    && let Value::Object(map) = &mut new
                {
                    match old.get("status") {
                        Some(status) => map.insert("status".to_owned(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                new
            }
        }
    }

    /// Stores an update of an existing object (or removes it when its last finalizer went away during
    /// deletion). A write that changes nothing is a no-op: no new resourceVersion, no event.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        mut new: Value,
        managed: Vec<ManagedEntry>,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let tk = type_key(rt);
        let Some(old) = self.objects.get(&tk).and_then(|o| o.get(key)).cloned() else {
            return Err(ApiError::not_found(rt, &key.1));
        };
        if meta(&old.object).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            let before = finalizers(&old.object);
            let added: Vec<String> = finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    &key.1,
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        Self::finish(rt, &mut new, &managed, 0);
        check_schema(rt, &key.1, &new)?;
        if without_volatile(&new) == without_volatile(&old.object) && ssa::same_ownership(&managed, &old.managed) {
            return Ok(old.object);
        }
        if spec_part(&new) != spec_part(&old.object) {
            let generation = meta(&old.object).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0);
            meta_mut(&mut new).insert("generation".to_owned(), json!(generation + 1));
        }
        let deleting = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting && finalizers(&new).is_empty() {
            return Ok(self.remove_object(rt, key, new, old.orphan, changes));
        }
        let rv = self.next_rv();
        Self::finish(rt, &mut new, &managed, rv);
        if let Some(objects) = self.objects.get_mut(&tk) {
            objects.insert(key.clone(), StoredObject { object: new.clone(), managed, orphan: old.orphan });
        }
        changes.push(Change {
            rv,
            kind: ChangeKind::Modified,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            object: new.clone(),
            previous: Some(old.object),
        });
        Ok(new)
    }

    /// PUT.
    #[allow(clippy::too_many_arguments)] // one parameter per part of the request
    pub(crate) fn replace(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        body: Value,
        manager: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let mut body = must_be_object(body)?;
        check_type(rt, &body, false)?;
        check_identity(rt, &mut body, namespace, name)?;
        let Some(old) = self.get(rt, namespace, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        Self::check_preconditions(rt, name, &old.object, &body)?;
        let new = Self::prepare_update(rt, &old.object, body, scope);
        let mut managed = old.managed.clone();
        ssa::record_update(&mut managed, &old.object, &new, manager, scope, &rt.api_version(), &now());
        self.commit_update(rt, &obj_key(rt, namespace, name), new, managed, changes)
    }

    /// A `metadata.resourceVersion` or `metadata.uid` in a written object must match the stored one.
    fn check_preconditions(rt: &ResourceType, name: &str, stored: &Value, written: &Value) -> Result<(), ApiError> {
        if let Some(rv) = meta_str(written, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(stored, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        if let Some(uid) = meta_str(written, "uid")
            && !uid.is_empty()
            && Some(uid) != meta_str(stored, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(stored, "uid").unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// PATCH with a merge, strategic-merge (treated as merge) or JSON patch.
    #[allow(clippy::too_many_arguments)] // one parameter per part of the request
    pub(crate) fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        kind: PatchKind,
        body: &[u8],
        manager: &str,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let Some(old) = self.get(rt, namespace, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut doc = old.object.clone();
        match kind {
            PatchKind::Merge | PatchKind::Strategic => {
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                json_patch::merge(&mut doc, &patch);
            }
            PatchKind::Json => apply_json_patch(&mut doc, body)?,
        }
        if !doc.is_object() {
            return Err(ApiError::bad_request("the patched object is not a JSON object"));
        }
        Self::check_preconditions(rt, name, &old.object, &doc)?;
        if meta_str(&doc, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&doc, "name").unwrap_or_default()
            )));
        }
        let new = Self::prepare_update(rt, &old.object, doc, scope);
        let mut managed = old.managed.clone();
        ssa::record_update(&mut managed, &old.object, &new, manager, scope, &rt.api_version(), &now());
        self.commit_update(rt, &obj_key(rt, namespace, name), new, managed, changes)
    }

    /// PATCH with `application/apply-patch+yaml`. Returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)] // one parameter per part of the request
    pub(crate) fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        body: Value,
        manager: &str,
        force: bool,
        changes: &mut Vec<Change>,
    ) -> Result<(Value, bool), ApiError> {
        let mut applied = must_be_object(body)?;
        ssa::strip_nulls(&mut applied);
        check_type(rt, &applied, true)?;
        check_identity(rt, &mut applied, namespace, name)?;
        let existing = self.get(rt, namespace, name).cloned();
        match &existing {
            Some(old) => Self::check_preconditions(rt, name, &old.object, &applied)?,
            None => {
                if scope == Scope::Status {
                    return Err(ApiError::not_found(rt, name));
                }
                if let Some(uid) = meta_str(&applied, "uid").filter(|u| !u.is_empty()) {
                    return Err(ApiError::conflict(
                        rt,
                        name,
                        &format!(
                            "uid mismatch: the provided object specified uid {uid}, and no existing object was found"
                        ),
                    ));
                }
            }
        }
        let m = meta_mut(&mut applied);
        for key in ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"] {
            m.remove(key);
        }
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if let Value::Object(map) = &mut applied {
            match scope {
                Scope::Main if rt.status_subresource => {
                    map.remove("status");
                }
                Scope::Main => {}
                Scope::Status => map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            }
        }
        let (stored, stored_managed) = match &existing {
            Some(old) => (old.object.clone(), old.managed.clone()),
            None => (json!({}), Vec::new()),
        };
        let api_version = rt.api_version();
        let now = now();
        let request = ApplyRequest {
            manager,
            force,
            scope,
            status_subresource: rt.status_subresource,
            api_version: &api_version,
            now: &now,
        };
        match ssa::apply(&stored, &stored_managed, &applied, &request) {
            ApplyOutcome::Conflicts(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with {}", c.manager),
                            "field": ssa::path_string(&c.path),
                        })
                    })
                    .collect();
                let mut d = details(rt, name);
                if let Value::Object(map) = &mut d {
                    map.insert("causes".to_owned(), Value::Array(causes));
                }
                Err(ApiError::new(409, "Conflict", ssa::conflict_message(&conflicts)).with_details(d))
            }
            ApplyOutcome::Applied { object, managed } => match existing {
                Some(old) => {
                    let new = Self::prepare_update(rt, &old.object, object, scope);
                    let mut managed = managed;
                    ssa::prune(&mut managed, &new);
                    Ok((self.commit_update(rt, &obj_key(rt, namespace, name), new, managed, changes)?, false))
                }
                None => {
                    check_schema(rt, name, &object)?;
                    Ok((self.insert_new(rt, object, managed, changes), true))
                }
            },
        }
    }

    /// DELETE of one object.
    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let Some(stored) = self.get(rt, namespace, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(uid) = &options.precondition_uid
            && Some(uid.as_str()) != meta_str(&stored.object, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&stored.object, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &options.precondition_rv
            && Some(rv.as_str()) != meta_str(&stored.object, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&stored.object, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        Ok(self.delete_object(rt, &obj_key(rt, namespace, name), options.orphan, changes))
    }

    /// Deletes (or, with finalizers, marks for deletion) an existing object.
    fn delete_object(&mut self, rt: &ResourceType, key: &ObjKey, orphan: bool, changes: &mut Vec<Change>) -> Value {
        let tk = type_key(rt);
        let Some(stored) = self.objects.get(&tk).and_then(|o| o.get(key)).cloned() else {
            return Value::Null;
        };
        if finalizers(&stored.object).is_empty() {
            return self.remove_object(rt, key, stored.object, orphan, changes);
        }
        if meta(&stored.object).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return stored.object;
        }
        let mut object = stored.object.clone();
        let m = meta_mut(&mut object);
        m.insert("deletionTimestamp".to_owned(), Value::String(now()));
        m.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
        m.insert("generation".to_owned(), json!(generation + 1));
        let rv = self.next_rv();
        Self::finish(rt, &mut object, &stored.managed, rv);
        if let Some(objects) = self.objects.get_mut(&tk) {
            objects.insert(key.clone(), StoredObject { object: object.clone(), managed: stored.managed, orphan });
        }
        changes.push(Change {
            rv,
            kind: ChangeKind::Modified,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            object: object.clone(),
            previous: Some(stored.object),
        });
        object
    }

    /// Removes an object for good, then collects its dependents.
    fn remove_object(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        mut last: Value,
        orphan: bool,
        changes: &mut Vec<Change>,
    ) -> Value {
        let tk = type_key(rt);
        let previous = self.objects.get_mut(&tk).and_then(|o| o.remove(key));
        let rv = self.next_rv();
        meta_mut(&mut last).insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
        changes.push(Change {
            rv,
            kind: ChangeKind::Deleted,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            object: last.clone(),
            previous: previous.map(|p| p.object),
        });
        if let Some(uid) = meta_str(&last, "uid").map(str::to_owned) {
            self.removed_uids.insert(uid.clone());
            self.collect_dependents(&uid, orphan, changes);
        }
        last
    }

    /// Owner-reference garbage collection, done at once: dependents of a removed owner are deleted
    /// (same finalizer rules) unless another owner still exists (then only the dangling reference
    /// goes) or the owner was deleted with `propagationPolicy=Orphan` (then the references go).
    fn collect_dependents(&mut self, owner_uid: &str, orphan: bool, changes: &mut Vec<Change>) {
        let owned_by = |object: &Value| {
            meta(object)
                .and_then(|m| m.get("ownerReferences"))
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid)))
        };
        let dependents: Vec<(TypeKey, ObjKey)> = self
            .objects
            .iter()
            .flat_map(|(tk, objects)| {
                objects.iter().filter(|(_, s)| owned_by(&s.object)).map(move |(ok, _)| (tk.clone(), ok.clone()))
            })
            .collect();
        for (tk, key) in dependents {
            let Some(rt) = self.types.get(&tk).cloned() else { continue };
            let Some(stored) = self.objects.get(&tk).and_then(|o| o.get(&key)).cloned() else { continue };
            let refs: Vec<Value> = meta(&stored.object)
                .and_then(|m| m.get("ownerReferences"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let remaining: Vec<Value> =
                refs.into_iter().filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid)).collect();
            let other_owner_alive =
                remaining.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).any(|uid| self.uid_exists(uid));
            if orphan || other_owner_alive {
                let mut new = stored.object.clone();
                let m = meta_mut(&mut new);
                if remaining.is_empty() {
                    m.remove("ownerReferences");
                } else {
                    m.insert("ownerReferences".to_owned(), Value::Array(remaining));
                }
                let mut managed = stored.managed.clone();
                ssa::record_update(
                    &mut managed,
                    &stored.object,
                    &new,
                    GC_MANAGER,
                    Scope::Main,
                    &rt.api_version(),
                    &now(),
                );
                // The object exists and gains no finalizer: this cannot fail.
                let _ = self.commit_update(&rt, &key, new, managed, changes);
            } else {
                self.delete_object(&rt, &key, false, changes);
            }
        }
    }

    /// LIST (also used for DELETE of a collection).
    pub(crate) fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<Value, ApiError> {
        let (list_rv, after) = match &options.continue_token {
            Some(token) if !token.is_empty() => {
                let parsed = token.split_once(':').and_then(|(rv, rest)| {
                    let (ns, name) = rest.split_once('/')?;
                    Some((rv.parse::<u64>().ok()?, (ns.to_owned(), name.to_owned())))
                });
                match parsed {
                    Some((rv, key)) => (rv, Some(key)),
                    None => return Err(ApiError::bad_request(format!("continue key is not valid: {token}"))),
                }
            }
            _ => (self.rv, None),
        };
        let matching: Vec<(&ObjKey, &Value)> = self
            .objects
            .get(&type_key(rt))
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
            .filter(|(_, s)| options.labels.matches(&s.object) && options.fields.matches(&s.object))
            .map(|(key, s)| (key, &s.object))
            .collect();
        let page_len = options.limit.filter(|l| *l > 0).map_or(matching.len(), |l| l.min(matching.len()));
        let remaining = matching.len() - page_len;
        let mut list_meta = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0
            && let (Some(((ns, name), _)), Value::Object(m)) = (matching.get(page_len - 1), &mut list_meta)
        {
            m.insert("continue".to_owned(), Value::String(format!("{list_rv}:{ns}/{name}")));
            m.insert("remainingItemCount".to_owned(), json!(remaining));
        }
        let items: Vec<Value> = matching[..page_len].iter().map(|(_, o)| (*o).clone()).collect();
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": list_meta,
            "items": items,
        }))
    }

    /// DELETE of a collection: deletes every matching object, answers the list of what was deleted.
    pub(crate) fn delete_collection(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
        delete: &DeleteOptions,
        changes: &mut Vec<Change>,
    ) -> Result<Value, ApiError> {
        let everything = ListOptions { limit: None, continue_token: None, ..options.clone() };
        let mut list = self.list(rt, namespace, &everything)?;
        let names: Vec<(Option<String>, String)> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|o| {
                        Some((meta_str(o, "namespace").map(str::to_owned), meta_str(o, "name")?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut deleted = Vec::new();
        for (ns, name) in names {
            let key = obj_key(rt, ns.as_deref(), &name);
            let object = self.delete_object(rt, &key, delete.orphan, changes);
            if !object.is_null() {
                deleted.push(object);
            }
        }
        list["items"] = Value::Array(deleted);
        list["metadata"] = json!({"resourceVersion": self.rv.to_string()});
        Ok(list)
    }
}
