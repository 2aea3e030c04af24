//! The external cluster driver: an existing Cortex-compatible store reached over HTTP. It is
//! installed by definition; tenant data deletion uses Cortex's purger API when configured.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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

/// An existing upstream reached over plain HTTP (the management calls; remote write has its
/// own pooled client).
#[derive(Debug, Clone)]
pub struct ExternalCluster {
    base: String,
    tenant_header: HeaderName,
    deletion: TenantDeletion,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn transient(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> DriverError {
    DriverError::Transient { context: context.to_owned(), source: Box::new(e) }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl ExternalCluster {
    /// A driver for the upstream whose push URL is `push_url`.
    pub fn new(push_url: &Uri, tenant_header: HeaderName, deletion: TenantDeletion) -> Self {
        let base = format!(
            "{}://{}",
            push_url.scheme_str().unwrap_or("http"),
            push_url.authority().map_or("", |a| a.as_str())
        );
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        Self { base, tenant_header, deletion, client: Client::builder(TokioExecutor::new()).build(http) }
    }

    async fn call(&self, method: Method, path: &str, tenant: &ClusterId) -> Result<(u16, Bytes), DriverError> {
        let tenant = HeaderValue::from_str(tenant.as_str()).map_err(|e| transient("tenant header", e))?;
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(self.tenant_header.clone(), tenant)
            .body(Full::new(Bytes::new()))
            .map_err(|e| transient("request", e))?;
        let fut = self.client.request(req);
        let resp = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| transient(path, Msg("timed out".into())))?
            .map_err(|e| transient(path, e))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| transient(path, e))?.to_bytes();
        Ok((status, body))
    }
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
            Ok(ClusterStatus {
                install_state: UpstreamState::Installed,
                app_state: AppState::Running,
                workloads: Vec::new(),
                warnings: Vec::new(),
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
            match self.call(Method::POST, "/purger/delete_tenant", tenant).await? {
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
            match self.call(Method::GET, "/purger/delete_tenant_status", tenant).await? {
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
