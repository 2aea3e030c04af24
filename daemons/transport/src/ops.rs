//! The operational endpoints every daemon serves: `/healthz` (the process is alive),
//! `/readyz` (it can do its job) and `/metrics` (OpenMetrics text).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use crate::http::text;

/// A condition readiness depends on: `Err` says why the daemon cannot do its job now.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// State behind the ops endpoints: the metrics registry, the readiness flag and the checks
/// readiness also depends on.
pub struct Ops {
    registry: Registry,
    ready: AtomicBool,
    checks: RwLock<Vec<(&'static str, ReadinessCheck)>>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checks = self.checks.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Ops")
            .field("ready", &self.ready)
            .field("checks", &checks.iter().map(|(name, _)| *name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// Ops state over `registry`, not yet ready.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self { registry, ready: AtomicBool::new(false), checks: RwLock::new(Vec::new()) })
    }

    /// Adds a condition of readiness, evaluated on every probe (so it must be cheap and must
    /// not block): while it answers `Err`, `/readyz` answers 503 with `name` and the reason.
    pub fn add_readiness_check(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.checks.write().unwrap_or_else(PoisonError::into_inner).push((name, Box::new(check)));
    }

    /// `Ok` when ready; otherwise why not (the flag is down, or the first failing check).
    ///
    /// # Errors
    /// The reason, as `/readyz` prints it.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Acquire) {
            return Err("not serving".to_owned());
        }
        let checks = self.checks.read().unwrap_or_else(PoisonError::into_inner);
        for (name, check) in checks.iter() {
            check().map_err(|reason| format!("{name}: {reason}"))?;
        }
        Ok(())
    }

    /// The metrics registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Marks the daemon serving (or not); readiness also needs every check to pass.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the daemon is ready: serving, and every readiness check passes.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.registry)
    }

    /// Answers an operational path, or `None` for other paths.
    pub fn route(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        match path {
            "/healthz" => Some(text(StatusCode::OK, "ok\n")),
            "/readyz" => Some(match self.readiness() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
            }),
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

    #[test]
    fn readiness_needs_every_check() {
        let ops = Ops::new(Registry::default());
        let disk = Arc::new(AtomicBool::new(true));
        let d = Arc::clone(&disk);
        ops.add_readiness_check(
            "store",
            move || {
                if d.load(Ordering::Acquire) { Ok(()) } else { Err("disk full".to_owned()) }
            },
        );
        ops.set_ready(true);
        assert!(ops.is_ready());
        disk.store(false, Ordering::Release);
        let r = ops.route_or_404("/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ops.readiness(), Err("store: disk full".to_owned()));
        disk.store(true, Ordering::Release);
        assert_eq!(ops.route_or_404("/readyz").status(), StatusCode::OK);
        ops.set_ready(false);
        assert_eq!(ops.readiness(), Err("not serving".to_owned()));
    }
}
