//! The forwarding contract: what the gateway hands its upstream forwarder and what comes back.
//! Plain data, so any transport (hyper, a test double, an embedder's own client) can implement
//! the forwarder as a `tower::Service<ForwardRequest>`.

use bytes::Bytes;

use super::status::Outcome;
use crate::ClusterId;

/// One remote-write request to forward upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRequest {
    /// The tenant, taken from the agent's verified identity and nothing else.
    pub tenant: ClusterId,
    /// The snappy-compressed body, byte for byte as Prometheus sent it.
    pub body: Bytes,
    /// `Content-Type` as sent (already checked by [`check`](super::check)).
    pub content_type: String,
    /// `X-Prometheus-Remote-Write-Version`, when known.
    pub version: Option<String>,
}

/// The upstream's answer to a [`ForwardRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response body, cut at the forwarder's limit.
    pub body: Bytes,
    /// The headers relayed back to the agent ([`is_relayed_header`]).
    pub headers: Vec<(String, String)>,
}

impl ForwardResponse {
    /// Samples the upstream reported written (remote write 2.0's
    /// `X-Prometheus-Remote-Write-Samples-Written`), 0 when it did not say.
    pub fn samples_written(&self) -> u64 {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-prometheus-remote-write-samples-written"))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

/// Why forwarding ended without an upstream answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The deadline passed.
    #[error("upstream did not answer within the deadline")]
    Timeout,
    /// Too many requests in flight upstream (or over a budget).
    #[error("gateway is at its upstream concurrency limit")]
    Overloaded,
    /// Connecting or talking to the upstream failed; the text says how.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
}

impl ForwardError {
    /// The outcome for the status rules ([`classify`](super::classify)).
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Timeout => Outcome::Timeout,
            Self::Overloaded => Outcome::Overloaded,
            Self::Unreachable(_) => Outcome::Unreachable,
        }
    }

    /// A short, stable name of the kind, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

/// Whether an upstream response header is relayed back to the agent: `Content-Type`,
/// `Retry-After` and remote write 2.0's `X-Prometheus-Remote-Write-*-Written`.
pub fn is_relayed_header(name: &str) -> bool {
    const PREFIX: &str = "x-prometheus-remote-write-";
    const SUFFIX: &str = "-written";
    name.eq_ignore_ascii_case("retry-after")
        || name.eq_ignore_ascii_case("content-type")
        || (name.len() > PREFIX.len() + SUFFIX.len()
            && name.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
            && name.get(name.len() - SUFFIX.len()..).is_some_and(|s| s.eq_ignore_ascii_case(SUFFIX)))
}

/// A status class label: `2xx`, `4xx`, `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_headers() {
        for ok in [
            "Retry-After",
            "X-Prometheus-Remote-Write-Samples-Written",
            "x-prometheus-remote-write-histograms-written",
            "content-type",
        ] {
            assert!(is_relayed_header(ok), "{ok}");
        }
        for no in
            ["X-Scope-OrgID", "set-cookie", "x-prometheus-remote-write-version", "x-prometheus-remote-write--written"]
        {
            assert!(!is_relayed_header(no), "{no}");
        }
    }

    #[test]
    fn samples_written_sums_the_header() {
        let r = ForwardResponse {
            status: 204,
            body: Bytes::new(),
            headers: vec![
                ("X-Prometheus-Remote-Write-Samples-Written".into(), "12".into()),
                ("x-prometheus-remote-write-histograms-written".into(), "3".into()),
            ],
        };
        assert_eq!(r.samples_written(), 12);
        assert_eq!(ForwardResponse { headers: vec![], ..r }.samples_written(), 0);
    }

    #[test]
    fn errors_classify() {
        assert_eq!(ForwardError::Timeout.outcome(), Outcome::Timeout);
        assert_eq!(ForwardError::Overloaded.kind(), "overloaded");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(42), "other");
    }
}
