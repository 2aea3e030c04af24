//! Field ownership (`metadata.managedFields`) and server-side apply, simplified.
//!
//! A field is a *leaf path*: maps recurse, everything else (scalars and whole lists) is one field.
//! Empty maps and `null`s own nothing. Real Kubernetes additionally merges associative lists (for
//! example `containers` by `name`) element by element; here a list is always atomic.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A field: the map keys from the object's root to a leaf.
pub(crate) type FieldPath = Vec<String>;

/// `metadata` fields the server manages; nobody owns them.
const SYSTEM_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Which part of an object a request writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource.
    Main,
    /// The `/status` subresource.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main => None,
            Scope::Status => Some("status"),
        }
    }
}

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagedEntry {
    pub(crate) manager: String,
    pub(crate) operation: Operation,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) subresource: Option<&'static str>,
    pub(crate) fields: BTreeSet<FieldPath>,
}

impl ManagedEntry {
    fn same_slot(&self, manager: &str, operation: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// Everything but the time, to detect no-op writes.
    fn identity(&self) -> (&str, Operation, &str, Option<&str>, &BTreeSet<FieldPath>) {
        (&self.manager, self.operation, &self.api_version, self.subresource, &self.fields)
    }

    /// How the real server names this manager in conflict messages.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {} at {}", self.api_version, self.time));
        }
        s
    }

    /// The `managedFields` JSON of this entry.
    pub(crate) fn render(&self) -> Value {
        let mut fields = Map::new();
        for path in &self.fields {
            let mut node = &mut fields;
            for key in path {
                let entry = node.entry(format!("f:{key}")).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(next) = entry else { break };
                node = next;
            }
        }
        let mut entry = serde_json::json!({
            "manager": self.manager,
            "operation": match self.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": Value::Object(fields),
        });
        if let (Some(sub), Value::Object(map)) = (self.subresource, &mut entry) {
            map.insert("subresource".to_owned(), Value::String(sub.to_owned()));
        }
        entry
    }
}

/// Whether the managed entries are equal apart from their times.
pub(crate) fn same_ownership(a: &[ManagedEntry], b: &[ManagedEntry]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.identity() == y.identity())
}

/// `.spec.replicas`, like the real server prints paths.
pub(crate) fn path_string(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// Whether one path is a prefix of the other (they touch the same data).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The value at `path`, if any (`null` counts as absent).
pub(crate) fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = object;
    for key in path {
        node = node.as_object()?.get(key)?;
    }
    if node.is_null() { None } else { Some(node) }
}

/// Removes the value at `path` (no-op if absent).
pub(crate) fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = object;
    for key in parents {
        match node.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// Removes every `null` inside maps, recursively (the server stores no explicit nulls).
pub(crate) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn collect_leaves(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(key.clone());
                collect_leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The owned-able leaf paths of an object, restricted to what a write in `scope` may change.
///
/// `status_subresource`: whether the type has a `/status` subresource (then the main resource
/// does not own `.status`).
pub(crate) fn leaves(object: &Value, scope: Scope, status_subresource: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else { return out };
    for (key, child) in map {
        let included = match (scope, key.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, k) => k == "status",
            (Scope::Main, "status") => !status_subresource,
            (Scope::Main, _) => true,
        };
        if !included {
            continue;
        }
        if key == "metadata" {
            if let Some(meta) = child.as_object() {
                for (mkey, mchild) in meta {
                    if SYSTEM_METADATA.contains(&mkey.as_str()) {
                        continue;
                    }
                    let mut prefix = vec!["metadata".to_owned(), mkey.clone()];
                    collect_leaves(mchild, &mut prefix, &mut out);
                }
            }
            continue;
        }
        let mut prefix = vec![key.clone()];
        collect_leaves(child, &mut prefix, &mut out);
    }
    out
}

/// Deep-merges `applied` into `base`: maps merge key by key, lists and scalars replace.
pub(crate) fn merge_applied(base: &mut Value, applied: &Value) {
    match (base, applied) {
        (Value::Object(base), Value::Object(applied)) => {
            for (key, value) in applied {
                match base.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_applied(existing, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, applied) => *base = applied.clone(),
    }
}

/// Drops owned paths whose value no longer exists, and entries that own nothing.
pub(crate) fn prune(managed: &mut Vec<ManagedEntry>, object: &Value) {
    for entry in managed.iter_mut() {
        entry.fields.retain(|p| value_at(object, p).is_some());
    }
    managed.retain(|e| !e.fields.is_empty());
}

/// Records a non-apply write (create, update, merge/JSON patch) by `manager`: every leaf whose value
/// changed or appeared becomes `manager`'s (operation `Update`) and is taken from everyone else;
/// removed fields are removed from everyone.
pub(crate) fn record_update(
    managed: &mut Vec<ManagedEntry>,
    old: &Value,
    new: &Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) {
    // `scope` only names the entry; a write in either scope may change only its part anyway.
    let changed: BTreeSet<FieldPath> =
        leaves(new, Scope::Main, false).into_iter().filter(|p| value_at(old, p) != value_at(new, p)).collect();
    let subresource = scope.subresource();
    if !changed.is_empty() {
        for entry in managed.iter_mut() {
            if entry.same_slot(manager, Operation::Update, subresource) {
                continue;
            }
            entry.fields.retain(|owned| !changed.iter().any(|c| overlaps(owned, c)));
        }
        match managed.iter_mut().find(|e| e.same_slot(manager, Operation::Update, subresource)) {
            Some(entry) => {
                entry.fields.retain(|owned| !changed.iter().any(|c| overlaps(owned, c) && owned != c));
                entry.fields.extend(changed);
                entry.time = now.to_owned();
                entry.api_version = api_version.to_owned();
            }
            None => managed.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: Operation::Update,
                api_version: api_version.to_owned(),
                time: now.to_owned(),
                subresource,
                fields: changed,
            }),
        }
    }
    prune(managed, new);
}

/// One field-ownership conflict of an apply.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub(crate) manager: String,
    pub(crate) path: FieldPath,
}

