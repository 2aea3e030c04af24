//! A schema-free structural check of protobuf wire data, for the optional `validate` mode.

/// Why a buffer is not well-formed protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A varint ran past the end or over 10 bytes.
    #[error("malformed varint at byte {0}")]
    Varint(usize),
    /// Field number zero.
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    /// Wire types 3, 4 (groups), 6 and 7 do not occur in proto3 messages.
    #[error("unsupported wire type {wire_type} at byte {at}")]
    WireType {
        /// The wire type.
        wire_type: u8,
        /// Where.
        at: usize,
    },
    /// A field runs past the end of the buffer.
    #[error("field at byte {0} runs past the end")]
    Truncated(usize),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(WireError::Varint(start))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Varint(start))
}

/// Walks the top-level fields of `buf` and checks every tag, length and bound; nested messages
/// of the remote-write schema (`TimeSeries`, field 1 in 1.0 and 5 in 2.0) are walked too.
///
/// # Errors
/// [`WireError`] naming the byte offset.
pub fn check_well_formed(buf: &[u8]) -> Result<(), WireError> {
    walk(buf, 0, 2)
}

fn walk(buf: &[u8], base: usize, depth: u8) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let tag = varint(buf, &mut pos).map_err(|_| WireError::Varint(base + at))?;
        let field = tag >> 3;
        if field == 0 {
            return Err(WireError::FieldZero(base + at));
        }
        match (tag & 7) as u8 {
            0 => {
                varint(buf, &mut pos).map_err(|_| WireError::Varint(base + pos))?;
            }
            1 => pos = pos.checked_add(8).filter(|p| *p <= buf.len()).ok_or(WireError::Truncated(base + at))?,
            5 => pos = pos.checked_add(4).filter(|p| *p <= buf.len()).ok_or(WireError::Truncated(base + at))?,
            2 => {
                let len = varint(buf, &mut pos).map_err(|_| WireError::Varint(base + pos))?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated(base + at))?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or(WireError::Truncated(base + at))?;
                // remote-write TimeSeries: field 1 (1.0) or 5 (2.0) at the top level
                if depth == 2 && (field == 1 || field == 5) {
                    walk(&buf[pos..end], base + pos, depth - 1)?;
                }
                pos = end;
            }
            wire_type => return Err(WireError::WireType { wire_type, at: base + at }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_and_rejects_garbage() {
        // WriteRequest { timeseries: [ { labels: [{name:"a", value:"b"}], samples: [{value: 1.0, timestamp: 5}] } ] }
        let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
        let sample = [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x05];
        let mut ts = vec![0x0a, label.len() as u8];
        ts.extend_from_slice(&label);
        ts.extend_from_slice(&[0x12, sample.len() as u8]);
        ts.extend_from_slice(&sample);
        let mut req = vec![0x0a, ts.len() as u8];
        req.extend_from_slice(&ts);
        assert_eq!(check_well_formed(&req), Ok(()));
        assert_eq!(check_well_formed(&[]), Ok(()));
        assert!(matches!(check_well_formed(&req[..req.len() - 1]), Err(WireError::Truncated(_))));
        assert!(matches!(check_well_formed(&[0x00]), Err(WireError::FieldZero(0))));
        assert!(matches!(check_well_formed(&[0x0b]), Err(WireError::WireType { wire_type: 3, .. })));
        assert!(matches!(check_well_formed(&[0x08, 0xff]), Err(WireError::Varint(_))));
        let mut bad_nested = req.clone();
        bad_nested[2] = 0x0f; // nested tag with wire type 7
        assert!(check_well_formed(&bad_nested).is_err());
    }
}
