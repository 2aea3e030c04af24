//! The `Rbac` management service: roles, role bindings and API keys.

use opni_metrics_core::access::{ApiKeyRecord, Caller, Role, RoleBinding};
use opni_metrics_proto::rbac::v1 as pb;
use opni_metrics_proto::rbac::v1::rbac_server::Rbac;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::state::State;

/// The `Rbac` service.
#[derive(Debug, Clone)]
pub(crate) struct RbacService {
    state: State,
}

impl RbacService {
    pub(crate) fn new(state: State) -> Self {
        Self { state }
    }
}

fn name(r: &pb::Reference) -> Result<&str, Status> {
    if r.name.is_empty() { Err(Status::invalid_argument("name: missing")) } else { Ok(&r.name) }
}

fn random<const N: usize>() -> Result<[u8; N], Status> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Status::internal("no randomness available"))?;
    Ok(b)
}

#[tonic::async_trait]
impl Rbac for RbacService {
    async fn create_role(&self, req: Request<pb::Role>) -> Result<Response<()>, Status> {
        let role = Role::try_from(req.into_inner()).map_err(Status::from)?;
        self.state.create_role(&role).await.map_err(status)?;
        tracing::info!(role = %role.name, "role created");
        Ok(Response::new(()))
    }

    async fn get_role(&self, req: Request<pb::Reference>) -> Result<Response<pb::Role>, Status> {
        let n = name(req.get_ref())?;
        let role = self.state.role(n).await.map_err(status)?;
        role.map(|r| Response::new(r.into())).ok_or_else(|| Status::not_found(format!("role {n:?} does not exist")))
    }

    async fn list_roles(&self, _: Request<()>) -> Result<Response<pb::RoleList>, Status> {
        let items = self.state.roles().await.map_err(status)?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::RoleList { items }))
    }

    async fn delete_role(&self, req: Request<pb::Reference>) -> Result<Response<()>, Status> {
        let n = name(req.get_ref())?;
        self.state.delete_role(n).await.map_err(status)?;
        tracing::info!(role = %n, "role deleted");
        Ok(Response::new(()))
    }

    async fn create_role_binding(&self, req: Request<pb::RoleBinding>) -> Result<Response<()>, Status> {
        let b = RoleBinding::try_from(req.into_inner()).map_err(Status::from)?;
        self.state.create_role_binding(&b).await.map_err(status)?;
        tracing::info!(binding = %b.name, role = %b.role, "role binding created");
        Ok(Response::new(()))
    }

    async fn get_role_binding(&self, req: Request<pb::Reference>) -> Result<Response<pb::RoleBinding>, Status> {
        let n = name(req.get_ref())?;
        let b = self.state.role_binding(n).await.map_err(status)?;
        b.map(|b| Response::new(b.into()))
            .ok_or_else(|| Status::not_found(format!("role binding {n:?} does not exist")))
    }

    async fn list_role_bindings(&self, _: Request<()>) -> Result<Response<pb::RoleBindingList>, Status> {
        let items = self.state.role_bindings().await.map_err(status)?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::RoleBindingList { items }))
    }

    async fn delete_role_binding(&self, req: Request<pb::Reference>) -> Result<Response<()>, Status> {
        let n = name(req.get_ref())?;
        self.state.delete_role_binding(n).await.map_err(status)?;
        tracing::info!(binding = %n, "role binding deleted");
        Ok(Response::new(()))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        let r = req.into_inner();
        let subject = (!r.subject.is_empty()).then_some(r.subject.as_str());
        let (record, key) = ApiKeyRecord::create(
            &r.name,
            subject,
            r.groups.iter().map(String::as_str),
            random::<8>()?,
            random::<32>()?,
            crate::state::now(),
        )
        .map_err(|e| Status::invalid_argument(opni_metrics_core::error_chain(&e)))?;
        self.state.create_api_key(&record).await.map_err(status)?;
        tracing::info!(name = %record.name, id = %record.id, subject = %record.subject, "API key created");
        Ok(Response::new(pb::CreatedApiKey { info: Some((&record).into()), key }))
    }

    async fn list_api_keys(&self, _: Request<()>) -> Result<Response<pb::ApiKeyList>, Status> {
        let mut keys = self.state.api_keys().await.map_err(status)?;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ApiKeyList { items: keys.iter().map(Into::into).collect() }))
    }

    async fn revoke_api_key(&self, req: Request<pb::Reference>) -> Result<Response<()>, Status> {
        let n = name(req.get_ref())?;
        let k = self.state.revoke_api_key(n).await.map_err(status)?;
        tracing::info!(name = %k.name, id = %k.id, "API key revoked");
        Ok(Response::new(()))
    }

    async fn readable_tenants(&self, req: Request<pb::SubjectRequest>) -> Result<Response<pb::TenantList>, Status> {
        let r = req.into_inner();
        if r.subject.is_empty() {
            return Err(Status::invalid_argument("subject: missing"));
        }
        let caller = Caller { subject: r.subject, groups: r.groups.into_iter().collect() };
        let t = self.state.readable_tenants(&caller).await.map_err(status)?;
        Ok(Response::new(pb::TenantList { tenants: t.into_iter().map(String::from).collect() }))
    }
}
