//! Points in time on the command line: parsing `--time`/`--start`/`--end` and printing
//! timestamps as RFC 3339.
//!
//! The calendar arithmetic is jiff's (re-exported by k8s-openapi, which this crate already
//! depends on), so no date code of our own needs testing beyond the forms we accept.

use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};
use k8s_openapi::jiff::Timestamp;

/// The current time.
pub(super) fn now() -> Result<Timestamp> {
    let d =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_err(|_| anyhow!("the clock is before 1970"))?;
    from_unix(d)
}

fn from_unix(d: Duration) -> Result<Timestamp> {
    let secs = i64::try_from(d.as_secs()).map_err(|_| anyhow!("time out of range"))?;
    let nanos = i32::try_from(d.subsec_nanos()).map_err(|_| anyhow!("time out of range"))?;
    Timestamp::new(secs, nanos).map_err(|e| anyhow!("time out of range: {e}"))
}

/// Parses `now`, `-1h` / `now-1h30m` (before `now`), unix seconds (`1714564800`,
/// `1714564800.25`) or RFC 3339 (`2024-05-01T12:00:00Z`, `…+02:00`). `flag` names the option in
/// errors.
pub(super) fn parse(flag: &str, s: &str, now: Timestamp) -> Result<Timestamp> {
    let s = s.trim();
    let bad = || {
        anyhow!(
            "{flag} {s:?}: expected RFC 3339 (2024-05-01T12:00:00Z), unix seconds (1714564800), now, or a time \
             before now such as -1h or now-30m"
        )
    };
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) {
        let d = opni_metrics_core::duration::PromDuration::parse(ago).map_err(|e| anyhow!("{flag} {s:?}: {e}"))?;
        return now.checked_sub(d.as_duration()).map_err(|_| anyhow!("{flag} {s:?}: before the earliest time"));
    }
    if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 9 || frac.contains('.') {
            return Err(bad());
        }
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
        return from_unix(Duration::new(secs, nanos)).map_err(|e| anyhow!("{flag} {s:?}: {e}"));
    }
    let t: Timestamp = s.parse().map_err(|_| bad())?;
    if t.as_second() < 0 {
        bail!("{flag} {s:?}: before 1970");
    }
    Ok(t)
}

/// As a protobuf timestamp (never before 1970, see [`parse`]).
pub(super) fn wire(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

/// A protobuf timestamp as RFC 3339 in UTC.
pub(super) fn show(t: &prost_types::Timestamp) -> String {
    Timestamp::new(t.seconds, t.nanos).map_or_else(|_| format!("{}s", t.seconds), |t| t.to_string())
}

/// Prometheus API seconds (a JSON number such as `1714564800.123`) as RFC 3339 in UTC,
/// to the millisecond.
pub(super) fn show_unix(secs: f64) -> String {
    let ms = (secs * 1000.0).round();
    if !ms.is_finite() || ms.abs() > 9.0e15 {
        return secs.to_string();
    }
    #[allow(clippy::cast_possible_truncation)] // bounded just above
    Timestamp::from_millisecond(ms as i64).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// The default step of a range query: about 250 points, whole seconds, at least one.
pub(super) fn default_step(start: Timestamp, end: Timestamp) -> Duration {
    let range = end.duration_since(start).as_secs_f64().max(0.0);
    Duration::from_secs(((range / 250.0).ceil() as u64).max(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn accepts_every_documented_form() {
        let now = at(1_714_564_800);
        assert_eq!(parse("--time", "now", now).unwrap(), now);
        assert_eq!(parse("--time", "-1h", now).unwrap(), at(1_714_564_800 - 3600));
        assert_eq!(parse("--time", "now-1h30m", now).unwrap(), at(1_714_564_800 - 5400));
        assert_eq!(parse("--time", "1714564800", now).unwrap(), at(1_714_564_800));
        assert_eq!(parse("--time", "1714564800.25", now).unwrap(), Timestamp::new(1_714_564_800, 250_000_000).unwrap());
        assert_eq!(parse("--time", "2024-05-01T12:00:00Z", now).unwrap(), at(1_714_564_800));
        assert_eq!(parse("--time", "2024-05-01T14:00:00+02:00", now).unwrap(), at(1_714_564_800));
    }

    #[test]
    fn refuses_the_rest_naming_the_flag() {
        let now = at(1_714_564_800);
        for bad in ["", "yesterday", "2024-05-01", "2024-05-01T12:00:00", "1.2.3", "-1x", "1969-12-31T23:59:59Z"] {
            let e = parse("--start", bad, now).unwrap_err().to_string();
            assert!(e.starts_with("--start"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn shows_rfc3339_and_round_trips_the_wire_form() {
        assert_eq!(show_unix(1_714_564_800.5), "2024-05-01T12:00:00.5Z");
        assert_eq!(show(&wire(at(1_714_564_800))), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn default_step_gives_about_250_points() {
        assert_eq!(default_step(at(0), at(3600)), Duration::from_secs(15));
        assert_eq!(default_step(at(0), at(10)), Duration::from_secs(1));
        assert_eq!(default_step(at(0), at(86_400)), Duration::from_secs(346));
    }
}
