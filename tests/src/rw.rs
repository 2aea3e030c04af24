//! Remote-write 1.0 request bodies for tests and benchmarks: realistic series (about ten labels
//! each), encoded with prost and compressed with snappy's block format.

use prost::Message;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// Series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A request of `series` series with one sample each, at `ts_ms`, series ids starting at
/// `first_series`. Labels look like a node-exporter/kube-state-metrics mix.
pub fn request(first_series: u64, series: usize, ts_ms: i64, metric: &str) -> WriteRequest {
    let timeseries = (0..series as u64)
        .map(|i| {
            let id = first_series + i;
            let l = |n: &str, v: String| Label { name: n.to_owned(), value: v };
            TimeSeries {
                labels: vec![
                    l("__name__", metric.to_owned()),
                    l("container", format!("app-{}", id % 7)),
                    l("endpoint", "http-metrics".to_owned()),
                    l("instance", format!("10.0.{}.{}:9100", (id / 250) % 250, id % 250)),
                    l("job", "node-exporter".to_owned()),
                    l("mode", ["idle", "user", "system", "iowait"][(id % 4) as usize].to_owned()),
                    l("namespace", format!("team-{}", id % 13)),
                    l("node", format!("worker-{}", id % 31)),
                    l("pod", format!("app-{}-{:x}", id % 97, id)),
                    l("series", id.to_string()),
                ],
                samples: vec![Sample { value: (id % 1000) as f64 * 1.5, timestamp: ts_ms }],
            }
        })
        .collect();
    WriteRequest { timeseries }
}

/// Protobuf-encodes and snappy-compresses `req`.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

/// Decompresses and decodes a body (for receivers in tests).
///
/// # Errors
/// A message if the body is not a snappy-compressed `WriteRequest`.
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| e.to_string())?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())
}

/// Remote write 2.0 (`io.prometheus.write.v2.Request`): interned symbols, label references.
pub mod v2 {
    use prost::Message;

    /// `io.prometheus.write.v2.Request`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// The symbol table; the first symbol is the empty string.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        /// Series.
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `io.prometheus.write.v2.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Name/value symbol references, sorted by name.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// Samples.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<super::Sample>,
    }

    /// `series` series named `metric` with a `series` label and one sample each at `ts_ms`.
    pub fn request(series: usize, ts_ms: i64, metric: &str) -> Request {
        let mut symbols =
            vec![String::new(), "__name__".into(), metric.into(), "job".into(), "v2".into(), "series".into()];
        let timeseries = (0..series)
            .map(|i| {
                symbols.push(i.to_string());
                let id = (symbols.len() - 1) as u32;
                TimeSeries {
                    labels_refs: vec![1, 2, 3, 4, 5, id],
                    samples: vec![super::Sample { value: i as f64, timestamp: ts_ms }],
                }
            })
            .collect();
        Request { symbols, timeseries }
    }

    /// Protobuf-encodes and snappy-compresses `req`.
    pub fn encode(req: &Request) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap_or_default()
    }

    /// The `Content-Type` of a 2.0 body.
    pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let r = request(0, 500, 1_700_000_000_000, "node_cpu_seconds_total");
        let body = encode(&r);
        assert_eq!(decode(&body).unwrap(), r);
        // realistic: 500 samples are tens of KiB compressed
        assert!(body.len() > 5_000 && body.len() < 100_000, "{}", body.len());
    }
}
