//! Objects of third-party kinds checked against the real operators' CRD schemas (DESIGN §7).
//!
//! The schemas are the `CustomResourceDefinition`s in `../shared/crds/upstream/` beside the
//! project (prometheus-operator, grafana-operator, cert-manager; data, not ours, so not copied
//! into this repository). [`Schemas::check`] walks an object against the `openAPIV3Schema` of
//! its `apiVersion` and `kind` the way a real API server's structural-schema validation and
//! pruning would treat it, and reports, each with its path:
//! - a field the schema does not know: a real server would **prune** it silently (or refuse it
//!   with `fieldValidation=Strict`), so what we meant to set would never take effect;
//! - a wrong type, a value outside `enum`, a string not matching `pattern` or outside
//!   `minLength`/`maxLength`, a number outside `minimum`/`maximum`, an array outside
//!   `minItems`/`maxItems`, a `required` field missing: a real server refuses the write (422).
//!
//! What it does not check: `format` (e.g. `date-time`), `x-kubernetes-validations` (CEL rules),
//! `x-kubernetes-list-type` uniqueness, defaulting, and `metadata` beyond being an object (the
//! API server validates `ObjectMeta` itself, which the fake does for the fields it uses).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// The openAPIV3 schemas of the upstream CRDs, by `(group, version, kind)`.
#[derive(Debug, Default)]
pub struct Schemas {
    by_kind: HashMap<(String, String, String), Value>,
}

/// `../shared/crds/upstream` beside the project.
pub fn upstream_dir() -> PathBuf {
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").map_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    // every crate of the workspace is one or two levels below its root
    for up in ["..", "../.."] {
        let root = manifest.join(up);
        if root.join("Cargo.lock").exists() {
            return root.join("../shared/crds/upstream");
        }
    }
    manifest.join("../../shared/crds/upstream")
}

