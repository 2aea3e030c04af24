#![allow(clippy::unwrap_used)]

use super::*;

// a minimal protobuf encoder for test bodies
fn tag(field: u64, wire: u64, out: &mut Vec<u8>) {
    uvarint((field << 3) | wire, out);
}
fn uvarint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}
fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    uvarint(b.len() as u64, out);
    out.extend_from_slice(b);
}
fn double(field: u64, x: f64, out: &mut Vec<u8>) {
    tag(field, 1, out);
    out.extend_from_slice(&x.to_le_bytes());
}
fn int_field(field: u64, x: u64, out: &mut Vec<u8>) {
    tag(field, 0, out);
    uvarint(x, out);
}
fn zz(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn sample() -> Vec<u8> {
    let mut s = Vec::new();
    double(1, 1.5, &mut s);
    int_field(2, 1_700_000_000_000, &mut s);
    s
}

fn v1_series(labels: &[(&str, &str)], extra: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut ts = Vec::new();
    for (n, v) in labels {
        let mut l = Vec::new();
        bytes_field(1, n.as_bytes(), &mut l);
        bytes_field(2, v.as_bytes(), &mut l);
        bytes_field(1, &l, &mut ts);
    }
    bytes_field(2, &sample(), &mut ts);
    for (f, b) in extra {
        bytes_field(*f, b, &mut ts);
    }
    let mut req = Vec::new();
    bytes_field(1, &ts, &mut req);
    req
}

fn v1(labels: &[(&str, &str)]) -> Result<(), ValidateError> {
    validate_body(&v1_series(labels, &[]), Version::V1)
}

#[test]
fn v1_labels_follow_the_spec() {
    assert_eq!(v1(&[("__name__", "up"), ("job", "x")]), Ok(()));
    assert_eq!(v1(&[("job", "x")]).unwrap_err().reason, "no __name__ label with a value");
    assert_eq!(v1(&[("__name__", "")]).unwrap_err().reason, "no __name__ label with a value");
    let e = v1(&[("__name__", "up"), ("b", "1"), ("a", "2")]).unwrap_err();
    assert_eq!(e.path, "timeseries[0].labels[2].name");
    assert!(e.reason.contains("not sorted"));
    assert!(v1(&[("__name__", "up"), ("a", "1"), ("a", "2")]).unwrap_err().reason.contains("twice"));
    assert!(v1(&[("__name__", "up"), ("bad-name", "1")]).unwrap_err().reason.contains("not a valid label name"));
    assert_eq!(v1(&[("", "x"), ("__name__", "up")]).unwrap_err().reason, "empty label name");
    // invalid UTF-8 in a value
    let mut body = v1_series(&[("__name__", "up")], &[]);
    let i = body.iter().rposition(|b| *b == b'p').unwrap();
    body[i] = 0xff;
    assert!(validate_body(&body, Version::V1).unwrap_err().reason.contains("UTF-8"));
}

fn histogram(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut h = Vec::new();
    f(&mut h);
    h
}

fn span(offset: i64, length: u64) -> Vec<u8> {
    let mut s = Vec::new();
    int_field(1, zz(offset), &mut s);
    int_field(2, length, &mut s);
    s
}

fn packed_sint(xs: &[i64]) -> Vec<u8> {
    let mut b = Vec::new();
    for x in xs {
        uvarint(zz(*x), &mut b);
    }
    b
}

fn v1_hist(h: Vec<u8>) -> Result<(), ValidateError> {
    validate_body(&v1_series(&[("__name__", "h")], &[(4, h)]), Version::V1)
}

#[test]
fn histograms_are_well_formed() {
    let good = histogram(|h| {
        int_field(1, 5, h);
        int_field(4, zz(3), h);
        int_field(6, 1, h);
        bytes_field(11, &span(0, 2), h);
        bytes_field(11, &span(1, 1), h);
        bytes_field(12, &packed_sint(&[1, 2, -1]), h);
    });
    assert_eq!(v1_hist(good), Ok(()));
    let short = histogram(|h| {
        int_field(1, 5, h);
        bytes_field(11, &span(0, 3), h);
        bytes_field(12, &packed_sint(&[1]), h);
    });
    assert!(v1_hist(short).unwrap_err().reason.contains("cover 3 buckets but 1"));
    let both = histogram(|h| {
        int_field(1, 5, h);
        double(2, 5.0, h);
    });
    assert!(v1_hist(both).unwrap_err().reason.contains("both an integer and a float count"));
    let schema = histogram(|h| int_field(4, zz(9), h));
    assert_eq!(v1_hist(schema).unwrap_err().path, "timeseries[0].histograms[0].schema");
    let custom = histogram(|h| {
        int_field(4, zz(-53), h);
        tag(16, 2, h);
        uvarint(16, h);
        h.extend_from_slice(&2.0f64.to_le_bytes());
        h.extend_from_slice(&1.0f64.to_le_bytes());
    });
    assert!(v1_hist(custom).unwrap_err().reason.contains("strictly increasing"));
    let negative_later = histogram(|h| {
        bytes_field(11, &span(0, 1), h);
        bytes_field(11, &span(-1, 1), h);
        bytes_field(12, &packed_sint(&[1, 1]), h);
    });
    assert!(v1_hist(negative_later).unwrap_err().reason.contains("negative offset"));
}

fn v2_body(symbols: &[&str], refs: &[u64]) -> Vec<u8> {
    let mut req = Vec::new();
    for s in symbols {
        bytes_field(4, s.as_bytes(), &mut req);
    }
    let mut ts = Vec::new();
    let mut packed = Vec::new();
    for r in refs {
        uvarint(*r, &mut packed);
    }
    bytes_field(1, &packed, &mut ts);
    bytes_field(2, &sample(), &mut ts);
    bytes_field(5, &ts, &mut req);
    req
}

#[test]
fn v2_symbols_and_references() {
    let syms = ["", "__name__", "up", "job", "x"];
    assert_eq!(validate_body(&v2_body(&syms, &[1, 2, 3, 4]), Version::V2), Ok(()));
    let e = validate_body(&v2_body(&syms, &[1, 2, 3, 9]), Version::V2).unwrap_err();
    assert_eq!(e.path, "timeseries[0].labels_refs[3]");
    assert!(e.reason.contains("out of range"));
    assert!(validate_body(&v2_body(&syms, &[1, 2, 3]), Version::V2).unwrap_err().reason.contains("pairs"));
    assert!(
        validate_body(&v2_body(&["x", "__name__", "up"], &[1, 2]), Version::V2)
            .unwrap_err()
            .reason
            .contains("empty string")
    );
    assert_eq!(validate_body(&v2_body(&syms, &[0, 2, 1, 2]), Version::V2).unwrap_err().reason, "empty label name");
    assert!(validate_body(&v2_body(&syms, &[3, 4, 1, 2]), Version::V2).unwrap_err().reason.contains("not sorted"));
    // UTF-8 label names are allowed in 2.0
    assert_eq!(
        validate_body(&v2_body(&["", "__name__", "up", "ünïcode.name", "x"], &[1, 2, 3, 4]), Version::V2),
        Ok(())
    );
    // truncated input is malformed, not a panic
    let body = v2_body(&syms, &[1, 2, 3, 4]);
    for cut in 0..body.len() {
        let _ = validate_body(&body[..cut], Version::V2);
        let _ = validate_body(&body[..cut], Version::V1);
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_are_answered_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = validate_body(&body, Version::V1);
        let _ = validate_body(&body, Version::V2);
    }

    #[test]
    fn sorted_unique_valid_labels_pass(names in proptest::collection::btree_set("[a-z_][a-z0-9_]{0,8}", 0..6)) {
        let mut labels: Vec<(String, String)> = names.into_iter().filter(|n| n != "__name__").map(|n| (n, "v".into())).collect();
        labels.push(("__name__".into(), "m".into()));
        labels.sort();
        let refs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        proptest::prop_assert_eq!(v1(&refs), Ok(()));
    }
}
