//! Roles, role bindings and API keys in the store, and the tenants a principal may read.

use std::collections::BTreeSet;

use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{ApiKeyRecord, Caller, PresentedKey, Role, RoleBinding, readable_tenants};
use opni_metrics_core::store::{Precondition, StoreError};

use super::{State, StateError, encode};

/// Key prefix of roles.
pub(crate) const ROLES: &str = "rbac/roles/";
/// Key prefix of role bindings.
pub(crate) const BINDINGS: &str = "rbac/bindings/";
/// Key prefix of API keys (by id).
pub(crate) const API_KEYS: &str = "rbac/apikeys/";

/// Why an access-control write was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessStateError {
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The name is taken.
    #[error("{kind} {name:?} already exists")]
    Exists {
        /// Role, role binding or API key.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Nothing by that name.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// Role, role binding or API key.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A binding names a role that does not exist.
    #[error("role {0:?} does not exist; create it before binding it")]
    MissingRole(String),
    /// A role is still granted by bindings.
    #[error("role {role:?} is still granted by role bindings {}", .bindings.join(", "))]
    RoleInUse {
        /// The role.
        role: String,
        /// The bindings granting it.
        bindings: Vec<String>,
    },
}

impl From<StoreError> for AccessStateError {
    fn from(e: StoreError) -> Self {
        Self::State(e.into())
    }
}

impl State {
    /// Every role, by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn roles(&self) -> Result<Vec<Role>, StateError> {
        Ok(self.list::<Role>(ROLES).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every role binding, by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn role_bindings(&self) -> Result<Vec<RoleBinding>, StateError> {
        Ok(self.list::<RoleBinding>(BINDINGS).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every API key record, by id.
    ///
    /// # Errors
    /// Store errors.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StateError> {
        Ok(self.list::<ApiKeyRecord>(API_KEYS).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Creates a role (validated by the caller).
    ///
    /// # Errors
    /// [`AccessStateError::Exists`], store errors.
    pub async fn create_role(&self, role: &Role) -> Result<(), AccessStateError> {
        create(self, ROLES, "role", &role.name, encode(role)).await
    }

    /// Deletes a role no binding grants.
    ///
    /// # Errors
    /// [`AccessStateError::RoleInUse`], [`AccessStateError::NotFound`], store errors.
    pub async fn delete_role(&self, name: &str) -> Result<(), AccessStateError> {
        let users: Vec<String> =
            self.role_bindings().await?.into_iter().filter(|b| b.role == name).map(|b| b.name).collect();
        if !users.is_empty() {
            return Err(AccessStateError::RoleInUse { role: name.to_owned(), bindings: users });
        }
        delete(self, ROLES, "role", name).await
    }

    /// Creates a role binding whose role exists.
    ///
    /// # Errors
    /// [`AccessStateError::MissingRole`], [`AccessStateError::Exists`], store errors.
    pub async fn create_role_binding(&self, binding: &RoleBinding) -> Result<(), AccessStateError> {
        if self.get::<Role>(&format!("{ROLES}{}", binding.role)).await?.is_none() {
            return Err(AccessStateError::MissingRole(binding.role.clone()));
        }
        create(self, BINDINGS, "role binding", &binding.name, encode(binding)).await
    }

    /// Deletes a role binding.
    ///
    /// # Errors
    /// [`AccessStateError::NotFound`], store errors.
    pub async fn delete_role_binding(&self, name: &str) -> Result<(), AccessStateError> {
        delete(self, BINDINGS, "role binding", name).await
    }

    /// A role by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn role(&self, name: &str) -> Result<Option<Role>, StateError> {
        Ok(self.get::<Role>(&format!("{ROLES}{name}")).await?.map(|(r, _)| r))
    }

    /// A role binding by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn role_binding(&self, name: &str) -> Result<Option<RoleBinding>, StateError> {
        Ok(self.get::<RoleBinding>(&format!("{BINDINGS}{name}")).await?.map(|(r, _)| r))
    }

    /// Stores a new API key record; names are unique.
    ///
    /// # Errors
    /// [`AccessStateError::Exists`], store errors.
    pub async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), AccessStateError> {
        if self.api_keys().await?.iter().any(|k| k.name == key.name) {
            return Err(AccessStateError::Exists { kind: "API key", name: key.name.clone() });
        }
        create(self, API_KEYS, "API key", &key.id, encode(key)).await
    }

    /// Revokes an API key by id or name.
    ///
    /// # Errors
    /// [`AccessStateError::NotFound`], store errors.
    pub async fn revoke_api_key(&self, id_or_name: &str) -> Result<ApiKeyRecord, AccessStateError> {
        let key = self
            .api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id_or_name || k.name == id_or_name)
            .ok_or_else(|| AccessStateError::NotFound { kind: "API key", name: id_or_name.to_owned() })?;
        delete(self, API_KEYS, "API key", &key.id).await?;
        Ok(key)
    }

    /// The caller an API key authenticates, if the key is valid and not revoked.
    ///
    /// # Errors
    /// Store errors.
    pub async fn api_key_caller(&self, key: &PresentedKey<'_>) -> Result<Option<Caller>, StateError> {
        let record = self.get::<ApiKeyRecord>(&format!("{API_KEYS}{}", key.id)).await?;
        Ok(record.filter(|(r, _)| key.matches(r)).map(|(r, _)| r.caller()))
    }

    /// The tenants `caller` may read now.
    ///
    /// # Errors
    /// Store errors.
    pub async fn readable_tenants(&self, caller: &Caller) -> Result<BTreeSet<ClusterId>, StateError> {
        let (roles, bindings, clusters) = futures::try_join!(self.roles(), self.role_bindings(), self.clusters())?;
        Ok(readable_tenants(caller, &roles, &bindings, &clusters))
    }
}

async fn create(
    state: &State,
    prefix: &str,
    kind: &'static str,
    name: &str,
    value: bytes::Bytes,
) -> Result<(), AccessStateError> {
    match state.store.put(&format!("{prefix}{name}"), value, Precondition::Absent).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(AccessStateError::Exists { kind, name: name.to_owned() }),
        Err(e) => Err(e.into()),
    }
}

async fn delete(state: &State, prefix: &str, kind: &'static str, name: &str) -> Result<(), AccessStateError> {
    match state.store.delete(&format!("{prefix}{name}"), Precondition::None).await? {
        Some(_) => Ok(()),
        None => Err(AccessStateError::NotFound { kind, name: name.to_owned() }),
    }
}
