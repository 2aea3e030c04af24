//! The `Clusters` management service.

use opni_metrics_core::registry::validate_labels;
use opni_metrics_core::spec::LabelSelector;
use opni_metrics_proto::IntoStatus;
use opni_metrics_proto::clusters::v1::clusters_server::Clusters;
use opni_metrics_proto::clusters::v1::{
    Cluster, ClusterList, CreateClusterRequest, DeleteClusterRequest, EditLabelsRequest, GetClusterRequest,
    ListClustersRequest,
};
use opni_metrics_proto::convert::cluster_id;
use tonic::{Request, Response, Status};

use super::errors::status;
use super::state::State;

/// The `Clusters` service.
#[derive(Debug, Clone)]
pub(crate) struct ClustersService {
    state: State,
}

impl ClustersService {
    /// The service.
    pub(crate) fn new(state: State) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Clusters for ClustersService {
    async fn list(&self, request: Request<ListClustersRequest>) -> Result<Response<ClusterList>, Status> {
        let selector = match request.into_inner().selector {
            Some(s) => LabelSelector::try_from(s).map_err(|e| Status::from(e.under("selector")))?,
            None => LabelSelector::default(),
        };
        let items = self
            .state
            .clusters()
            .await
            .map_err(status)?
            .into_iter()
            .filter(|c| selector.matches(&c.labels))
            .map(Cluster::from)
            .collect();
        Ok(Response::new(ClusterList { items }))
    }

    async fn get(&self, request: Request<GetClusterRequest>) -> Result<Response<Cluster>, Status> {
        let id = cluster_id("id", request.into_inner().id).map_err(Status::from)?;
        let (c, _) = self.state.known_cluster(&id).await.map_err(status)?;
        Ok(Response::new(c.into()))
    }

    async fn create(&self, request: Request<CreateClusterRequest>) -> Result<Response<Cluster>, Status> {
        let r = request.into_inner();
        let id = cluster_id("id", r.id).map_err(Status::from)?;
        let labels: std::collections::BTreeMap<String, String> = r.labels.into_iter().collect();
        validate_labels(&labels).map_err(|e| e.into_status())?;
        let mut c = opni_metrics_core::registry::Cluster::new(id.clone());
        c.labels = labels;
        self.state.create_cluster(&c).await.map_err(status)?;
        tracing::info!(cluster = %id, "cluster registered");
        Ok(Response::new(c.into()))
    }

    async fn edit_labels(&self, request: Request<EditLabelsRequest>) -> Result<Response<Cluster>, Status> {
        let r = request.into_inner();
        let id = cluster_id("id", r.id).map_err(Status::from)?;
        let labels = r.labels;
        validate_labels(&labels).map_err(|e| e.into_status())?;
        let c = self
            .state
            .update_cluster(&id, |c| {
                c.set_labels(labels.clone())?;
                Ok(c.clone())
            })
            .await
            .map_err(status)?;
        Ok(Response::new(c.into()))
    }

    async fn delete(&self, request: Request<DeleteClusterRequest>) -> Result<Response<()>, Status> {
        let id = cluster_id("id", request.into_inner().id).map_err(Status::from)?;
        self.state.delete_cluster(&id).await.map_err(status)?;
        Ok(Response::new(()))
    }
}
