//! The operational endpoints every daemon serves: `/healthz` (the process is alive),
//! `/readyz` (it can do its job) and `/metrics` (OpenMetrics text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use crate::http::text;

/// State behind the ops endpoints: the metrics registry and the readiness flag.
#[derive(Debug)]
pub struct Ops {
    registry: Registry,
    ready: AtomicBool,
}

impl Ops {
    /// Ops state over `registry`, not yet ready.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self { registry, ready: AtomicBool::new(false) })
    }

    /// The metrics registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the daemon is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.registry)
    }

    /// Answers an operational path, or `None` for other paths.
    pub fn route(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        match path {
            "/healthz" => Some(text(StatusCode::OK, "ok\n")),
            "/readyz" if self.is_ready() => Some(text(StatusCode::OK, "ready\n")),
            "/readyz" => Some(text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")),
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(self.render_metrics())));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                Some(r)
            }
            _ => None,
        }
    }

    /// [`Ops::route`], or a plain 404 for other paths.
    pub fn route_or_404(&self, path: &str) -> Response<Full<Bytes>> {
        self.route(path).unwrap_or_else(|| text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag() {
        let ops = Ops::new(Registry::default());
        assert_eq!(ops.route_or_404("/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        ops.set_ready(true);
        assert_eq!(ops.route_or_404("/readyz").status(), StatusCode::OK);
        assert_eq!(ops.route_or_404("/healthz").status(), StatusCode::OK);
        assert_eq!(ops.route_or_404("/metrics").status(), StatusCode::OK);
        assert_eq!(ops.route_or_404("/nope").status(), StatusCode::NOT_FOUND);
    }
}
