//! Timestamps and durations: `google.protobuf.Timestamp` ↔ core [`Timestamp`] (Unix
//! milliseconds), `google.protobuf.Duration` ↔ [`PromDuration`] (milliseconds) and
//! [`std::time::Duration`].

use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::id::Timestamp;

use super::ConvertError;

const NANOS_PER_SEC: i32 = 1_000_000_000;
const NANOS_PER_MILLI: i32 = 1_000_000;

fn out_of_range(field: &str, reason: &'static str) -> ConvertError {
    ConvertError::OutOfRange { field: field.to_owned(), reason }
}

/// Converts a wire timestamp to Unix milliseconds, dropping sub-millisecond digits.
///
/// # Errors
/// [`ConvertError::OutOfRange`] for a time before the Unix epoch, nanos outside
/// `0..1_000_000_000`, or a time too far in the future for `u64` milliseconds.
pub fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, ConvertError> {
    if t.seconds < 0 {
        return Err(out_of_range(field, "before the Unix epoch"));
    }
    if !(0..NANOS_PER_SEC).contains(&t.nanos) {
        return Err(out_of_range(field, "nanos must be within 0..1000000000"));
    }
    let secs = u64::try_from(t.seconds).map_err(|_| out_of_range(field, "before the Unix epoch"))?;
    let sub_ms = u64::try_from(t.nanos / NANOS_PER_MILLI).unwrap_or(0);
    secs.checked_mul(1_000)
        .and_then(|ms| ms.checked_add(sub_ms))
        .map(Timestamp)
        .ok_or_else(|| out_of_range(field, "too far in the future"))
}

/// The wire form of a core timestamp.
pub fn wire_timestamp(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        // u64::MAX / 1000 < i64::MAX, so the conversion never saturates.
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        nanos: millis_part_as_nanos(ms),
    }
}

/// Converts a wire duration to a [`PromDuration`].
///
/// # Errors
/// [`ConvertError::OutOfRange`] for a negative duration, nanos outside
/// `-999_999_999..=999_999_999`, or a duration that is not a whole number of milliseconds (a
/// spec is never silently rounded).
pub fn prom_duration(field: &str, d: &prost_types::Duration) -> Result<PromDuration, ConvertError> {
    let (secs, nanos) = non_negative(field, d)?;
    if nanos % NANOS_PER_MILLI != 0 {
        return Err(out_of_range(field, "must be a whole number of milliseconds"));
    }
    let sub_ms = u64::try_from(nanos / NANOS_PER_MILLI).unwrap_or(0);
    secs.checked_mul(1_000)
        .and_then(|ms| ms.checked_add(sub_ms))
        .map(PromDuration::from_millis)
        .ok_or_else(|| out_of_range(field, "too long"))
}

/// The wire form of a [`PromDuration`].
pub fn wire_duration(d: PromDuration) -> prost_types::Duration {
    let ms = d.as_millis();
    prost_types::Duration { seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX), nanos: millis_part_as_nanos(ms) }
}

/// Converts a wire duration to a [`std::time::Duration`], exactly.
///
/// # Errors
/// [`ConvertError::OutOfRange`] for a negative duration or nanos outside
/// `-999_999_999..=999_999_999`.
pub fn std_duration(field: &str, d: &prost_types::Duration) -> Result<std::time::Duration, ConvertError> {
    let (secs, nanos) = non_negative(field, d)?;
    Ok(std::time::Duration::new(secs, u32::try_from(nanos).unwrap_or(0)))
}

/// The wire form of a [`std::time::Duration`], saturating at the largest wire duration.
pub fn wire_std_duration(d: std::time::Duration) -> prost_types::Duration {
    match i64::try_from(d.as_secs()) {
        Ok(seconds) => prost_types::Duration { seconds, nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0) },
        Err(_) => prost_types::Duration { seconds: i64::MAX, nanos: NANOS_PER_SEC - 1 },
    }
}

/// Seconds and nanos of a duration that must not be negative.
fn non_negative(field: &str, d: &prost_types::Duration) -> Result<(u64, i32), ConvertError> {
    if !(-(NANOS_PER_SEC - 1)..NANOS_PER_SEC).contains(&d.nanos) {
        return Err(out_of_range(field, "nanos must be within -999999999..=999999999"));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(out_of_range(field, "must not be negative"));
    }
    let secs = u64::try_from(d.seconds).map_err(|_| out_of_range(field, "must not be negative"))?;
    Ok((secs, d.nanos))
}

fn millis_part_as_nanos(ms: u64) -> i32 {
    // (ms % 1000) * 1_000_000 < 1e9 always fits an i32.
    i32::try_from((ms % 1_000) * 1_000_000).unwrap_or(0)
}
