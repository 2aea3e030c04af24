//! Canonical digests of node configurations.
//!
//! The digest is SHA-256 over a canonical JSON encoding: object keys sorted bytewise, `null`
//! members omitted, no whitespace, lists whose order carries no meaning sorted first (see
//! [`MetricsCapabilitySpec::normalized`](crate::spec::MetricsCapabilitySpec::normalized)), and a
//! domain-separation prefix. It therefore does not depend on struct field order, map iteration
//! order, serde_json features, process or platform; and adding an optional field that is unset
//! leaves every digest unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not 64 lowercase hex digits.
    #[error("digest must be 64 lowercase hex digits, got {len} characters")]
    Malformed {
        /// The length of what was given.
        len: usize,
    },
}

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses 64 lowercase hex digits.
    ///
    /// # Errors
    /// [`DigestError::Malformed`].
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let bad = || DigestError::Malformed { len: s.chars().count() };
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(bad)?;
            let lo = hex_val(pair[1]).ok_or_else(bad)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The digest of `domain` followed by the canonical JSON encoding of `value`.
    ///
    /// # Errors
    /// Only if `value`'s `Serialize` implementation fails (it does not for this crate's types).
    pub fn of_canonical<T: Serialize>(domain: &str, value: &T) -> Result<Self, serde_json::Error> {
        let v = serde_json::to_value(value)?;
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(domain.as_bytes());
        buf.push(b'\n');
        write_canonical(&v, &mut buf);
        Ok(Self(Sha256::digest(&buf).into()))
    }
}

/// `bytes` as lowercase hex digits, two per byte (the form of [`Digest`]'s `Display`).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Writes `v` as canonical JSON: sorted keys, nulls in objects omitted, no whitespace.
pub(crate) fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !v.is_null()).collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; reuse it.
    let escaped = Value::String(s.to_owned()).to_string();
    out.extend_from_slice(escaped.as_bytes());
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_nulls() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":null,"y":[true,"x\"y"]},"c":null}"#).unwrap();
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":{"y":[true,"x\"y"]},"b":1}"#);
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Digest::of_canonical("t", &1u8).unwrap();
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse("abc"), Err(DigestError::Malformed { len: 3 }));
        assert!(Digest::parse(&"G".repeat(64)).is_err());
        assert!(Digest::parse(&"A".repeat(64)).is_err(), "uppercase is not canonical");
    }

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let d = Digest::of_canonical("t", &1u8).unwrap();
        assert_eq!(hex(d.as_bytes()), d.to_string());
    }

    #[test]
    fn domain_separates() {
        assert_ne!(Digest::of_canonical("a", &1u8).unwrap(), Digest::of_canonical("b", &1u8).unwrap());
    }
}
