//! Timestamps and durations.

use super::*;

#[test]
fn durations_must_be_whole_non_negative_milliseconds() {
    let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
    assert_eq!(prom_duration("x", &d(1, 500_000_000)).unwrap(), PromDuration::from_millis(1_500));
    assert!(matches!(prom_duration("x", &d(1, 1)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(prom_duration("x", &d(-1, 0)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(prom_duration("x", &d(0, -1_000_000)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(prom_duration("x", &d(0, 1_000_000_000)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(prom_duration("x", &d(i64::MAX, 0)), Err(ConvertError::OutOfRange { reason: "too long", .. })));

    let mut config = wire_config();
    queue(&mut config).min_backoff = Some(d(0, 1_500));
    assert_eq!(
        NodeConfig::try_from(config).unwrap_err(),
        ConvertError::OutOfRange {
            field: "spec.prometheus.queue.minBackoff".into(),
            reason: "must be a whole number of milliseconds"
        }
    );

    assert_eq!(std_duration("x", &d(2, 5)).unwrap(), std::time::Duration::new(2, 5));
    assert!(std_duration("x", &d(-2, 0)).is_err());
    let std = std::time::Duration::new(3, 7);
    assert_eq!(std_duration("x", &wire_std_duration(std)).unwrap(), std);
    assert_eq!(wire_std_duration(std::time::Duration::MAX).seconds, i64::MAX);
}

#[test]
fn timestamps_are_unix_milliseconds() {
    let t = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
    assert_eq!(timestamp("t", &t(1, 2_999_999)).unwrap(), Timestamp(1_002), "sub-millisecond digits are dropped");
    assert_eq!(wire_timestamp(Timestamp(1_002)), t(1, 2_000_000));
    assert_eq!(timestamp("t", &wire_timestamp(Timestamp(u64::MAX))).unwrap(), Timestamp(u64::MAX));
    assert!(matches!(timestamp("t", &t(-1, 0)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(timestamp("t", &t(0, 1_000_000_000)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(timestamp("t", &t(0, -1)), Err(ConvertError::OutOfRange { .. })));
    assert!(matches!(
        timestamp("t", &t(i64::MAX, 0)),
        Err(ConvertError::OutOfRange { reason: "too far in the future", .. })
    ));
}
