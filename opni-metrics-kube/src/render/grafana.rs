//! Grafana through grafana-operator v5: a `Grafana` instance and the datasource querying the
//! gateway.
//!
//! The datasource calls the gateway's query proxy (`https://<gateway service>:<queryPort>/prometheus`;
//! Grafana appends `/api/v1/...`), never Cortex itself: the gateway decides the tenants from the
//! caller's role bindings. Grafana forwards the signed-in user's OAuth token
//! (`oauthPassThru`), so Grafana must log users in through the same identity provider the gateway
//! trusts (its `auth.generic_oauth` settings are the operator's to add). TLS to the gateway is
//! verified (`tlsSkipVerify: false`): the gateway's serving certificate must chain to a CA
//! Grafana trusts.

use std::collections::BTreeMap;

use serde_json::json;

use crate::crd::LabelSelector;
use crate::crd::grafana::{Datasource, Grafana, GrafanaDatasource, GrafanaDatasourceSpec, GrafanaSpec};

use super::meta::{App, Ctx, desired};
use super::{DesiredObject, ObjectKind, RenderError};

/// The label binding the datasource to this MonitoringCluster's Grafana; the value is the
/// MonitoringCluster's name.
pub(crate) const GRAFANA_LABEL: &str = "metrics.opni.io/grafana";
/// The port of the Service grafana-operator creates.
const GRAFANA_PORT: u16 = 3000;

fn ini(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The `Grafana` and `GrafanaDatasource`.
pub(crate) fn render(ctx: &Ctx<'_>) -> Result<Vec<DesiredObject>, RenderError> {
    let names = &ctx.names;
    let spec = &ctx.spec.grafana;
    let mut labels = ctx.labels(App::Grafana, None);
    labels.insert(GRAFANA_LABEL.to_owned(), names.mc.to_owned());

    let mut config = BTreeMap::from([
        ("log".to_owned(), ini(&[("mode", "console")])),
        ("auth".to_owned(), ini(&[("disable_login_form", "false")])),
        ("users".to_owned(), ini(&[("allow_sign_up", "false")])),
        ("analytics".to_owned(), ini(&[("reporting_enabled", "false"), ("check_for_updates", "false")])),
    ]);
    let ingress = spec.hostname.as_deref().map(|host| {
        let root_url = format!("https://{host}/");
        config.insert("server".to_owned(), ini(&[("domain", host), ("root_url", &root_url)]));
        config.insert("security".to_owned(), ini(&[("cookie_secure", "true")]));
        // TLS is terminated by the ingress controller (its default certificate unless the
        // operator adds one).
        json!({
            "spec": {
                "rules": [{
                    "host": host,
                    "http": { "paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": { "service": {
                            "name": names.grafana_service(),
                            "port": { "number": GRAFANA_PORT },
                        } },
                    }] },
                }],
                "tls": [{ "hosts": [host] }],
            },
        })
    });
    let mut grafana = Grafana::new(&names.grafana(), GrafanaSpec { version: spec.version.clone(), config, ingress });
    grafana.metadata = ctx.meta(names.grafana(), labels);

    let gateway = &ctx.spec.gateway;
    let datasource = GrafanaDatasourceSpec {
        instance_selector: LabelSelector {
            match_labels: BTreeMap::from([(GRAFANA_LABEL.to_owned(), names.mc.to_owned())]),
            match_expressions: Vec::new(),
        },
        datasource: Datasource {
            name: "Opni Metrics".to_owned(),
            type_: "prometheus".to_owned(),
            access: "proxy".to_owned(),
            url: format!("https://{}:{}/prometheus", names.host(&gateway.service_name), gateway.query_port),
            is_default: true,
            json_data: Some(json!({ "oauthPassThru": true, "tlsSkipVerify": false })),
        },
    };
    let mut ds = GrafanaDatasource::new(&names.datasource(), datasource);
    ds.metadata = ctx.meta(names.datasource(), ctx.labels(App::Grafana, None));

    Ok(vec![desired(ObjectKind::Grafana, &grafana)?, desired(ObjectKind::GrafanaDatasource, &ds)?])
}
