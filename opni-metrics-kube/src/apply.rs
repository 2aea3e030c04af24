//! The one way this crate writes objects: server-side apply with [`FIELD_MANAGER`], forced, so
//! fields edited by hand are taken back; deletes that treat 404 as done; pruning by label.

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use crate::error::{Error, is_conflict, is_not_found};
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// Attempts of one apply that meets 409 (a conflicting writer between our read and write).
const CONFLICT_ATTEMPTS: u32 = 5;

fn api(client: &Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

fn name_of(object: &Value) -> Result<&str, Error> {
    object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| Error::Invalid { field: "metadata.name".into(), reason: "a rendered object has no name".into() })
}

fn describe(ar: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", ar.kind),
        None => format!("{} {name}", ar.kind),
    }
}

/// Whether `object` carries our managed-by label.
pub(crate) fn is_ours(object: &DynamicObject) -> bool {
    object.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).is_some_and(|v| v == FIELD_MANAGER)
}

/// Server-side applies `object` (forced, [`FIELD_MANAGER`]); a 404 means the resource type is
/// not served and becomes [`Error::MissingCrd`] naming `provider`.
///
/// # Errors
/// [`Error::MissingCrd`], or [`Error::Api`] after [`CONFLICT_ATTEMPTS`] conflicts or any other
/// failure.
pub(crate) async fn apply(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    object: &Value,
    provider: &str,
) -> Result<DynamicObject, Error> {
    let name = name_of(object)?;
    let api = api(client, ar, namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.patch(name, &params, &Patch::Apply(object)).await {
            Ok(o) => return Ok(o),
            Err(e) if is_not_found(&e) => {
                return Err(Error::MissingCrd { what: format!("{} ({}): {provider}", ar.kind, ar.api_version) });
            }
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(object = %describe(ar, namespace, name), attempt, "apply conflicted; retrying");
            }
            Err(e) => return Err(Error::api(format!("apply {}", describe(ar, namespace, name)))(e)),
        }
    }
}

/// Reads one object; `None` when it (or its resource type) does not exist.
///
/// # Errors
/// [`Error::Api`] on any other failure.
pub(crate) async fn get(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    match api(client, ar, namespace).get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::api(format!("get {}", describe(ar, namespace, name)))(e)),
    }
}

/// Deletes one object if it exists and is ours (a missing resource type counts as deleted).
///
/// # Errors
/// [`Error::Api`] on any failure but 404.
pub(crate) async fn delete_ours(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), Error> {
    let Some(existing) = get(client, ar, namespace, name).await? else { return Ok(()) };
    if !is_ours(&existing) {
        tracing::warn!(object = %describe(ar, namespace, name), "not deleting an object opni-metrics does not own");
        return Ok(());
    }
    let mut params = DeleteParams::background();
    params.preconditions =
        existing.metadata.uid.clone().map(|uid| kube::api::Preconditions { uid: Some(uid), resource_version: None });
    match api(client, ar, namespace).delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::api(format!("delete {}", describe(ar, namespace, name)))(e)),
    }
}

/// Deletes every object of type `ar` in `namespace` that matches `selector`, is ours and whose
/// name is not in `keep`; returns the names deleted. A missing resource type deletes nothing.
///
/// # Errors
/// [`Error::Api`] on any failure but 404.
pub(crate) async fn prune(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    selector: &str,
    keep: &[&str],
) -> Result<Vec<String>, Error> {
    let api = api(client, ar, namespace);
    let list = match api.list(&ListParams::default().labels(selector)).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::api(format!("list {} {selector}", ar.plural))(e)),
    };
    let mut deleted = Vec::new();
    for o in list.items {
        let Some(name) = o.metadata.name.clone() else { continue };
        if keep.contains(&name.as_str()) || !is_ours(&o) || o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::api(format!("delete {}", describe(ar, namespace, &name)))(e)),
        }
    }
    Ok(deleted)
}
