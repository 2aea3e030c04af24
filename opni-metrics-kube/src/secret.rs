//! A Secret as a small durable key-value file: read it whole, apply it whole (server-side
//! apply, so only the fields written here are owned).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use crate::error::Error;

/// The data of Secret `namespace/name`, or `None` when there is no such Secret.
///
/// # Errors
/// [`Error::Api`].
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let s = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Api { context: format!("get Secret {namespace}/{name}"), source })?;
    Ok(s.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// Makes Secret `namespace/name` (type `Opaque`) hold exactly `data`, creating it if needed,
/// as `field_manager`.
///
/// # Errors
/// [`Error::Api`], [`Error::Serde`].
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
    field_manager: &str,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_owned());
    s.metadata.namespace = Some(namespace.to_owned());
    s.type_ = Some("Opaque".to_owned());
    s.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    let mut value = serde_json::to_value(&s)
        .map_err(|source| Error::Serde { context: format!("Secret {namespace}/{name}"), source })?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    api.patch(name, &PatchParams::apply(field_manager).force(), &Patch::Apply(value))
        .await
        .map_err(|source| Error::Api { context: format!("apply Secret {namespace}/{name}"), source })?;
    Ok(())
}
