//! Label and field selectors, parsed like the API server parses `labelSelector` and `fieldSelector`.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the label, like the real server).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches objects without the label).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold (comma-separated AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut current = String::new();
    for c in input.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced parentheses in selector {input:?}"));
                }
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in selector {input:?}"));
    }
    parts.push(current);
    Ok(parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect())
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn parse_set(key: &str, rest: &str, original: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found {original:?}, expected: '(' for key {key:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(input)? {
            let requirement = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_owned())
            } else if let Some((key, value)) = part.split_once("!=") {
                LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = part.split_once("==") {
                LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = part.split_once('=') {
                LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                let key = key.trim().to_owned();
                let values = parse_set(&key, rest, &part)?;
                LabelRequirement::NotIn(key, values)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                let key = key.trim().to_owned();
                let values = parse_set(&key, rest, &part)?;
                LabelRequirement::In(key, values)
            } else {
                LabelRequirement::Exists(part.trim().to_owned())
            };
            let key = match &requirement {
                LabelRequirement::Equals(k, _)
                | LabelRequirement::NotEquals(k, _)
                | LabelRequirement::In(k, _)
                | LabelRequirement::NotIn(k, _)
                | LabelRequirement::Exists(k)
                | LabelRequirement::DoesNotExist(k) => k,
            };
            if !valid_key(key) {
                return Err(format!("unable to parse requirement: invalid label key {key:?} in {part:?}"));
            }
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (field path, expected value, negated)
    requirements: Vec<(String, String, bool)>,
}

/// Fields every type supports.
const COMMON_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

/// Extra fields the real server supports for some built-in types (group, plural, fields).
const TYPE_FIELDS: &[(&str, &str, &[&str])] = &[
    (
        "",
        "pods",
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    ("", "secrets", &["type"]),
    ("", "namespaces", &["status.phase"]),
    ("apps", "replicasets", &["status.replicas"]),
];

impl FieldSelector {
    /// Parses a field selector for `(group, plural)`; unsupported fields answer like the real server
    /// (`field label not supported: ...`).
    pub(crate) fn parse(input: &str, group: &str, plural: &str, extra_fields: &[String]) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{part}'"));
            };
            let field = field.trim();
            let supported = COMMON_FIELDS.contains(&field)
                || extra_fields.iter().any(|f| f == field)
                || TYPE_FIELDS.iter().any(|(g, p, fields)| *g == group && *p == plural && fields.contains(&field));
            if !supported {
                return Err(format!("field label not supported: {field}"));
            }
            requirements.push((field.to_owned(), value.trim().to_owned(), negated));
        }
        Ok(Self { requirements })
    }

    /// Whether the object satisfies every requirement. A missing field compares as "".
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, expected, negated)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *expected) != *negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selectors() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        for (sel, expected) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing!=x", true),
            ("missing notin (x)", true),
            ("app=web,tier in (front,back)", true),
            ("app=web,tier=back", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&o), expected, "{sel}");
        }
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let sel = |s: &str| FieldSelector::parse(s, "", "configmaps", &[]).unwrap();
        assert!(sel("metadata.name=a").matches(&o));
        assert!(sel("metadata.name==a,metadata.namespace=ns").matches(&o));
        assert!(!sel("metadata.name!=a").matches(&o));
        assert!(FieldSelector::parse("spec.foo=x", "", "configmaps", &[]).is_err());
        assert!(FieldSelector::parse("status.phase=Running", "", "pods", &[]).is_ok());
    }
}
