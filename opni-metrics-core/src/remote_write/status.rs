//! What the agent answers Prometheus, given what happened upstream (DESIGN §5).
//!
//! Prometheus retries 5xx and 429 (with `retry_on_http_429`) and drops a request on any other
//! 4xx. So only errors in the data itself (400, 413, 415, 422) pass through; anything that is
//! the system's fault — upstream 5xx, auth or routing errors (401, 403, 404, …), timeouts,
//! unreachable peers — becomes a retryable 503 (504 on deadline), so no sample is dropped for a
//! fault that will heal. 408 is never sent: Prometheus does not retry it.

use std::time::Duration;

/// What happened to a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with `status`.
    Response {
        /// The upstream's HTTP status.
        status: u16,
    },
    /// The per-request deadline passed.
    Timeout,
    /// The upstream (or gateway) could not be connected to, or the connection failed.
    Unreachable,
    /// TLS failed (handshake, certificate).
    TlsFailure,
    /// A local limit refused the request (in-flight bytes or concurrency).
    Overloaded,
}

/// Options of the status rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusOptions {
    /// Answer 503 instead of 429, for senders that never retry 429.
    pub rate_limit_as_503: bool,
    /// `Retry-After` to add to a locally generated 503/429 (`None`: none).
    pub local_retry_after: Option<Duration>,
}

/// The answer to give the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Pass the upstream's body and headers through (otherwise answer with a short reason).
    pub pass_through: bool,
    /// Add this `Retry-After` when the upstream sent none.
    pub retry_after: Option<Duration>,
}

/// Maps an outcome to the reply (the table in DESIGN §5).
pub fn classify(outcome: Outcome, opts: &StatusOptions) -> Reply {
    let local = |status| Reply { status, pass_through: false, retry_after: opts.local_retry_after };
    match outcome {
        Outcome::Response { status } => match status {
            200..=299 => Reply { status, pass_through: true, retry_after: None },
            400 | 413 | 415 | 422 => Reply { status, pass_through: true, retry_after: None },
            429 if opts.rate_limit_as_503 => {
                Reply { status: 503, pass_through: true, retry_after: opts.local_retry_after }
            }
            429 => Reply { status: 429, pass_through: true, retry_after: opts.local_retry_after },
            504 => local(504),
            _ => local(503),
        },
        Outcome::Timeout => local(504),
        Outcome::Unreachable | Outcome::TlsFailure | Outcome::Overloaded => local(503),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(outcome: Outcome) -> u16 {
        classify(outcome, &StatusOptions::default()).status
    }

    #[test]
    fn the_design_table() {
        for s in [200, 202, 204] {
            assert_eq!(status(Outcome::Response { status: s }), s);
        }
        for s in [400, 413, 415] {
            let r = classify(Outcome::Response { status: s }, &StatusOptions::default());
            assert_eq!((r.status, r.pass_through), (s, true), "{s} passes through");
        }
        assert_eq!(status(Outcome::Response { status: 429 }), 429);
        let opts = StatusOptions { rate_limit_as_503: true, local_retry_after: Some(Duration::from_secs(2)) };
        let r = classify(Outcome::Response { status: 429 }, &opts);
        assert_eq!((r.status, r.retry_after), (503, Some(Duration::from_secs(2))));
        for s in [500, 502, 503, 401, 403, 404, 405, 409, 301, 100] {
            assert_eq!(status(Outcome::Response { status: s }), 503, "{s} becomes a retryable 503");
        }
        assert_eq!(status(Outcome::Timeout), 504);
        assert_eq!(status(Outcome::Response { status: 504 }), 504, "an upstream deadline stays a deadline");
        assert_eq!(status(Outcome::Unreachable), 503);
        assert_eq!(status(Outcome::TlsFailure), 503);
        assert_eq!(status(Outcome::Overloaded), 503);
    }

    #[test]
    fn never_408_and_never_a_5xx_for_data_errors() {
        for s in 100..600u16 {
            for o in [Outcome::Response { status: s }, Outcome::Timeout, Outcome::Unreachable] {
                let r = classify(o, &StatusOptions::default());
                assert_ne!(r.status, 408);
                assert!(
                    r.status < 300 || [400, 413, 415, 422, 429, 503, 504].contains(&r.status),
                    "{o:?} -> {}",
                    r.status
                );
            }
        }
    }
}
