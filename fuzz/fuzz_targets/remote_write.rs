//! The agent's checks of a remote-write body: preamble and sizes, then (validate mode) the
//! protobuf walk and the spec checks, for both versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opni_metrics_core::remote_write::{Checked, Limits, RequestHead, Version, check, check_well_formed, validate_body};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_body_bytes: 1 << 20, max_decoded_bytes: 4 << 20 };
    for ct in ["application/x-protobuf", "application/x-protobuf;proto=io.prometheus.write.v2.Request"] {
        let head = RequestHead { content_type: Some(ct), content_encoding: Some("snappy") };
        if let Ok(Checked::Body { version, .. }) = check(&head, data, &limits)
            && let Ok(raw) = snap::raw::Decoder::new().decompress_vec(data)
            && check_well_formed(&raw).is_ok()
        {
            let _ = validate_body(&raw, version);
        }
    }
    // the decompressed form directly, too
    let _ = validate_body(data, Version::V1);
    let _ = validate_body(data, Version::V2);
});
