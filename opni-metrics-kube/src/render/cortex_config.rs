//! `cortex.yaml` (Cortex 1.19, blocks storage) and the Secret carrying it.
//!
//! - Multi-tenant: `auth_enabled: true`, the tenant is the `X-Scope-OrgID` header the gateway sets.
//! - Mutual TLS everywhere: the HTTP and gRPC servers require a client certificate signed by the
//!   cluster's CA (`RequireAndVerifyClientCert`); every internal client (ingester, store-gateway,
//!   frontend worker, ruler, alertmanager, memberlist) presents the serving certificate, which
//!   carries both server and client usages. Clients dial pod IPs found in the rings, so each
//!   names a Service host in `tls_server_name`, one of the certificate's DNS names.
//! - Rings over memberlist, joined through the `<mc>-cortex-gossip` headless Service.
//! - Everything local under `/data` (the pod's volume).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use crate::crd::monitoring_cluster::LimitsSpec;

use super::meta::{App, Ctx, desired};
use super::names::{CONFIG_KEY, DATA_DIR, STORAGE_SECRET_REF, TLS_CA, TLS_CERT, TLS_KEY};
use super::retention::retention_period;
use super::storage::{self, Purpose};
use super::targets::{GOSSIP_PORT, GRPC_PORT, HTTP_PORT, Plan, Target};
use super::{DesiredObject, ObjectKind, RenderError};

/// The config Secret `<mc>-cortex-config`.
///
/// `stringData` keeps the config readable in golden files and `kubectl get -o yaml` of what we
/// send; the API server stores it under `data`. Pods mount the key with `subPath`, which is never
/// refreshed in place: a change reaches the pods through the config-digest annotation instead,
/// which rolls them.
pub(crate) fn secret(ctx: &Ctx<'_>, config: String) -> Result<DesiredObject, RenderError> {
    let secret = Secret {
        metadata: ctx.meta(ctx.names.config_secret(), ctx.labels(App::Cortex, None)),
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config)])),
        ..Secret::default()
    };
    desired(ObjectKind::Secret, &secret)
}

/// The rendered `cortex.yaml`.
///
/// # Errors
/// An invalid storage block or retention (which [`super::validate`] reports first).
pub(crate) fn render(ctx: &Ctx<'_>, plan: &Plan<'_>) -> Result<String, RenderError> {
    let mut config = config(ctx, plan)?;
    // Key order must not depend on serde_json's `preserve_order` feature: the digest rolls pods.
    config.sort_all_objects();
    let yaml = serde_saphyr::to_string(&config).map_err(RenderError::Yaml)?;
    // Quote the credential reference: it is replaced textually before Cortex parses the YAML, so
    // quoted, the secret may contain `#`, `: `, a leading `*` or `&` and the like.
    let plain = format!(": {STORAGE_SECRET_REF}\n");
    Ok(yaml.replace(&plain, &format!(": '{STORAGE_SECRET_REF}'\n")))
}

/// The TLS options of a Cortex gRPC or HTTP client calling the pods behind `service`.
fn client_tls(ctx: &Ctx<'_>, service: &str, with_enabled: bool) -> Value {
    let mut tls = json!({
        "tls_cert_path": TLS_CERT,
        "tls_key_path": TLS_KEY,
        "tls_ca_path": TLS_CA,
        "tls_server_name": ctx.names.host(service),
    });
    if with_enabled {
        tls["tls_enabled"] = json!(true);
    }
    tls
}

fn memberlist_kv() -> Value {
    json!({ "kvstore": { "store": "memberlist" } })
}

