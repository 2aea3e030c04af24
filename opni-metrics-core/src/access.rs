//! Access control for readers: roles, role bindings, API keys, and the one function that says
//! which tenants a caller may read.
//!
//! A [`Role`] names clusters explicitly and/or through a label selector ([`LabelSelector`]); a [`RoleBinding`]
//! grants one role to subjects (users and groups). [`readable_tenants`] evaluates them against
//! the registry, so a selector role follows a cluster's labels as they change, and only
//! registered clusters are ever readable. Nothing here trusts a tenant a caller names: callers
//! intersect what they were asked with what this returns.
//!
//! ```
//! use std::collections::BTreeMap;
//! use opni_metrics_core::access::*;
//! use opni_metrics_core::{ClusterId, registry::Cluster};
//!
//! let mut prod = Cluster::new(ClusterId::new("prod-1")?);
//! prod.set_labels(BTreeMap::from([("env".to_owned(), "prod".to_owned())]))?;
//! let dev = Cluster::new(ClusterId::new("dev-1")?);
//!
//! let role = Role::new("prod-readers", [], Some(selector([("env", "prod")])))?;
//! let binding = RoleBinding::new("sre", "prod-readers", [Subject::group("sre")?])?;
//! let alice = Caller::new("alice", ["sre"]);
//! let tenants = readable_tenants(&alice, &[role], &[binding], &[prod, dev]);
//! assert_eq!(tenants.into_iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["prod-1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::id::{ClusterId, IdError};
use crate::registry::{Cluster, RegistryError, validate_labels};
use crate::spec::{LabelSelector, SelectorOperator};

/// The longest role, binding or API key name.
pub const MAX_NAME_LEN: usize = 63;
/// The longest subject or group name.
pub const MAX_SUBJECT_LEN: usize = 256;
/// The most clusters a role names, subjects a binding names, or groups a caller carries.
pub const MAX_ITEMS: usize = 1024;
/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "omk_";

