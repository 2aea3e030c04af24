//! The external cluster driver: an existing Cortex-compatible store reached over HTTP(S). It
//! is installed by definition; its status comes from its readiness endpoint (`/ready` on
//! Cortex and Mimir); tenant data deletion uses Cortex's purger API when configured. Every
//! call uses the push path's TLS settings (CA, client certificate), a deadline and a body
//! limit.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Limited;
use http_body_util::{BodyExt, Full};
use opni_metrics_core::ClusterId;
use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_core::driver::{AppState, ClusterDriver, ClusterStatus, DriverError};
use opni_metrics_core::node::UpstreamState;
use opni_metrics_core::uninstall::PurgeProgress;
use serde::Deserialize;

/// How an external upstream deletes a tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TenantDeletion {
    /// Cortex's purger: `POST /purger/delete_tenant`, `GET /purger/delete_tenant_status`.
    #[default]
    Cortex,
    /// The upstream cannot delete tenants (e.g. a plain Prometheus receiver); uninstalls that
    /// ask for deletion fail rather than pretend.
    Unsupported,
}

/// Largest response body read from a management call.
const MAX_BODY: usize = 256 * 1024;
/// Deadline of one management call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An existing upstream (the management calls; remote write has its own pooled client with
/// the same TLS settings).
#[derive(Clone)]
pub struct ExternalCluster {
    base: String,
    ready_path: String,
    tenant_header: HeaderName,
    deletion: TenantDeletion,
    client: crate::forward::HttpClient,
}

impl std::fmt::Debug for ExternalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCluster").field("base", &self.base).finish_non_exhaustive()
    }
}

fn transient(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> DriverError {
    DriverError::Transient { context: context.to_owned(), source: Box::new(e) }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl ExternalCluster {
    /// A driver for the upstream of `settings` (its push URL's scheme and authority, its TLS
    /// files, its readiness path).
    ///
    /// # Errors
    /// The TLS files are unusable.
    pub fn new(settings: &crate::settings::UpstreamSettings) -> Result<Self, crate::forward::UpstreamError> {
        Ok(Self::with_client(settings, crate::forward::upstream_client(settings)?))
    }

    /// A driver on an existing client (the gateway shares one with the forwarder).
    pub(crate) fn with_client(
        settings: &crate::settings::UpstreamSettings,
        client: crate::forward::HttpClient,
    ) -> Self {
        Self {
            base: base_url(&settings.url),
            ready_path: settings.ready_path.clone(),
            tenant_header: settings.tenant_header.clone(),
            deletion: settings.tenant_deletion,
            client,
        }
    }

    async fn call(&self, method: Method, path: &str, tenant: Option<&ClusterId>) -> Result<(u16, Bytes), DriverError> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = tenant {
            let t = HeaderValue::from_str(t.as_str()).map_err(|e| transient("tenant header", e))?;
            req = req.header(self.tenant_header.clone(), t);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| transient("request", e))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| transient(path, e))?;
            let status = resp.status().as_u16();
            let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Err(transient(path, Msg(format!("reading the answer: {e}")))),
            };
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| transient(path, Msg("timed out".into())))?
    }
}

/// `scheme://authority` of a URL.
fn base_url(url: &Uri) -> String {
    format!("{}://{}", url.scheme_str().unwrap_or("http"), url.authority().map_or("", |a| a.as_str()))
}

#[derive(Deserialize)]
struct DeletionStatus {
    blocks_deleted: bool,
}

impl ClusterDriver for ExternalCluster {
    fn apply<'a>(&'a self, _config: &'a ClusterConfig) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async { Err(DriverError::Unsupported { driver: "external", operation: "install an upstream" }) })
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, DriverError>> {
        Box::pin(async move {
            // installed by definition; whether it works is its readiness
            let (app_state, warnings) = match self.call(Method::GET, &self.ready_path, None).await {
                Ok((200..=299, _)) => (AppState::Running, Vec::new()),
                // no readiness endpoint there (a receiver without one, a path prefix): not a
                // failure of the upstream, which keeps the fleet enabled; say so
                Ok((404 | 405, _)) => (
                    AppState::Running,
                    vec![format!(
                        "{}{} does not exist: readiness is not checked (set upstream.readyPath)",
                        self.base, self.ready_path
                    )],
                ),
                Ok((s, body)) => (
                    AppState::Failed,
                    vec![format!(
                        "{}{} answered {s}: {}",
                        self.base,
                        self.ready_path,
                        String::from_utf8_lossy(&body[..body.len().min(256)]).trim()
                    )],
                ),
                Err(e) => (AppState::Failed, vec![opni_metrics_core::error_chain(&e)]),
            };
            Ok(ClusterStatus {
                install_state: UpstreamState::Installed,
                app_state,
                workloads: Vec::new(),
                warnings,
                version: None,
            })
        })
    }

    fn uninstall(&self) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Err(DriverError::Unsupported { driver: "external", operation: "uninstall an upstream" }) })
    }

    fn delete_tenant_data<'a>(&'a self, tenant: &'a ClusterId) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            if self.deletion == TenantDeletion::Unsupported {
                return Err(DriverError::Unsupported { driver: "external", operation: "delete a tenant's data" });
            }
            match self.call(Method::POST, "/purger/delete_tenant", Some(tenant)).await? {
                (200..=299, _) => Ok(()),
                (s, body) => Err(transient(
                    "delete tenant",
                    Msg(format!("upstream answered {s}: {}", String::from_utf8_lossy(&body))),
                )),
            }
        })
    }

    fn tenant_deletion_status<'a>(
        &'a self,
        tenant: &'a ClusterId,
    ) -> BoxFuture<'a, Result<PurgeProgress, DriverError>> {
        Box::pin(async move {
            match self.call(Method::GET, "/purger/delete_tenant_status", Some(tenant)).await? {
                (200..=299, body) => {
                    let s: DeletionStatus =
                        serde_json::from_slice(&body).map_err(|e| transient("tenant deletion status", e))?;
                    Ok(if s.blocks_deleted { PurgeProgress::Done } else { PurgeProgress::InProgress })
                }
                (s, body) => Err(transient(
                    "tenant deletion status",
                    Msg(format!("upstream answered {s}: {}", String::from_utf8_lossy(&body))),
                )),
            }
        })
    }
}
