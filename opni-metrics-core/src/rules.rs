//! Alerting and recording rules synced from agents to the upstream ruler: the rule group model
//! (Prometheus's rule-file format), its checks, the collision-free names synced groups get,
//! the digest of a synced set, and the limits both ends enforce.
//!
//! Parsing (YAML) and the PromQL parser live with the callers; the checks here take the PromQL
//! check as a function, so the agent validates everything before sending and the gateway
//! re-checks the structure of what it receives.
//!
//! ```
//! use opni_metrics_core::rules::*;
//!
//! let group: RuleGroup = serde_json::from_str(
//!     r#"{"name": "node", "rules": [{"record": "job:up:sum", "expr": "sum by (job) (up)"}]}"#,
//! )?;
//! group.validate(&|_| Ok(()))?;
//! let source = RuleSource::Kubernetes { namespace: "monitoring".into(), name: "node-rules".into() };
//! assert_eq!(synced_name(&source, &group.name), "k8s:monitoring:node-rules:node");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::duration::PromDuration;
use crate::promql::is_label_name;

/// The ruler namespace that holds every group synced from agents (per tenant). Groups users
/// load elsewhere are never touched by a sync, and users cannot write here.
pub const SYNCED_NAMESPACE: &str = "opni-synced";
/// The largest rule file or `PrometheusRule` an agent reads.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;
/// The largest group (as YAML) in a sync.
pub const MAX_GROUP_BYTES: usize = 512 << 10;
/// The largest sync request (all groups' YAML).
pub const MAX_SYNC_BYTES: usize = 8 << 20;
/// The most groups in a sync.
pub const MAX_GROUPS: usize = 2000;

/// Where an agent found a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    /// A prometheus-operator `PrometheusRule` object.
    Kubernetes {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A rule file.
    File {
        /// Its path.
        path: String,
    },
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kubernetes { namespace, name } => write!(f, "PrometheusRule {namespace}/{name}"),
            Self::File { path } => write!(f, "file {path}"),
        }
    }
}

/// Percent-escapes `%`, `:`, `/` and control characters: injective, and the result has no
/// `/` (names travel in URL paths) and no `:` (the separator).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | ':' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The name a group gets in [`SYNCED_NAMESPACE`]: `k8s:<namespace>:<object>:<group>` or
/// `file:<path>:<group>`, each part escaped so that different sources or groups never share a
/// name (two objects with a group of the same name stay apart) and the same source and group
/// always get the same one.
pub fn synced_name(source: &RuleSource, group: &str) -> String {
    match source {
        RuleSource::Kubernetes { namespace, name } => {
            format!("k8s:{}:{}:{}", escape(namespace), escape(name), escape(group))
        }
        RuleSource::File { path } => format!("file:{}:{}", escape(path), escape(group)),
    }
}

/// A rule file: `groups:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Its groups.
    pub groups: Vec<RuleGroup>,
}

/// One rule group, as in a Prometheus rule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    /// Its name, unique within its source.
    pub name: String,
    /// How often it is evaluated (a Prometheus duration); the ruler's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The most series an alerting rule may produce or a recording rule may write (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// How far back in time queries are shifted (a Prometheus duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_offset: Option<String>,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// A recording or alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The metric a recording rule writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The name of an alerting rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The PromQL expression.
    pub expr: String,
    /// How long an alert must be pending before it fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// How long an alert keeps firing after its condition clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Labels added to the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of an alert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Why a group was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group {group:?}: {field}: {reason}")]
pub struct RuleError {
    /// The group.
    pub group: String,
    /// The field, such as `rules[2].expr`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Whether `n` is a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

impl RuleGroup {
    /// Checks the group: a name, at least one rule, each either a recording rule with a valid
    /// metric name or an alerting rule with a name, `for`/`keep_firing_for`/annotations only on
    /// alerts, valid durations and label names, and `check_expr` on every expression.
    ///
    /// # Errors
    /// The first [`RuleError`], naming the field.
    pub fn validate(&self, check_expr: &dyn Fn(&str) -> Result<(), String>) -> Result<(), RuleError> {
        let bad = |field: String, reason: String| RuleError { group: self.name.clone(), field, reason };
        if self.name.trim().is_empty() {
            return Err(bad("name".into(), "must not be empty".into()));
        }
        if self.rules.is_empty() {
            return Err(bad("rules".into(), "a group needs at least one rule".into()));
        }
        for (field, d) in [("interval", &self.interval), ("query_offset", &self.query_offset)] {
            if let Some(d) = d {
                PromDuration::parse(d).map_err(|e| bad(field.into(), e.to_string()))?;
            }
        }
        if let Some(i) = &self.interval
            && PromDuration::parse(i).is_ok_and(|d| d.as_millis() == 0)
        {
            return Err(bad("interval".into(), "must be above 0s".into()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let f = |name: &str| format!("rules[{i}].{name}");
            match (&r.record, &r.alert) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(bad(f("record"), "a rule has exactly one of record and alert".into()));
                }
                (Some(m), None) => {
                    if !is_metric_name(m) {
                        return Err(bad(f("record"), format!("{m:?} is not a valid metric name")));
                    }
                    if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
                        return Err(bad(f("for"), "for, keep_firing_for and annotations are for alerts only".into()));
                    }
                }
                (None, Some(a)) => {
                    if a.trim().is_empty() {
                        return Err(bad(f("alert"), "must not be empty".into()));
                    }
                }
            }
            if r.expr.trim().is_empty() {
                return Err(bad(f("expr"), "must not be empty".into()));
            }
            for (name, d) in [("for", &r.for_), ("keep_firing_for", &r.keep_firing_for)] {
                if let Some(d) = d {
                    PromDuration::parse(d).map_err(|e| bad(f(name), e.to_string()))?;
                }
            }
            for (name, map) in [("labels", &r.labels), ("annotations", &r.annotations)] {
                if let Some(k) = map.keys().find(|k| !is_label_name(k)) {
                    return Err(bad(f(name), format!("{k:?} is not a valid label name")));
                }
            }
            check_expr(&r.expr).map_err(|e| bad(f("expr"), e))?;
        }
        Ok(())
    }
}