/// Why a role, binding, subject or API key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A name breaks the naming rules.
    #[error("{kind} name {name:?}: {reason}")]
    Name {
        /// Role, binding or API key.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A subject breaks the rules.
    #[error("subject {subject:?}: {reason}")]
    Subject {
        /// The subject given.
        subject: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A cluster id is invalid.
    #[error("cluster id")]
    ClusterId(#[from] IdError),
    /// A selector's label is invalid.
    #[error("selector")]
    Selector(#[from] RegistryError),
    /// A selector requirement is malformed.
    #[error("selector requirement on {key:?}: {reason}")]
    Requirement {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A role grants nothing.
    #[error("role {0:?} names no cluster and no selector; give cluster ids or a non-empty selector")]
    EmptyRole(String),
    /// A binding grants to nobody.
    #[error("role binding {0:?} names no subject")]
    NoSubjects(String),
    /// Too many entries.
    #[error("{what}: {count} given, at most {MAX_ITEMS} are allowed")]
    TooMany {
        /// What.
        what: &'static str,
        /// How many were given.
        count: usize,
    },
}

fn check_name(kind: &'static str, name: &str) -> Result<(), AccessError> {
    let bad = |reason| Err(AccessError::Name { kind, name: name.to_owned(), reason });
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
        return bad("may only hold lower-case letters, digits, '-' and '.'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must begin and end with a letter or digit");
    }
    Ok(())
}

fn check_subject_text(s: &str) -> Result<(), AccessError> {
    let bad = |reason| Err(AccessError::Subject { subject: s.to_owned(), reason });
    if s.is_empty() || s.len() > MAX_SUBJECT_LEN {
        return bad("must be 1 to 256 bytes");
    }
    if s.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    Ok(())
}

/// Checks a role's selector: keys and values follow the cluster label rules, `In`/`NotIn` carry
/// values and `Exists`/`DoesNotExist` none.
///
/// # Errors
/// [`AccessError::Selector`] or [`AccessError::Requirement`].
pub fn validate_selector(selector: &LabelSelector) -> Result<(), AccessError> {
    validate_labels(&selector.match_labels)?;
    if selector.match_expressions.len() > MAX_ITEMS {
        return Err(AccessError::TooMany { what: "selector requirements", count: selector.match_expressions.len() });
    }
    for r in &selector.match_expressions {
        let bad = |reason| Err(AccessError::Requirement { key: r.key.clone(), reason });
        match r.operator {
            SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                return bad("In and NotIn need values");
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !r.values.is_empty() => {
                return bad("Exists and DoesNotExist take no values");
            }
            _ => {}
        }
        validate_labels(&BTreeMap::from([(r.key.clone(), String::new())]))?;
        for v in &r.values {
            validate_labels(&BTreeMap::from([(r.key.clone(), v.clone())]))?;
        }
    }
    Ok(())
}

fn selector_is_empty(s: &LabelSelector) -> bool {
    s.match_labels.is_empty() && s.match_expressions.is_empty()
}

/// A selector of exact label values.
pub fn selector<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSelector {
    LabelSelector {
        match_labels: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        match_expressions: Vec::new(),
    }
}

/// A role: the clusters it may read, named and/or selected by labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Its name.
    pub name: String,
    /// Clusters named explicitly (they need not be registered yet).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub clusters: BTreeSet<ClusterId>,
    /// Clusters selected by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl Role {
    /// A validated role.
    ///
    /// # Errors
    /// [`AccessError`] naming the bad part.
    pub fn new(
        name: &str,
        clusters: impl IntoIterator<Item = ClusterId>,
        selector: Option<LabelSelector>,
    ) -> Result<Self, AccessError> {
        let r = Self { name: name.to_owned(), clusters: clusters.into_iter().collect(), selector };
        r.validate()?;
        Ok(r)
    }

    /// Checks the name, the selector and that the role grants something.
    ///
    /// # Errors
    /// [`AccessError`].
    pub fn validate(&self) -> Result<(), AccessError> {
        check_name("role", &self.name)?;
        if self.clusters.len() > MAX_ITEMS {
            return Err(AccessError::TooMany { what: "role clusters", count: self.clusters.len() });
        }
        if let Some(s) = &self.selector {
            validate_selector(s)?;
        }
        if self.clusters.is_empty() && self.selector.as_ref().is_none_or(selector_is_empty) {
            return Err(AccessError::EmptyRole(self.name.clone()));
        }
        Ok(())
    }

    /// Whether the role covers `cluster`.
    pub fn covers(&self, cluster: &Cluster) -> bool {
        self.clusters.contains(&cluster.id)
            || self.selector.as_ref().is_some_and(|s| !selector_is_empty(s) && s.matches(&cluster.labels))
    }
}

/// Who a binding grants to: a user (the token's subject claim, or an API key's subject) or a
/// group (from the token's groups claim).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A user.
    User(String),
    /// A group.
    Group(String),
}

impl Subject {
    /// A user subject.
    ///
    /// # Errors
    /// [`AccessError::Subject`].
    pub fn user(name: &str) -> Result<Self, AccessError> {
        check_subject_text(name)?;
        Ok(Self::User(name.to_owned()))
    }

    /// A group subject.
    ///
    /// # Errors
    /// [`AccessError::Subject`].
    pub fn group(name: &str) -> Result<Self, AccessError> {
        check_subject_text(name)?;
        Ok(Self::Group(name.to_owned()))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "user:{u}"),
            Self::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl std::str::FromStr for Subject {
    type Err = AccessError;
    /// `user:NAME` or `group:NAME`.
    fn from_str(s: &str) -> Result<Self, AccessError> {
        match s.split_once(':') {
            Some(("user", n)) => Self::user(n),
            Some(("group", n)) => Self::group(n),
            _ => Err(AccessError::Subject { subject: s.to_owned(), reason: "write user:NAME or group:NAME" }),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Grants one role to subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// Its name.
    pub name: String,
    /// The role granted.
    pub role: String,
    /// Who is granted it.
    pub subjects: Vec<Subject>,
}

impl RoleBinding {
    /// A validated binding.
    ///
    /// # Errors
    /// [`AccessError`].
    pub fn new(name: &str, role: &str, subjects: impl IntoIterator<Item = Subject>) -> Result<Self, AccessError> {
        let b = Self { name: name.to_owned(), role: role.to_owned(), subjects: subjects.into_iter().collect() };
        b.validate()?;
        Ok(b)
    }

    /// Checks the names and subjects.
    ///
    /// # Errors
    /// [`AccessError`].
    pub fn validate(&self) -> Result<(), AccessError> {
        check_name("role binding", &self.name)?;
        check_name("role", &self.role)?;
        if self.subjects.is_empty() {
            return Err(AccessError::NoSubjects(self.name.clone()));
        }
        if self.subjects.len() > MAX_ITEMS {
            return Err(AccessError::TooMany { what: "binding subjects", count: self.subjects.len() });
        }
        for s in &self.subjects {
            let (Subject::User(n) | Subject::Group(n)) = s;
            check_subject_text(n)?;
        }
        Ok(())
    }

    /// Whether the binding applies to `caller`.
    pub fn applies_to(&self, caller: &Caller) -> bool {
        self.subjects.iter().any(|s| match s {
            Subject::User(u) => *u == caller.subject,
            Subject::Group(g) => caller.groups.contains(g),
        })
    }
}

/// An authenticated reader: its subject and the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The subject (user name, token subject, or an API key's subject).
    pub subject: String,
    /// Its groups.
    pub groups: BTreeSet<String>,
}

impl Caller {
    /// A caller.
    pub fn new<'a>(subject: &str, groups: impl IntoIterator<Item = &'a str>) -> Self {
        Self { subject: subject.to_owned(), groups: groups.into_iter().map(str::to_owned).collect() }
    }
}

/// The tenants (registered cluster ids) that `caller` may read: every cluster covered by a role
/// that a binding applying to the caller grants. Bindings naming a missing role grant nothing.
pub fn readable_tenants(
    caller: &Caller,
    roles: &[Role],
    bindings: &[RoleBinding],
    clusters: &[Cluster],
) -> BTreeSet<ClusterId> {
    let granted: BTreeSet<&str> = bindings.iter().filter(|b| b.applies_to(caller)).map(|b| b.role.as_str()).collect();
    let roles: Vec<&Role> = roles.iter().filter(|r| granted.contains(r.name.as_str())).collect();
    clusters.iter().filter(|c| roles.iter().any(|r| r.covers(c))).map(|c| c.id.clone()).collect()
}

/// An API key as stored: never the key itself, only its SHA-256.
///
/// Keys carry 256 random bits, so a fast hash is enough: no dictionary can guess them, and a
/// slow hash would only cost CPU on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// The public id, part of the key (16 hex digits).
    pub id: String,
    /// A name for people.
    pub name: String,
    /// The subject callers with the key act as.
    pub subject: String,
    /// The groups callers with the key belong to.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// When it was created (ms since the epoch).
    pub created_at: crate::Timestamp,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
}

/// A presented API key, split into its id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    /// The public id.
    pub id: &'a str,
    secret: &'a str,
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl<'a> PresentedKey<'a> {
    /// Splits `omk_<16 hex id>_<64 hex secret>`; `None` for anything else.
    pub fn parse(token: &'a str) -> Option<Self> {
        let rest = token.strip_prefix(API_KEY_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (is_hex(id, 16) && is_hex(secret, 64)).then_some(Self { id, secret })
    }

    /// Whether the key is the one `record` stores (compared in constant time).
    pub fn matches(&self, record: &ApiKeyRecord) -> bool {
        let given = hex(&Sha256::digest(self.secret.as_bytes()));
        let stored = record.secret_sha256.as_bytes();
        record.id == self.id
            && given.len() == stored.len()
            && given.bytes().zip(stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl ApiKeyRecord {
    /// A new key from 8 random bytes of id and 32 of secret: the record to store, and the key
    /// to show once.
    ///
    /// # Errors
    /// [`AccessError`] for a bad name, subject or group.
    pub fn create<'a>(
        name: &str,
        subject: Option<&str>,
        groups: impl IntoIterator<Item = &'a str>,
        random_id: [u8; 8],
        random_secret: [u8; 32],
        now: crate::Timestamp,
    ) -> Result<(Self, String), AccessError> {
        check_name("API key", name)?;
        let subject = subject.map_or_else(|| format!("apikey:{name}"), str::to_owned);
        check_subject_text(&subject)?;
        let groups: BTreeSet<String> = groups.into_iter().map(str::to_owned).collect();
        for g in &groups {
            check_subject_text(g)?;
        }
        let id = hex(&random_id);
        let secret = hex(&random_secret);
        let record = Self {
            id: id.clone(),
            name: name.to_owned(),
            subject,
            groups,
            created_at: now,
            secret_sha256: hex(&Sha256::digest(secret.as_bytes())),
        };
        Ok((record, format!("{API_KEY_PREFIX}{id}_{secret}")))
    }

    /// The caller a request with this key acts as.
    pub fn caller(&self) -> Caller {
        Caller { subject: self.subject.clone(), groups: self.groups.clone() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::LabelSelectorRequirement;

    fn cluster(id: &str, labels: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster::new(ClusterId::new(id).unwrap());
        c.set_labels(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()).unwrap();
        c
    }

    fn ids(s: BTreeSet<ClusterId>) -> Vec<String> {
        s.into_iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn users_and_groups_get_exactly_their_roles() {
        let clusters = [cluster("a", &[("env", "prod")]), cluster("b", &[("env", "dev")]), cluster("c", &[])];
        let roles = [
            Role::new("only-a", [ClusterId::new("a").unwrap()], None).unwrap(),
            Role::new("dev", [], Some(selector([("env", "dev")]))).unwrap(),
        ];
        let bindings = [
            RoleBinding::new("alice-a", "only-a", [Subject::user("alice").unwrap()]).unwrap(),
            RoleBinding::new("devs", "dev", [Subject::group("devs").unwrap()]).unwrap(),
            RoleBinding::new("dangling", "missing", [Subject::user("alice").unwrap()]).unwrap(),
        ];
        assert_eq!(ids(readable_tenants(&Caller::new("alice", []), &roles, &bindings, &clusters)), ["a"]);
        assert_eq!(ids(readable_tenants(&Caller::new("alice", ["devs"]), &roles, &bindings, &clusters)), ["a", "b"]);
        assert_eq!(ids(readable_tenants(&Caller::new("bob", ["devs"]), &roles, &bindings, &clusters)), ["b"]);
        // a group named like a user is not the user
        assert!(readable_tenants(&Caller::new("devs", ["alice"]), &roles, &bindings, &clusters).is_empty());
        assert!(readable_tenants(&Caller::new("mallory", []), &roles, &bindings, &clusters).is_empty());
    }

    #[test]
    fn a_selector_follows_labels_and_only_registered_clusters_count() {
        let role = Role::new("prod", [ClusterId::new("later").unwrap()], Some(selector([("env", "prod")]))).unwrap();
        let binding = RoleBinding::new("b", "prod", [Subject::user("u").unwrap()]).unwrap();
        let u = Caller::new("u", []);
        let mut x = cluster("x", &[("env", "dev")]);
        let roles = [role];
        let bindings = [binding];
        assert!(readable_tenants(&u, &roles, &bindings, std::slice::from_ref(&x)).is_empty());
        x.set_labels(BTreeMap::from([("env".to_owned(), "prod".to_owned())])).unwrap();
        assert_eq!(ids(readable_tenants(&u, &roles, &bindings, std::slice::from_ref(&x))), ["x"]);
        let later = cluster("later", &[]);
        assert_eq!(ids(readable_tenants(&u, &roles, &bindings, &[x, later])), ["later", "x"]);
    }

    #[test]
    fn requirements() {
        let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: key.to_owned(),
                operator,
                values: values.iter().map(|v| (*v).to_owned()).collect(),
            }],
        };
        assert!(req("env", SelectorOperator::In, &["prod", "stage"]).matches(&labels));
        assert!(!req("env", SelectorOperator::NotIn, &["prod"]).matches(&labels));
        assert!(req("team", SelectorOperator::NotIn, &["x"]).matches(&labels));
        assert!(req("env", SelectorOperator::Exists, &[]).matches(&labels));
        assert!(!req("env", SelectorOperator::DoesNotExist, &[]).matches(&labels));
        assert!(validate_selector(&req("env", SelectorOperator::In, &[])).is_err());
        assert!(validate_selector(&req("env", SelectorOperator::Exists, &["x"])).is_err());
        assert!(validate_selector(&req("bad key!", SelectorOperator::Exists, &[])).is_err());
    }

    #[test]
    fn invalid_definitions_are_refused_with_their_reason() {
        assert!(matches!(Role::new("r", [], None), Err(AccessError::EmptyRole(_))));
        assert!(matches!(Role::new("r", [], Some(LabelSelector::default())), Err(AccessError::EmptyRole(_))));
        assert!(matches!(
            Role::new("Bad_Name", [ClusterId::new("a").unwrap()], None),
            Err(AccessError::Name { kind: "role", .. })
        ));
        assert!(matches!(RoleBinding::new("b", "r", []), Err(AccessError::NoSubjects(_))));
        assert!("alice".parse::<Subject>().is_err());
        assert!("user:".parse::<Subject>().is_err());
        assert!("user:a\nb".parse::<Subject>().is_err());
        assert_eq!("group:ops".parse::<Subject>().unwrap(), Subject::Group("ops".to_owned()));
        let json = serde_json::to_string(&Subject::user("x:y").unwrap()).unwrap();
        assert_eq!(json, "\"user:x:y\"");
        assert_eq!(serde_json::from_str::<Subject>(&json).unwrap(), Subject::User("x:y".to_owned()));
    }

    #[test]
    fn api_keys_are_stored_hashed_and_checked() {
        let (record, key) = ApiKeyRecord::create("ci", None, ["ops"], [1; 8], [2; 32], crate::Timestamp(5)).unwrap();
        assert!(!record.secret_sha256.contains(&"02".repeat(32)));
        assert_eq!(record.subject, "apikey:ci");
        let presented = PresentedKey::parse(&key).unwrap();
        assert_eq!(presented.id, record.id);
        assert!(presented.matches(&record));
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push('f');
        assert!(!PresentedKey::parse(&wrong).unwrap().matches(&record));
        assert!(PresentedKey::parse("omk_zz_yy").is_none());
        assert!(PresentedKey::parse("eyJhbGciOi.x.y").is_none());
        assert!(!format!("{presented:?}").contains(&"02".repeat(4)));
        assert_eq!(record.caller(), Caller::new("apikey:ci", ["ops"]));
    }
}
