//! Checks run on every remote-write request before anything is forwarded.

/// Remote-write protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Version {
    /// The `Content-Type` a sender of this version uses.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V1 => "application/x-protobuf",
            Self::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }
}

/// Size limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted as sent (compressed), in bytes.
    pub max_body_bytes: usize,
    /// Largest decompressed size a body may declare, in bytes.
    pub max_decoded_bytes: usize,
}

impl Default for Limits {
    /// 16 MiB as sent and 64 MiB decompressed: far above what Prometheus sends (2000 samples
    /// per request are about 0.2 MiB), small enough that the daemons' in-flight byte bound
    /// keeps memory flat.
    fn default() -> Self {
        Self { max_body_bytes: 16 << 20, max_decoded_bytes: 64 << 20 }
    }
}

/// The request headers the checks look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// `Content-Type`, if sent.
    pub content_type: Option<&'a str>,
    /// `Content-Encoding`, if sent.
    pub content_encoding: Option<&'a str>,
}

/// A request that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// An empty body: a protocol-negotiation probe, answered 2xx without forwarding.
    Empty,
    /// A body to forward.
    Body {
        /// Its protocol version.
        version: Version,
        /// The decompressed size its snappy preamble declares.
        decoded_len: usize,
    },
}

/// Why a request was refused; [`CheckError::status`] is the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Content-Type is not a remote-write protobuf type.
    #[error(
        "unsupported Content-Type {0:?}, expected application/x-protobuf with proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request"
    )]
    UnsupportedContentType(String),
    /// Content-Encoding is not snappy.
    #[error("unsupported Content-Encoding {0:?}, expected snappy")]
    UnsupportedEncoding(String),
    /// The body (as sent) is larger than allowed.
    #[error("body of {len} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Body size (or declared Content-Length).
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// The snappy preamble declares a decompressed size larger than allowed.
    #[error("body declares {declared} decompressed bytes, the limit is {limit}")]
    DecodedTooLarge {
        /// The declared size.
        declared: u64,
        /// The limit.
        limit: usize,
    },
    /// The body uses the snappy framing (stream) format, not the block format.
    #[error("body is framed snappy; remote write uses the snappy block format")]
    FramedSnappy,
    /// The snappy preamble is missing or malformed.
    #[error("body is not snappy-compressed: {0}")]
    CorruptPreamble(&'static str),
}

impl CheckError {
    /// The HTTP status to answer: 415, 413 or 400.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedContentType(_) | Self::UnsupportedEncoding(_) => 415,
            Self::BodyTooLarge { .. } | Self::DecodedTooLarge { .. } => 413,
            Self::FramedSnappy | Self::CorruptPreamble(_) => 400,
        }
    }
}

/// Upper bound of snappy's expansion ratio (the true bound is about 21.3).
const MAX_SNAPPY_RATIO: u64 = 32;

/// The stream identifier chunk that starts every framed-snappy stream.
const FRAMED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// Refuses a request early from its declared `Content-Length`, before reading the body.
///
/// # Errors
/// [`CheckError::BodyTooLarge`].
pub fn check_content_length(content_length: Option<u64>, limits: &Limits) -> Result<(), CheckError> {
    match content_length {
        Some(len) if len > limits.max_body_bytes as u64 => {
            Err(CheckError::BodyTooLarge { len, limit: limits.max_body_bytes })
        }
        _ => Ok(()),
    }
}

/// Checks headers and the snappy block preamble of a request body.
///
/// A missing `Content-Type` means remote write 1.0 and a missing `Content-Encoding` means
/// snappy, as Prometheus's own receiver assumes. Nothing is decompressed or allocated.
///
/// # Errors
/// [`CheckError`]; its [`status`](CheckError::status) is the answer to send.
pub fn check(head: &RequestHead<'_>, body: &[u8], limits: &Limits) -> Result<Checked, CheckError> {
    let version = parse_content_type(head.content_type)?;
    if let Some(enc) = head.content_encoding
        && !enc.trim().eq_ignore_ascii_case("snappy")
    {
        return Err(CheckError::UnsupportedEncoding(enc.to_owned()));
    }
    if body.is_empty() {
        return Ok(Checked::Empty);
    }
    if body.len() > limits.max_body_bytes {
        return Err(CheckError::BodyTooLarge { len: body.len() as u64, limit: limits.max_body_bytes });
    }
    if body.starts_with(FRAMED_MAGIC) {
        return Err(CheckError::FramedSnappy);
    }
    let declared = read_preamble(body)?;
    if declared > limits.max_decoded_bytes as u64 {
        return Err(CheckError::DecodedTooLarge { declared, limit: limits.max_decoded_bytes });
    }
    // Snappy's densest element (a 3-byte copy of 64 bytes) expands at most ~21x, so a body
    // declaring more than 32x its size is corrupt or a bomb, whatever the limit allows.
    if declared > (body.len() as u64).saturating_mul(MAX_SNAPPY_RATIO) {
        return Err(CheckError::CorruptPreamble("declared length is more than snappy can expand to"));
    }
    let decoded_len =
        usize::try_from(declared).map_err(|_| CheckError::CorruptPreamble("declared length does not fit in memory"))?;
    Ok(Checked::Body { version, decoded_len })
}

fn parse_content_type(ct: Option<&str>) -> Result<Version, CheckError> {
    let Some(raw) = ct else { return Ok(Version::V1) };
    let unsupported = || CheckError::UnsupportedContentType(raw.to_owned());
    let mut parts = raw.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(unsupported());
    }
    let mut version = Version::V1;
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            if param.trim().is_empty() {
                continue;
            }
            return Err(unsupported());
        };
        if k.trim().eq_ignore_ascii_case("proto") {
            version = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Version::V1,
                "io.prometheus.write.v2.Request" => Version::V2,
                _ => return Err(unsupported()),
            };
        }
    }
    Ok(version)
}

/// Reads the varint (≤ 5 bytes, < 2³²) that starts a snappy block: the decompressed length.
fn read_preamble(body: &[u8]) -> Result<u64, CheckError> {
    let mut value: u64 = 0;
    for (i, &b) in body.iter().take(5).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(CheckError::CorruptPreamble("declared length exceeds 2^32-1"));
            }
            if value > 0 && i + 1 == body.len() {
                return Err(CheckError::CorruptPreamble("body ends after the length preamble"));
            }
            return Ok(value);
        }
    }
    Err(CheckError::CorruptPreamble("length preamble is truncated or too long"))
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