/// The digest of a synced set: its `(name, yaml)` pairs in name order.
pub fn set_digest<'a>(groups: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Digest {
    let mut sorted: Vec<(&str, &[u8])> = groups.into_iter().collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for (name, yaml) in sorted {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((yaml.len() as u64).to_be_bytes());
        h.update(yaml);
    }
    Digest::from_bytes(h.finalize().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn group(json: &str) -> RuleGroup {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn checks_name_the_field() {
        let ok = |_: &str| Ok(());
        let field = |j: &str| group(j).validate(&ok).unwrap_err().field;
        assert_eq!(field(r#"{"name":"g","rules":[]}"#), "rules");
        assert_eq!(field(r#"{"name":"g","rules":[{"expr":"up"}]}"#), "rules[0].record");
        assert_eq!(field(r#"{"name":"g","rules":[{"record":"1x","expr":"up"}]}"#), "rules[0].record");
        assert_eq!(field(r#"{"name":"g","rules":[{"record":"a","expr":"up","for":"5m"}]}"#), "rules[0].for");
        assert_eq!(field(r#"{"name":"g","rules":[{"alert":"A","expr":"up","for":"5 minutes"}]}"#), "rules[0].for");
        assert_eq!(field(r#"{"name":"g","interval":"0s","rules":[{"alert":"A","expr":"up"}]}"#), "interval");
        assert_eq!(
            field(r#"{"name":"g","rules":[{"alert":"A","expr":"up","labels":{"bad-name":"x"}}]}"#),
            "rules[0].labels"
        );
        let e = group(r#"{"name":"g","rules":[{"alert":"A","expr":"up("}]}"#)
            .validate(&|_| Err("unclosed".into()))
            .unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("rules[0].expr", "unclosed"));
        assert!(serde_json::from_str::<RuleGroup>(r#"{"name":"g","rules":[],"namespace":"x"}"#).is_err());
        let good = r#"{"name":"g","interval":"1m","rules":[{"alert":"A","expr":"up == 0","for":"5m","labels":{"severity":"page"},"annotations":{"summary":"x"}}]}"#;
        assert_eq!(group(good).validate(&ok), Ok(()));
    }

    #[test]
    fn names_keep_sources_apart() {
        let k = |ns: &str, n: &str| RuleSource::Kubernetes { namespace: ns.into(), name: n.into() };
        assert_ne!(synced_name(&k("a", "b"), "g"), synced_name(&k("a", "c"), "g"));
        assert_eq!(
            synced_name(&RuleSource::File { path: "/etc/r.yml".into() }, "a/b:c"),
            "file:%2Fetc%2Fr.yml:a%2Fb%3Ac"
        );
    }

    proptest! {
        #[test]
        fn names_are_injective_and_slash_free(
            a in ("[a-z:/%-]{0,6}", "[a-z:/%-]{0,6}", "[a-z:/%\n-]{0,6}"),
            b in ("[a-z:/%-]{0,6}", "[a-z:/%-]{0,6}", "[a-z:/%\n-]{0,6}"),
        ) {
            let name = |(ns, n, g): &(String, String, String)| {
                synced_name(&RuleSource::Kubernetes { namespace: ns.clone(), name: n.clone() }, g)
            };
            let (x, y) = (name(&a), name(&b));
            prop_assert!(!x.contains('/') && !x.contains('\n'));
            prop_assert_eq!(x == y, a == b);
            let f = synced_name(&RuleSource::File { path: a.0.clone() }, &a.2);
            prop_assert!(f != x);
        }
    }

    #[test]
    fn the_digest_ignores_order_but_not_content() {
        let d1 = set_digest([("a", &b"x"[..]), ("b", b"y")]);
        assert_eq!(d1, set_digest([("b", &b"y"[..]), ("a", b"x")]));
        assert_ne!(d1, set_digest([("a", &b"x"[..]), ("b", b"z")]));
        assert_ne!(set_digest([("ab", &b""[..])]), set_digest([("a", &b"b"[..])]));
    }
}
