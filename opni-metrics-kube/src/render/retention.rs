//! Prometheus durations (`30d`, `1w`, `1h30m`, `0s`) and their conversion to the form we write
//! into Cortex's config.

const MS_PER_SECOND: u64 = 1000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;

/// Units in the order Prometheus requires them (largest first, each at most once).
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * MS_PER_HOUR),
    ("w", 7 * 24 * MS_PER_HOUR),
    ("d", 24 * MS_PER_HOUR),
    ("h", MS_PER_HOUR),
    ("m", MS_PER_MINUTE),
    ("s", MS_PER_SECOND),
    ("ms", 1),
];

/// Parses a Prometheus duration into milliseconds, as Prometheus's `model.ParseDuration` does:
/// one or more `<digits><unit>` terms, units largest first and not repeated.
pub(crate) fn parse_ms(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("not a duration: {s:?} (expected e.g. 30d, 12h, 1h30m)"));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_lowercase).count();
        let (unit, after) = after.split_at(letters);
        let idx = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| format!("not a duration: {s:?} (units are y, w, d, h, m, s, ms)"))?;
        if last_unit.is_some_and(|last| idx <= last) {
            return Err(format!("not a duration: {s:?} (units must be largest first, each once)"));
        }
        last_unit = Some(idx);
        let n: u64 = number.parse().map_err(|_| format!("duration out of range: {s:?}"))?;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        rest = after;
    }
    Ok(total)
}

/// The CRD's default retention, also used for an empty `retention` (what a spec built in Rust
/// with `Default` holds).
const DEFAULT_RETENTION: &str = "30d";

/// The retention as written to `compactor_blocks_retention_period`: whole hours where possible
/// (`30d` → `720h`), else the largest unit dividing it; `0s` (keep forever) stays `0s`.
pub(crate) fn retention_period(s: &str) -> Result<String, String> {
    let ms = parse_ms(if s.is_empty() { DEFAULT_RETENTION } else { s })?;
    Ok(match ms {
        0 => "0s".to_owned(),
        ms if ms % MS_PER_HOUR == 0 => format!("{}h", ms / MS_PER_HOUR),
        ms if ms % MS_PER_MINUTE == 0 => format!("{}m", ms / MS_PER_MINUTE),
        ms if ms % MS_PER_SECOND == 0 => format!("{}s", ms / MS_PER_SECOND),
        ms => format!("{ms}ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_hours() {
        assert_eq!(retention_period("30d").as_deref(), Ok("720h"));
        assert_eq!(retention_period("1w").as_deref(), Ok("168h"));
        assert_eq!(retention_period("1y").as_deref(), Ok("8760h"));
        assert_eq!(retention_period("1d12h").as_deref(), Ok("36h"));
        assert_eq!(retention_period("720h").as_deref(), Ok("720h"));
        assert_eq!(retention_period("90m").as_deref(), Ok("90m"));
        assert_eq!(retention_period("1h30s").as_deref(), Ok("3630s"));
        assert_eq!(retention_period("1500ms").as_deref(), Ok("1500ms"));
        assert_eq!(retention_period("").as_deref(), Ok("720h"), "empty is the default");
    }

    #[test]
    fn zero_keeps_forever() {
        assert_eq!(retention_period("0s").as_deref(), Ok("0s"));
        assert_eq!(retention_period("0d").as_deref(), Ok("0s"));
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [" ", "30", "d", "30x", "1.5h", "-1d", "30m1h", "1h1h", "30 d", "30D", "99999999999999999999y"] {
            assert!(retention_period(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