fn config(ctx: &Ctx<'_>, plan: &Plan<'_>) -> Result<Value, RenderError> {
    let names = &ctx.names;
    let cortex = &ctx.spec.cortex;
    let storage = &cortex.config.storage;
    let svc = |t: Target| names.service_for(plan, t);
    let server_tls = json!({
        "cert_file": TLS_CERT,
        "key_file": TLS_KEY,
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": TLS_CA,
    });
    // Queriers pull queries from every query-frontend, so they dial each frontend pod: through
    // the headless Service in highly-available mode, the local one in all-in-one mode.
    let frontend_address = if plan.is_ha() {
        format!("{}:{GRPC_PORT}", names.fqdn(&names.headless(Target::QueryFrontend)))
    } else {
        format!("127.0.0.1:{GRPC_PORT}")
    };
    let mut blocks = storage::bucket(storage, Purpose::Blocks)?;
    blocks["tsdb"] = json!({ "dir": format!("{DATA_DIR}/tsdb") });
    blocks["bucket_store"] = json!({
        "sync_dir": format!("{DATA_DIR}/tsdb-sync"),
        "bucket_index": { "enabled": true },
    });
    let mut config = json!({
        "auth_enabled": true,
        "server": {
            "http_listen_port": HTTP_PORT,
            "grpc_listen_port": GRPC_PORT,
            "log_level": cortex.config.log_level.as_str(),
            "http_tls_config": server_tls,
            "grpc_tls_config": server_tls,
        },
        "memberlist": {
            "bind_port": GOSSIP_PORT,
            "join_members": [format!("{}:{GOSSIP_PORT}", names.fqdn(&names.gossip()))],
            // The first member finds nobody to join; it must start anyway.
            "abort_if_cluster_join_fails": false,
            "tls_enabled": true,
            "tls_cert_path": TLS_CERT,
            "tls_key_path": TLS_KEY,
            "tls_ca_path": TLS_CA,
            "tls_server_name": names.host(&names.gossip()),
        },
        "distributor": {
            "shard_by_all_labels": true,
            "ring": memberlist_kv(),
        },
        "ingester": {
            "lifecycler": {
                "ring": {
                    "kvstore": { "store": "memberlist" },
                    "replication_factor": plan.replication_factor(Target::Ingester),
                },
                "tokens_file_path": format!("{DATA_DIR}/tokens"),
            },
        },
        "ingester_client": { "grpc_client_config": client_tls(ctx, &svc(Target::Ingester), true) },
        "querier": { "store_gateway_client": client_tls(ctx, &svc(Target::StoreGateway), true) },
        "frontend_worker": {
            "frontend_address": frontend_address,
            "grpc_client_config": client_tls(ctx, &svc(Target::QueryFrontend), true),
        },
        "store_gateway": {
            "sharding_enabled": true,
            "sharding_ring": {
                "kvstore": { "store": "memberlist" },
                "replication_factor": plan.replication_factor(Target::StoreGateway),
            },
        },
        "compactor": {
            "data_dir": format!("{DATA_DIR}/compactor"),
            "sharding_enabled": true,
            "sharding_ring": memberlist_kv(),
        },
        "blocks_storage": blocks,
        "limits": limits(&cortex.config.retention, &cortex.config.limits)?,
    });
    if plan.runs(Target::Ruler) {
        config["ruler"] = ruler(ctx, plan);
        config["ruler_storage"] = storage::bucket(storage, Purpose::Rules)?;
    }
    if plan.runs(Target::Alertmanager) {
        config["alertmanager"] = alertmanager(ctx, plan);
        config["alertmanager_storage"] = storage::bucket(storage, Purpose::Alertmanager)?;
    }
    Ok(config)
}

fn ruler(ctx: &Ctx<'_>, plan: &Plan<'_>) -> Value {
    let names = &ctx.names;
    let mut ruler = json!({
        "enable_api": true,
        "enable_sharding": true,
        "ring": memberlist_kv(),
        "rule_path": format!("{DATA_DIR}/rules"),
        "ruler_client": client_tls(ctx, &names.service_for(plan, Target::Ruler), true),
    });
    if plan.runs(Target::Alertmanager) {
        let am = names.service_for(plan, Target::Alertmanager);
        ruler["alertmanager_url"] = json!(format!("https://{}:{HTTP_PORT}/alertmanager", names.host(&am)));
        // The notifier's HTTP client: TLS follows the URL scheme, no `tls_enabled` here.
        ruler["alertmanager_client"] = client_tls(ctx, &am, false);
    }
    ruler
}

fn alertmanager(ctx: &Ctx<'_>, plan: &Plan<'_>) -> Value {
    let names = &ctx.names;
    let am = names.service_for(plan, Target::Alertmanager);
    json!({
        "enable_api": true,
        "data_dir": format!("{DATA_DIR}/alertmanager"),
        // Required by Cortex; its path prefixes the Alertmanager UI and API.
        "external_url": format!("https://{}:{HTTP_PORT}/alertmanager", names.host(&am)),
        "sharding_enabled": true,
        "sharding_ring": {
            "kvstore": { "store": "memberlist" },
            "replication_factor": plan.replication_factor(Target::Alertmanager),
        },
        "alertmanager_client": client_tls(ctx, &am, true),
    })
}

fn limits(retention: &str, limits: &LimitsSpec) -> Result<Value, RenderError> {
    let period =
        retention_period(retention).map_err(|reason| RenderError::invalid("spec.cortex.config.retention", reason))?;
    let mut out = json!({
        "compactor_blocks_retention_period": period,
        // The spec's limits are per tenant: split them over the distributors in the ring rather
        // than granting each distributor the whole rate.
        "ingestion_rate_strategy": "global",
    });
    let fields = [
        ("ingestion_rate", limits.ingestion_rate),
        ("ingestion_burst_size", limits.ingestion_burst_size),
        ("max_global_series_per_user", limits.max_global_series_per_user),
        ("max_label_names_per_series", limits.max_label_names_per_series.map(u64::from)),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            out[key] = json!(v);
        }
    }
    Ok(out)
}
