//! A Secret as a small durable key-value file: read it whole, apply it whole (through the
//! crate's one apply path, so only the fields written here are owned and the Secret carries the
//! managed-by label).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ApiResource;

use crate::error::Error;
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL, apply};

fn resource() -> ApiResource {
    ApiResource::erase::<Secret>(&())
}

/// The data of Secret `namespace/name`, or `None` when there is no such Secret.
///
/// # Errors
/// [`Error::Api`], or [`Error::Serde`] for an object that is not a Secret.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let Some(object) = apply::get(client, &resource(), Some(namespace), name).await? else { return Ok(None) };
    let secret: Secret = serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Serde { context: format!("Secret {namespace}/{name}"), source })?;
    Ok(Some(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// Makes Secret `namespace/name` (type `Opaque`) hold exactly `data`, creating it if needed.
///
/// # Errors
/// [`Error::Api`], [`Error::Serde`].
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_owned());
    s.metadata.namespace = Some(namespace.to_owned());
    s.metadata.labels = Some([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())].into());
    s.type_ = Some("Opaque".to_owned());
    s.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    let mut value = serde_json::to_value(&s)
        .map_err(|source| Error::Serde { context: format!("Secret {namespace}/{name}"), source })?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    apply::apply(client, &resource(), Some(namespace), &value, "the core API").await?;
    Ok(())
}
