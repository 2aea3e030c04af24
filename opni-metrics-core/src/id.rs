//! Validated identifiers: cluster ids (Cortex tenants), capability names, revisions and
//! timestamps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest cluster id accepted: Cortex's limit on a tenant id.
pub const MAX_CLUSTER_ID_LEN: usize = 150;

/// The longest capability name accepted.
pub const MAX_CAPABILITY_NAME_LEN: usize = 63;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier was empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// The identifier was longer than allowed.
    #[error("{kind} is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The identifier contained a character outside its alphabet.
    #[error("{kind} contains {found:?} at byte {index}, allowed are {allowed}")]
    BadChar {
        /// Which kind of identifier.
        kind: &'static str,
        /// The refused character.
        found: char,
        /// Its byte offset.
        index: usize,
        /// A description of the allowed characters.
        allowed: &'static str,
    },
    /// The identifier is one of the reserved values.
    #[error("{kind} must not be {value:?}")]
    Reserved {
        /// Which kind of identifier.
        kind: &'static str,
        /// The reserved value that was given.
        value: String,
    },
}

/// The id of a downstream cluster; it is also its Cortex tenant id (`X-Scope-OrgID`).
///
/// # Guarantees
/// A `ClusterId` is 1..=150 bytes of `[A-Za-z0-9!_.*'()-]`, and is neither `.` nor `..`, so it
/// is always a valid Cortex tenant id and never contains the multi-tenant separator `|`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

const CLUSTER_ID_ALLOWED: &str = "ASCII letters, digits and !-_.*'()";

impl ClusterId {
    /// Validates `s` as a cluster id.
    ///
    /// # Errors
    /// [`IdError`] naming the first rule `s` breaks.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        const KIND: &str = "cluster id";
        if s.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if s.len() > MAX_CLUSTER_ID_LEN {
            return Err(IdError::TooLong { kind: KIND, len: s.len(), max: MAX_CLUSTER_ID_LEN });
        }
        if let Some((index, found)) = s.char_indices().find(|&(_, c)| !is_tenant_char(c)) {
            return Err(IdError::BadChar { kind: KIND, found, index, allowed: CLUSTER_ID_ALLOWED });
        }
        if s == "." || s == ".." {
            return Err(IdError::Reserved { kind: KIND, value: s });
        }
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

impl TryFrom<String> for ClusterId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ClusterId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> String {
        id.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a capability a cluster can have installed, such as `metrics`.
///
/// # Guarantees
/// 1..=63 bytes of lowercase ASCII letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapabilityName(String);

impl CapabilityName {
    /// The name of the capability this project implements.
    pub const METRICS: &'static str = "metrics";

    /// Validates `s` as a capability name.
    ///
    /// # Errors
    /// [`IdError`] naming the first rule `s` breaks.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        const KIND: &str = "capability name";
        const ALLOWED: &str = "lowercase ASCII letters, digits and '-', starting with a letter";
        if s.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if s.len() > MAX_CAPABILITY_NAME_LEN {
            return Err(IdError::TooLong { kind: KIND, len: s.len(), max: MAX_CAPABILITY_NAME_LEN });
        }
        for (index, c) in s.char_indices() {
            let ok = c.is_ascii_lowercase() || (index > 0 && (c.is_ascii_digit() || c == '-'));
            if !ok {
                return Err(IdError::BadChar { kind: KIND, found: c, index, allowed: ALLOWED });
            }
        }
        Ok(Self(s))
    }

    /// The `metrics` capability.
    pub fn metrics() -> Self {
        Self(Self::METRICS.to_owned())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CapabilityName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for CapabilityName {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<CapabilityName> for String {
    fn from(n: CapabilityName) -> String {
        n.0
    }
}

impl fmt::Display for CapabilityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store revision: every write to a [`Store`](crate::store::Store) gets a larger one.
///
/// `Revision::ZERO` means "never written"; a compare-and-put against it succeeds only when the key
/// is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of something never written.
    pub const ZERO: Revision = Revision(0);

    /// The next revision.
    #[must_use]
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time as milliseconds since the Unix epoch, or, for the state machines, since any
/// fixed origin of a monotonic clock. Core never reads a clock: callers pass time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the origin.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn after(self, d: std::time::Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_follow_cortex_tenant_rules() {
        for ok in ["a", "cluster-1", "A.b_c!*'()", &"x".repeat(150)] {
            assert!(ClusterId::new(ok).is_ok(), "{ok} should be valid");
        }
        assert_eq!(ClusterId::new(""), Err(IdError::Empty { kind: "cluster id" }));
        assert!(matches!(ClusterId::new("x".repeat(151)), Err(IdError::TooLong { len: 151, .. })));
        assert!(matches!(ClusterId::new("a|b"), Err(IdError::BadChar { found: '|', index: 1, .. })));
        assert!(matches!(ClusterId::new("a/b"), Err(IdError::BadChar { found: '/', .. })));
        assert!(matches!(ClusterId::new("é"), Err(IdError::BadChar { found: 'é', .. })));
        assert!(matches!(ClusterId::new("."), Err(IdError::Reserved { .. })));
        assert!(matches!(ClusterId::new(".."), Err(IdError::Reserved { .. })));
        assert!(ClusterId::new("...").is_ok());
    }

    #[test]
    fn cluster_id_errors_name_the_problem() {
        let e = ClusterId::new("bad tenant").unwrap_err();
        assert_eq!(e.to_string(), "cluster id contains ' ' at byte 3, allowed are ASCII letters, digits and !-_.*'()");
    }

    #[test]
    fn cluster_id_deserialization_validates() {
        let ok: Result<ClusterId, _> = serde_json::from_str("\"c1\"");
        assert!(ok.is_ok());
        let bad: Result<ClusterId, _> = serde_json::from_str("\"a|b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn capability_names() {
        assert_eq!(CapabilityName::metrics().as_str(), "metrics");
        assert!(CapabilityName::new("logs-2").is_ok());
        assert!(CapabilityName::new("2logs").is_err());
        assert!(CapabilityName::new("Metrics").is_err());
        assert!(CapabilityName::new("").is_err());
        assert!(CapabilityName::new("a".repeat(64)).is_err());
    }

    #[test]
    fn timestamps() {
        let t = Timestamp(1_000);
        assert_eq!(t.after(std::time::Duration::from_secs(1)), Timestamp(2_000));
        assert_eq!(Timestamp(500).since(t), std::time::Duration::ZERO);
        assert_eq!(Revision::ZERO.next(), Revision(1));
    }
}