/// The outcome of a server-side apply.
#[derive(Debug)]
pub(crate) enum ApplyOutcome {
    /// The merged object and its new ownership.
    Applied { object: Value, managed: Vec<ManagedEntry> },
    /// Conflicts (only without `force`).
    Conflicts(Vec<Conflict>),
}

/// Parameters of an apply.
pub(crate) struct ApplyRequest<'a> {
    pub(crate) manager: &'a str,
    pub(crate) force: bool,
    pub(crate) scope: Scope,
    pub(crate) status_subresource: bool,
    pub(crate) api_version: &'a str,
    pub(crate) now: &'a str,
}

/// Server-side apply of `applied` (already cleaned of system fields and nulls) onto `stored`.
pub(crate) fn apply(
    stored: &Value,
    stored_managed: &[ManagedEntry],
    applied: &Value,
    request: &ApplyRequest<'_>,
) -> ApplyOutcome {
    let subresource = request.scope.subresource();
    let applied_paths = leaves(applied, request.scope, request.status_subresource);

    // Conflicts: another manager owns an overlapping field whose value the apply changes.
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, FieldPath)> = Vec::new();
    for (index, entry) in stored_managed.iter().enumerate() {
        if entry.manager == request.manager {
            continue;
        }
        for owned in &entry.fields {
            for path in applied_paths.iter().filter(|p| overlaps(p, owned)) {
                let longer = if path.len() >= owned.len() { path } else { owned };
                if value_at(stored, longer) != value_at(applied, longer) {
                    conflicts.push(Conflict { manager: entry.describe(), path: path.clone() });
                    taken.push((index, owned.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !request.force {
        conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
        conflicts.dedup_by(|a, b| a.manager == b.manager && a.path == b.path);
        return ApplyOutcome::Conflicts(conflicts);
    }

    // Fields this manager applied before but no longer applies, and nobody else owns, go away.
    let mut object = stored.clone();
    let previous = stored_managed
        .iter()
        .find(|e| e.same_slot(request.manager, Operation::Apply, subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for dropped in previous.difference(&applied_paths) {
        let still_owned = stored_managed
            .iter()
            .filter(|e| !e.same_slot(request.manager, Operation::Apply, subresource))
            .any(|e| e.fields.iter().any(|f| overlaps(f, dropped)));
        let reapplied = applied_paths.iter().any(|p| overlaps(p, dropped));
        if !still_owned && !reapplied {
            remove_path(&mut object, dropped);
        }
    }
    merge_applied(&mut object, applied);

    // Ownership: the applier's Apply entry is exactly what it applied; forced fields are taken from
    // their previous owners; fields applied with an equal value stay shared.
    let mut managed: Vec<ManagedEntry> = stored_managed.to_vec();
    for (index, owned) in taken {
        if let Some(entry) = managed.get_mut(index) {
            entry.fields.remove(&owned);
        }
    }
    match managed.iter_mut().find(|e| e.same_slot(request.manager, Operation::Apply, subresource)) {
        Some(entry) => {
            if entry.fields != applied_paths {
                entry.time = request.now.to_owned();
            }
            entry.fields = applied_paths;
            entry.api_version = request.api_version.to_owned();
        }
        None => managed.push(ManagedEntry {
            manager: request.manager.to_owned(),
            operation: Operation::Apply,
            api_version: request.api_version.to_owned(),
            time: request.now.to_owned(),
            subresource,
            fields: applied_paths,
        }),
    }
    // The applier's own Update entry loses what it now applies.
    if let Some(apply_fields) =
        managed.iter().find(|e| e.same_slot(request.manager, Operation::Apply, subresource)).map(|e| e.fields.clone())
    {
        for entry in managed.iter_mut().filter(|e| e.manager == request.manager && e.operation == Operation::Update) {
            entry.fields.retain(|f| !apply_fields.contains(f));
        }
    }
    prune(&mut managed, &object);
    ApplyOutcome::Applied { object, managed }
}

/// The real server's conflict message.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", only.manager, path_string(&only.path));
    }
    let mut lines = Vec::new();
    let mut current: Option<&str> = None;
    for conflict in conflicts {
        if current != Some(conflict.manager.as_str()) {
            lines.push(format!("conflicts with {}:", conflict.manager));
            current = Some(&conflict.manager);
        }
        lines.push(format!("- {}", path_string(&conflict.path)));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(list: &[&str]) -> BTreeSet<FieldPath> {
        list.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect()
    }

    fn req(manager: &str, force: bool) -> ApplyRequest<'_> {
        ApplyRequest { manager, force, scope: Scope::Main, status_subresource: false, api_version: "v1", now: "t" }
    }

    #[test]
    fn leaves_skip_system_fields_and_recurse_maps_only() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}, "finalizers": ["f"], "annotations": {}},
            "data": {"k": "v"}, "list": [1, 2], "status": {"s": 1}
        });
        assert_eq!(
            leaves(&obj, Scope::Main, false),
            paths(&["metadata.labels.x", "metadata.finalizers", "data.k", "list", "status.s"])
        );
        assert_eq!(
            leaves(&obj, Scope::Main, true),
            paths(&["metadata.labels.x", "metadata.finalizers", "data.k", "list"])
        );
        assert_eq!(leaves(&obj, Scope::Status, true), paths(&["status.s"]));
    }

    #[test]
    fn apply_hand_edit_force_and_stale_field() {
        let empty = json!({});
        let ApplyOutcome::Applied { object, managed } =
            apply(&empty, &[], &json!({"data": {"a": "1", "b": "2"}}), &req("ctl", true))
        else {
            panic!("conflict")
        };
        // A hand edit takes .data.a.
        let mut edited = object.clone();
        edited["data"]["a"] = json!("hand");
        let mut managed2 = managed.clone();
        record_update(&mut managed2, &object, &edited, "kubectl-edit", Scope::Main, "v1", "t");
        assert_eq!(managed2.len(), 2);
        // Without force: conflict.
        let ApplyOutcome::Conflicts(c) = apply(&edited, &managed2, &json!({"data": {"a": "1"}}), &req("ctl", false))
        else {
            panic!("expected conflict")
        };
        assert_eq!(
            conflict_message(&c),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1 at t: .data.a"
        );
        // With force: restored, and .data.b (no longer applied) removed.
        let ApplyOutcome::Applied { object, managed } =
            apply(&edited, &managed2, &json!({"data": {"a": "1"}}), &req("ctl", true))
        else {
            panic!("conflict")
        };
        assert_eq!(object, json!({"data": {"a": "1"}}));
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0].fields, paths(&["data.a"]));
    }

    #[test]
    fn equal_values_are_shared() {
        let stored = json!({"data": {"a": "1"}});
        let mut managed = Vec::new();
        record_update(&mut managed, &json!({}), &stored, "other", Scope::Main, "v1", "t");
        let ApplyOutcome::Applied { managed, .. } =
            apply(&stored, &managed, &json!({"data": {"a": "1"}}), &req("ctl", false))
        else {
            panic!("conflict")
        };
        assert_eq!(managed.len(), 2);
        assert!(managed.iter().all(|e| e.fields == paths(&["data.a"])));
    }

    #[test]
    fn render_fields_v1() {
        let entry = ManagedEntry {
            manager: "m".into(),
            operation: Operation::Apply,
            api_version: "v1".into(),
            time: "t".into(),
            subresource: None,
            fields: paths(&["spec.replicas", "spec.template.x", "metadata.labels.a"]),
        };
        assert_eq!(
            entry.render()["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:x": {}}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
    }
}
