use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits { max_body_bytes: 1 << 20, max_decoded_bytes: 4 << 20 }
}

fn v1() -> RequestHead<'static> {
    RequestHead { content_type: Some("application/x-protobuf"), content_encoding: Some("snappy") }
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

#[test]
fn accepts_v1_and_v2_bodies() {
    let body = snappy(&[7u8; 1000]);
    assert_eq!(check(&v1(), &body, &limits()), Ok(Checked::Body { version: Version::V1, decoded_len: 1000 }));
    let v2 = RequestHead { content_type: Some(Version::V2.content_type()), content_encoding: Some("snappy") };
    assert_eq!(check(&v2, &body, &limits()), Ok(Checked::Body { version: Version::V2, decoded_len: 1000 }));
    let v1_explicit = RequestHead {
        content_type: Some("application/x-protobuf; proto=prometheus.WriteRequest"),
        content_encoding: None,
    };
    assert!(matches!(check(&v1_explicit, &body, &limits()), Ok(Checked::Body { version: Version::V1, .. })));
    assert!(matches!(check(&RequestHead::default(), &body, &limits()), Ok(Checked::Body { version: Version::V1, .. })));
}

#[test]
fn empty_body_is_a_probe() {
    assert_eq!(check(&v1(), &[], &limits()), Ok(Checked::Empty));
}

#[test]
fn wrong_types_and_encodings_are_415() {
    for ct in ["application/json", "text/plain", "application/x-protobuf;proto=foo.Bar", "application/x-protobuf;junk"]
    {
        let h = RequestHead { content_type: Some(ct), content_encoding: Some("snappy") };
        let e = check(&h, b"\x01a", &limits()).unwrap_err();
        assert_eq!(e.status(), 415, "{ct}: {e}");
    }
    for enc in ["gzip", "zstd", "identity", ""] {
        let h = RequestHead { content_type: None, content_encoding: Some(enc) };
        assert_eq!(check(&h, b"\x01a", &limits()).unwrap_err().status(), 415, "{enc}");
    }
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    let l = Limits { max_body_bytes: 100, max_decoded_bytes: 1000 };
    assert_eq!(check(&v1(), &[0u8; 101], &l).unwrap_err().status(), 413);
    assert_eq!(check_content_length(Some(101), &l).unwrap_err().status(), 413);
    assert!(check_content_length(Some(100), &l).is_ok() && check_content_length(None, &l).is_ok());
    // the 10-byte bomb: declares 2^32-1 bytes
    let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0];
    let e = check(&v1(), &bomb, &Limits { max_body_bytes: 100, max_decoded_bytes: usize::MAX }).unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    let e = check(&v1(), &snappy(&[0u8; 2000]), &l).unwrap_err();
    assert_eq!(e, CheckError::DecodedTooLarge { declared: 2000, limit: 1000 });
}

#[test]
fn corrupt_and_framed_bodies_are_400() {
    let framed = b"\xff\x06\x00\x00sNaPpY\x01\x00\x00\x00";
    assert_eq!(check(&v1(), framed, &limits()), Err(CheckError::FramedSnappy));
    for bad in [&[0x80u8][..], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &[0x05], &[0xff, 0xff, 0xff, 0xff, 0x7f, 0]] {
        assert_eq!(check(&v1(), bad, &limits()).unwrap_err().status(), 400, "{bad:?}");
    }
}

proptest! {
    #[test]
    fn valid_snappy_always_passes_with_its_length(data in prop::collection::vec(any::<u8>(), 0..5000)) {
        let body = snappy(&data);
        let r = check(&v1(), &body, &limits()).unwrap();
        prop_assert_eq!(r, Checked::Body { version: Version::V1, decoded_len: data.len() });
    }

    #[test]
    fn never_panics_and_errors_map_to_4xx(body in prop::collection::vec(any::<u8>(), 0..64), ct in prop::option::of("\\PC{0,40}"), enc in prop::option::of("\\PC{0,10}")) {
        let h = RequestHead { content_type: ct.as_deref(), content_encoding: enc.as_deref() };
        if let Err(e) = check(&h, &body, &limits()) {
            prop_assert!([400, 413, 415].contains(&e.status()));
        }
    }

    /// Whatever passes the checks can be decompressed within the declared limit.
    #[test]
    fn passing_bodies_never_exceed_the_limit(body in prop::collection::vec(any::<u8>(), 1..64)) {
        if let Ok(Checked::Body { decoded_len, .. }) = check(&v1(), &body, &limits()) {
            prop_assert!(decoded_len <= limits().max_decoded_bytes);
            prop_assert_eq!(snap::raw::decompress_len(&body).unwrap(), decoded_len);
        }
    }
}