impl Schemas {
    /// The upstream schemas, loaded once; `None` (with a note on stderr) when the directory is
    /// not there, e.g. a checkout without `../shared`.
    ///
    /// # Panics
    /// When the directory is there but a CRD in it cannot be read.
    pub fn upstream() -> Option<&'static Schemas> {
        static SCHEMAS: OnceLock<Option<Schemas>> = OnceLock::new();
        SCHEMAS
            .get_or_init(|| {
                let dir = upstream_dir();
                if !dir.is_dir() {
                    eprintln!("NOTE: {} is missing: third-party objects are not schema-checked", dir.display());
                    return None;
                }
                Some(Self::load(&dir).unwrap_or_else(|e| panic!("{e}")))
            })
            .as_ref()
    }

    /// Every `*.yaml` CRD in `dir`.
    ///
    /// # Errors
    /// A file that cannot be read or is not a CRD with schemas.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut out = Self::default();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let crd: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let group = crd["spec"]["group"].as_str().ok_or_else(|| format!("{}: no spec.group", path.display()))?;
            let kind = crd["spec"]["names"]["kind"].as_str().ok_or_else(|| format!("{}: no kind", path.display()))?;
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let (Some(version), Some(schema)) = (v["name"].as_str(), v["schema"].get("openAPIV3Schema")) else {
                    return Err(format!("{}: a version without name or schema", path.display()));
                };
                out.by_kind.insert((group.to_owned(), version.to_owned(), kind.to_owned()), schema.clone());
            }
        }
        Ok(out)
    }

    /// The schema of `apiVersion` and `kind`, if it is one of the upstream kinds.
    pub fn schema(&self, api_version: &str, kind: &str) -> Option<&Value> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.by_kind.get(&(group.to_owned(), version.to_owned(), kind.to_owned()))
    }

    /// Whether an object of `apiVersion` and `kind` has an upstream schema here.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        self.schema(api_version, kind).is_some()
    }

    /// Checks `object` against the schema of its `apiVersion` and `kind`; objects of other kinds
    /// pass.
    ///
    /// # Errors
    /// Every finding, as `path: what`.
    pub fn check(&self, object: &Value) -> Result<(), Vec<String>> {
        let (Some(api_version), Some(kind)) = (object["apiVersion"].as_str(), object["kind"].as_str()) else {
            return Ok(());
        };
        let Some(schema) = self.schema(api_version, kind) else { return Ok(()) };
        let mut findings = Vec::new();
        let Some(map) = object.as_object() else {
            return Err(vec!["the object is not a JSON object".to_owned()]);
        };
        // the root: apiVersion, kind and metadata are the API server's own
        let mut root = serde_json::Map::new();
        for (k, v) in map {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                root.insert(k.clone(), v.clone());
            }
        }
        if map.get("metadata").is_some_and(|m| !m.is_object()) {
            findings.push("metadata: must be an object".to_owned());
        }
        let mut root_schema = schema.clone();
        if let Some(props) = root_schema.get_mut("properties").and_then(Value::as_object_mut) {
            for k in ["apiVersion", "kind", "metadata"] {
                props.remove(k);
            }
        }
        walk(&root_schema, &Value::Object(root), "", &mut findings);
        if findings.is_empty() { Ok(()) } else { Err(findings) }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    // a null is pruned (or kept when nullable): never an error of its own
    if v.is_null() {
        return;
    }
    for sub in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        walk(sub, v, path, out);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = alternatives
                .iter()
                .map(|alt| {
                    let mut f = Vec::new();
                    walk(alt, v, path, &mut f);
                    f
                })
                .collect();
            if !results.iter().any(Vec::is_empty) {
                out.push(format!("{at}: matches none of the {key} alternatives ({})", results.concat().join("; ")));
            }
        }
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string && !matches!(type_name(v), "integer" | "string") {
        out.push(format!("{at}: must be an integer or a string, found {}", type_name(v)));
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let found = type_name(v);
        let ok = want == found || (want == "number" && found == "integer");
        if !ok && !int_or_string {
            out.push(format!("{at}: must be {want}, found {found}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.push(format!("{at}: Unsupported value {v}: supported values: {}", Value::Array(allowed.clone())));
    }
    match v {
        Value::Object(map) => object(schema, map, path, out),
        Value::Array(items) => {
            bounds(schema, items.len() as f64, ("minItems", "maxItems"), " items", at, out);
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    walk(item, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => {
            bounds(schema, s.chars().count() as f64, ("minLength", "maxLength"), " characters", at, out);
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => out.push(format!("{at}: {s:?} does not match {pattern:?}")),
                    Ok(_) => {}
                    // a Go-only construct: not checkable here
                    Err(_) => {}
                }
            }
        }
        Value::Number(n) => bounds(schema, n.as_f64().unwrap_or_default(), ("minimum", "maximum"), "", at, out),
        Value::Null | Value::Bool(_) => {}
    }
}

/// The `(min, max)` bounds a schema puts on `n` (a count of `unit`, or a number).
fn bounds(schema: &Value, n: f64, (min_key, max_key): (&str, &str), unit: &str, at: &str, out: &mut Vec<String>) {
    if let Some(min) = schema.get(min_key).and_then(Value::as_f64)
        && n < min
    {
        out.push(format!("{at}: must be at least {min}{unit}"));
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_f64)
        && n > max
    {
        out.push(format!("{at}: must be at most {max}{unit}"));
    }
}

fn object(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let additional = schema.get("additionalProperties");
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(name) {
            out.push(format!("{}: Required value", join(path, name)));
        }
    }
    for (k, x) in map {
        match (props.and_then(|p| p.get(k)), additional) {
            (Some(s), _) => walk(s, x, &join(path, k), out),
            (None, Some(Value::Object(_))) => walk(additional.unwrap_or(&Value::Null), x, &join(path, k), out),
            (None, Some(Value::Bool(true))) => {}
            (None, _) if preserve => {}
            (None, _) => out.push(format!("{}: unknown field (a real API server prunes it) in {at}", join(path, k))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schemas() -> Schemas {
        let schema = json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
                        "replicas": {"type": "integer", "minimum": 1},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "items": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {"x": {"type": "boolean"}}}}
                    }
                }
            }
        });
        let mut s = Schemas::default();
        s.by_kind.insert(("example.com".into(), "v1".into(), "Thing".into()), schema);
        s
    }

    fn thing(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t", "labels": {"a": "b"}}, "spec": spec})
    }

    #[test]
    fn a_conforming_object_passes_and_other_kinds_are_not_checked() {
        let s = schemas();
        let ok = thing(json!({"name": "abc", "mode": "a", "port": "http", "replicas": 2,
            "labels": {"x": "y"}, "free": {"any": {"thing": 1}}, "items": [{"x": true}]}));
        assert_eq!(s.check(&ok), Ok(()));
        assert_eq!(s.check(&thing(json!({"name": "abc", "port": 9090}))), Ok(()));
        assert_eq!(s.check(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": 1}})), Ok(()));
    }

    #[test]
    fn every_kind_of_finding_is_named_with_its_path() {
        let s = schemas();
        let bad = thing(json!({"mode": "c", "port": true, "replicas": 0, "labels": {"x": 1},
            "items": [{"x": "yes", "y": 1}, {}], "typo": 1}));
        let findings = s.check(&bad).unwrap_err();
        let has = |needle: &str| findings.iter().any(|f| f.contains(needle));
        assert!(has("spec.name: Required value"), "{findings:?}");
        assert!(has("spec.mode: Unsupported value \"c\""), "{findings:?}");
        assert!(has("spec.port: must be an integer or a string"), "{findings:?}");
        assert!(has("spec.replicas: must be at least 1"), "{findings:?}");
        assert!(has("spec.labels.x: must be string, found integer"), "{findings:?}");
        assert!(has("spec.items: must be at most 1 items"), "{findings:?}");
        assert!(has("spec.items[0].x: must be boolean"), "{findings:?}");
        assert!(has("spec.items[0].y: unknown field"), "{findings:?}");
        assert!(has("spec.typo: unknown field"), "{findings:?}");
        let named = s.check(&thing(json!({"name": "ABCDEFG"}))).unwrap_err();
        assert!(named.iter().any(|f| f.contains("does not match")), "{named:?}");
        assert!(named.iter().any(|f| f.contains("at most 5 characters")), "{named:?}");
    }

    #[test]
    fn the_upstream_crds_load_when_they_are_beside_the_project() {
        let Some(s) = Schemas::upstream() else { return };
        for (api_version, kind) in [
            ("monitoring.coreos.com/v1alpha1", "PrometheusAgent"),
            ("monitoring.coreos.com/v1", "Prometheus"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"),
            ("monitoring.coreos.com/v1", "PrometheusRule"),
            ("cert-manager.io/v1", "Certificate"),
            ("cert-manager.io/v1", "Issuer"),
            ("grafana.integreatly.org/v1beta1", "Grafana"),
            ("grafana.integreatly.org/v1beta1", "GrafanaDatasource"),
        ] {
            assert!(s.knows(api_version, kind), "{api_version} {kind}");
        }
        // a real schema finds a real mistake
        let agent = json!({"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "PrometheusAgent",
            "metadata": {"name": "x"}, "spec": {"replicas": "two", "scrapeIntervall": "30s"}});
        let findings = s.check(&agent).unwrap_err();
        assert!(findings.iter().any(|f| f.starts_with("spec.replicas: must be integer")), "{findings:?}");
        assert!(findings.iter().any(|f| f.starts_with("spec.scrapeIntervall: unknown field")), "{findings:?}");
    }
}
