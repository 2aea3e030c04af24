//! Prometheus-style durations (`30s`, `1m30s`, `500ms`) as they appear in node specs.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration")]
    Empty,
    /// Not of the form `<int><unit>...` with units `ms`, `s`, `m`, `h`, `d`, `w`, `y`.
    #[error("{input:?} is not a duration like 30s, 1m30s or 500ms")]
    Syntax {
        /// The refused text.
        input: String,
    },
    /// Larger than this type can hold.
    #[error("{input:?} is too long a duration")]
    Overflow {
        /// The refused text.
        input: String,
    },
}

/// A non-negative duration with millisecond precision, written the way Prometheus writes
/// durations. Serialises to its canonical form (`1m30s`, never `90s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromDuration(u64);

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl PromDuration {
    /// From whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(s * 1_000)
    }

    /// In milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// As a std duration.
    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// Parses `30s`, `1h30m`, `500ms`, `0s`; units must appear largest first, at most once.
    ///
    /// # Errors
    /// [`DurationError`] naming the input.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        if input.is_empty() {
            return Err(DurationError::Empty);
        }
        let syntax = || DurationError::Syntax { input: input.to_owned() };
        let overflow = || DurationError::Overflow { input: input.to_owned() };
        let mut rest = input;
        let mut total: u64 = 0;
        let mut last_unit = 0usize; // index into UNITS of the next allowed unit
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(syntax());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            rest = &rest[digits..];
            // longest unit name first so "ms" is not read as "m"
            let found = UNITS
                .iter()
                .enumerate()
                .skip(last_unit)
                .filter(|(_, (u, _))| rest.starts_with(u))
                .max_by_key(|(_, (u, _))| u.len());
            let Some((i, (u, ms))) = found else { return Err(syntax()) };
            rest = &rest[u.len()..];
            last_unit = i + 1;
            total = n.checked_mul(*ms).and_then(|v| total.checked_add(v)).ok_or_else(overflow)?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (u, ms) in UNITS {
            if rest >= ms {
                write!(f, "{}{u}", rest / ms)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for PromDuration {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        Self::parse(&s)
    }
}

impl From<PromDuration> for String {
    fn from(d: PromDuration) -> String {
        d.to_string()
    }
}

impl From<Duration> for PromDuration {
    fn from(d: Duration) -> Self {
        Self(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(PromDuration::parse("30s").unwrap().as_millis(), 30_000);
        assert_eq!(PromDuration::parse("1m30s").unwrap().as_millis(), 90_000);
        assert_eq!(PromDuration::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(PromDuration::parse("1h0m5ms").unwrap().as_millis(), 3_600_005);
        assert_eq!(PromDuration::parse("0s").unwrap().as_millis(), 0);
        for bad in ["", "s", "30", "1s1m", "1s1s", "-1s", "1.5s", "1 s", "1x"] {
            assert!(PromDuration::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(PromDuration::parse("99999999999999999999y"), Err(DurationError::Overflow { .. })));
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(PromDuration::from_secs(90).to_string(), "1m30s");
        assert_eq!(PromDuration::from_millis(0).to_string(), "0s");
        assert_eq!(PromDuration::from_millis(1_500).to_string(), "1s500ms");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(ms in 0u64..=(10 * 365 * 24 * 3_600_000)) {
            let d = PromDuration::from_millis(ms);
            prop_assert_eq!(PromDuration::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = PromDuration::parse(&s);
        }
    }
}
