//! The `NodeConfiguration` management service: the default and per-node node specs,
//! revisioned (a stale revision is a conflict), with dry-run.

use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::{ClusterId, Revision};
use opni_metrics_proto::common::v1 as pb;
use opni_metrics_proto::convert::{cluster_id, required};
use opni_metrics_proto::nodeconfig::v1::node_configuration_server::NodeConfiguration;
use opni_metrics_proto::nodeconfig::v1::{
    ConfigurationSource, GetConfigurationRequest, GetConfigurationResponse, GetDefaultConfigurationRequest,
    ResetConfigurationRequest, ResetConfigurationResponse, ResetDefaultConfigurationRequest, SetConfigurationRequest,
    SetConfigurationResponse, SetDefaultConfigurationRequest,
};
use tonic::{Request, Response, Status};

use super::errors::status;
use super::state::{State, StateError};
use opni_metrics_proto::IntoStatus;

/// The `NodeConfiguration` service.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfigService {
    state: State,
}

impl NodeConfigService {
    /// The service.
    pub(crate) fn new(state: State) -> Self {
        Self { state }
    }

    async fn known(&self, id: &ClusterId) -> Result<(), Status> {
        self.state.known_cluster(id).await.map(|_| ()).map_err(status)
    }

    async fn set(
        &self,
        target: Option<&ClusterId>,
        current: (MetricsCapabilitySpec, Revision),
        spec: Option<pb::MetricsCapabilitySpec>,
        revision: Option<u64>,
        dry_run: bool,
    ) -> Result<Response<SetConfigurationResponse>, Status> {
        let spec = MetricsCapabilitySpec::try_from(required("spec", spec).map_err(Status::from)?)
            .map_err(|e| Status::from(e.under("spec")))?;
        let expected = revision.map(Revision);
        if let Some(r) = expected
            && r != current.1
        {
            let what = target.map_or_else(
                || "the default node configuration".to_owned(),
                |id| format!("the node configuration of cluster {id}"),
            );
            return Err(StateError::Stale { what, given: r, current: current.1 }.into_status());
        }
        let changed = spec.normalized() != current.0.normalized();
        if dry_run {
            return Ok(Response::new(SetConfigurationResponse {
                revision: current.1.0,
                spec: Some(spec.into()),
                changed,
            }));
        }
        let rev = match target {
            None => self.state.put_default_spec(&spec, expected).await,
            Some(id) => self.state.put_node_override(id, &spec, expected).await,
        }
        .map_err(status)?;
        Ok(Response::new(SetConfigurationResponse { revision: rev.0, spec: Some(spec.into()), changed }))
    }
}

fn response(
    spec: MetricsCapabilitySpec,
    revision: Revision,
    source: ConfigurationSource,
) -> Response<GetConfigurationResponse> {
    Response::new(GetConfigurationResponse { spec: Some(spec.into()), revision: revision.0, source: source.into() })
}

#[tonic::async_trait]
impl NodeConfiguration for NodeConfigService {
    async fn get_default_configuration(
        &self,
        _: Request<GetDefaultConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let (spec, rev) = self.state.default_spec().await.map_err(status)?;
        let source = if rev == Revision::ZERO { ConfigurationSource::BuiltIn } else { ConfigurationSource::Default };
        Ok(response(spec, rev, source))
    }

    async fn set_default_configuration(
        &self,
        request: Request<SetDefaultConfigurationRequest>,
    ) -> Result<Response<SetConfigurationResponse>, Status> {
        let r = request.into_inner();
        let current = self.state.default_spec().await.map_err(status)?;
        self.set(None, current, r.spec, r.revision, r.dry_run).await
    }

    async fn reset_default_configuration(
        &self,
        request: Request<ResetDefaultConfigurationRequest>,
    ) -> Result<Response<ResetConfigurationResponse>, Status> {
        let r = request.into_inner();
        self.state.reset_default_spec(r.revision.map(Revision)).await.map_err(status)?;
        Ok(Response::new(ResetConfigurationResponse { spec: Some(MetricsCapabilitySpec::default().into()) }))
    }

    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let id = cluster_id("cluster", request.into_inner().cluster).map_err(Status::from)?;
        self.known(&id).await?;
        match self.state.node_override(&id).await.map_err(status)? {
            Some((spec, rev)) => Ok(response(spec, rev, ConfigurationSource::Override)),
            None => {
                let (spec, rev) = self.state.default_spec().await.map_err(status)?;
                let source =
                    if rev == Revision::ZERO { ConfigurationSource::BuiltIn } else { ConfigurationSource::Default };
                Ok(response(spec, Revision::ZERO, source))
            }
        }
    }

    async fn set_configuration(
        &self,
        request: Request<SetConfigurationRequest>,
    ) -> Result<Response<SetConfigurationResponse>, Status> {
        let r = request.into_inner();
        let id = cluster_id("cluster", r.cluster).map_err(Status::from)?;
        self.known(&id).await?;
        let current = match self.state.node_override(&id).await.map_err(status)? {
            Some(c) => c,
            None => (self.state.default_spec().await.map_err(status)?.0, Revision::ZERO),
        };
        self.set(Some(&id), current, r.spec, r.revision, r.dry_run).await
    }

    async fn reset_configuration(
        &self,
        request: Request<ResetConfigurationRequest>,
    ) -> Result<Response<ResetConfigurationResponse>, Status> {
        let r = request.into_inner();
        let id = cluster_id("cluster", r.cluster).map_err(Status::from)?;
        self.known(&id).await?;
        self.state.reset_node_override(&id, r.revision.map(Revision)).await.map_err(status)?;
        let (spec, _) = self.state.default_spec().await.map_err(status)?;
        Ok(Response::new(ResetConfigurationResponse { spec: Some(spec.into()) }))
    }
}
