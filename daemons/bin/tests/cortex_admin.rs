//! Every `CortexAdmin` RPC against the Cortex-semantics test upstream (a real Prometheus
//! receiver holds the tenant's samples), with its error paths: a missing rule group, upstream
//! 5xx, a tenant the caller may not read, cluster-wide calls from a reader, no credential.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{WAIT, certs, gateway_config, start_gateway};
use opni_metrics_core::ClusterId;
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_proto::cortexadmin::v1 as pb;
use opni_metrics_proto::cortexadmin::v1::cortex_admin_client::CortexAdminClient;
use opni_metrics_proto::rbac::v1 as rbac;
use opni_metrics_proto::rbac::v1::rbac_client::RbacClient;
use opni_metrics_tests::cortex::CortexUpstream;
use opni_metrics_tests::http::eventually;
use opni_metrics_tests::oidc::epoch_now;
use opni_metrics_tests::prometheus::Prometheus;
use tonic::Code;

const A: &str = "cluster-a";
const B: &str = "cluster-b";

#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    }
}

type Client = CortexAdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>>;

async fn client(addr: std::net::SocketAddr, cred: Option<&str>) -> Client {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    CortexAdminClient::with_interceptor(ch, Auth(cred.map(str::to_owned)))
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.expect_err("an error").code()
}

const GROUP: &str = "name: team-alerts\nrules:\n- alert: Down\n  expr: up == 0\n  for: 5m\n- record: job:up:sum\n  expr: sum by (job) (up)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_cortex_semantics() {
    let certs = certs();
    let cortex = CortexUpstream::start().await;
    let recv = Prometheus::receiver().await.unwrap();
    cortex.backend(A, &recv.url());
    let mut gc = gateway_config(&certs, &format!("{}/api/v1/push", cortex.url()));
    gc.upstream.ingester_http_port = Some(cortex.port());
    let gw = start_gateway(gc.validate().unwrap().settings, Arc::new(MemoryStore::default())).await;
    for id in [A, B] {
        gw.gateway.state().create_cluster(&Cluster::new(ClusterId::new(id).unwrap())).await.unwrap();
    }
    let mut admin = client(gw.management_addr, Some(&gw.admin_token)).await;

    // WriteMetrics goes through the remote-write forwarder; Query reads it back
    let now = epoch_now() * 1000;
    let series = |name: &str| pb::TimeSeries {
        labels: vec![
            pb::Label { name: "__name__".into(), value: name.into() },
            pb::Label { name: "job".into(), value: "batch".into() },
            pb::Label { name: "instance".into(), value: "i-1".into() },
        ],
        samples: vec![pb::Sample { timestamp_ms: now, value: 42.0 }],
    };
    admin.write_metrics(pb::WriteRequest { tenant: A.into(), timeseries: vec![series("jobs_done")] }).await.unwrap();
    let bad =
        pb::WriteRequest { tenant: A.into(), timeseries: vec![pb::TimeSeries { labels: vec![], samples: vec![] }] };
    assert_eq!(code(admin.write_metrics(bad).await), Code::InvalidArgument);
    assert_eq!(
        code(admin.write_metrics(pb::WriteRequest { tenant: "nope".into(), timeseries: vec![series("x")] }).await),
        Code::PermissionDenied
    );
    let data = eventually(WAIT, "the written sample is queryable", || {
        let mut admin = admin.clone();
        async move {
            let r = admin
                .query(pb::QueryRequest { tenants: vec![A.into()], query: "jobs_done".into(), time: None })
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&r.get_ref().data).into_owned();
            if text.contains("\"42\"") { Ok(text) } else { Err(text) }
        }
    })
    .await
    .unwrap();
    assert!(data.contains("jobs_done"), "{data}");
    let ts = |ms: i64| prost_types::Timestamp { seconds: ms / 1000, nanos: 0 };
    let range = admin
        .query_range(pb::QueryRangeRequest {
            tenants: vec![],
            query: "jobs_done".into(),
            start: Some(ts(now - 60_000)),
            end: Some(ts(now + 1000)),
            step: Some(prost_types::Duration { seconds: 15, nanos: 0 }),
        })
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&range.get_ref().data).contains("matrix"));
    let no_step =
        pb::QueryRangeRequest { tenants: vec![], query: "x".into(), start: Some(ts(0)), end: Some(ts(1)), step: None };
    assert_eq!(code(admin.query_range(no_step).await), Code::InvalidArgument);
    let metrics = admin.get_series_metrics(pb::SeriesRequest { tenant: A.into(), job: "batch".into() }).await.unwrap();
    assert_eq!(metrics.get_ref().items.iter().map(|i| i.series_name.as_str()).collect::<Vec<_>>(), ["jobs_done"]);
    let labels = admin
        .get_metric_label_sets(pb::LabelRequest {
            tenant: A.into(),
            job: "batch".into(),
            metric_name: "jobs_done".into(),
        })
        .await
        .unwrap();
    let instance = labels.get_ref().items.iter().find(|l| l.name == "instance").unwrap();
    assert_eq!(instance.values, ["i-1"]);
    // remote write 1.0 carried no metadata for it
    let meta = admin
        .get_metric_metadata(pb::MetricMetadataRequest { tenants: vec![A.into()], metric_name: "jobs_done".into() })
        .await;
    assert_eq!(code(meta), Code::NotFound);
    let raw = admin
        .extract_raw_series(pb::MatcherRequest { tenant: A.into(), match_expr: "{job=\"batch\"}".into() })
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&raw.get_ref().data).contains("jobs_done"));
    let stats = admin.all_user_stats(()).await.unwrap();
    assert!(stats.get_ref().items.iter().any(|u| u.user_id == A && u.num_series >= 1), "{stats:?}");

    // rules: load, get, list, delete; the synced namespace is out of reach
    let load = |ns: &str, yaml: &str| pb::LoadRulesRequest {
        tenant: A.into(),
        namespace: ns.into(),
        yaml_content: yaml.as_bytes().to_vec().into(),
    };
    admin.load_rules(load("team", GROUP)).await.unwrap();
    assert!(cortex.rules(A)["team"].contains_key("team-alerts"));
    let got = admin
        .get_rule(pb::GetRuleRequest { tenant: A.into(), namespace: "team".into(), group_name: "team-alerts".into() })
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&got.get_ref().data).contains("job:up:sum"));
    let listed =
        admin.list_rules(pb::ListRulesRequest { rule_type: "alert".into(), ..Default::default() }).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listed.get_ref().data).unwrap();
    let groups = v["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v}");
    assert_eq!(groups[0]["tenant"], A);
    assert_eq!(groups[0]["rules"].as_array().unwrap().len(), 1, "only the alerting rule: {v}");
    let none = admin
        .list_rules(pb::ListRulesRequest { group_name_regexp: "other.*".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&none.get_ref().data).contains("\"groups\":[]"));
    assert_eq!(code(admin.load_rules(load("opni-synced", GROUP)).await), Code::InvalidArgument);
    assert_eq!(code(admin.load_rules(load("team", "groups: []\n")).await), Code::InvalidArgument);
    let del = pb::DeleteRuleRequest { tenant: A.into(), namespace: "team".into(), group_name: "team-alerts".into() };
    admin.delete_rule(del.clone()).await.unwrap();
    assert_eq!(code(admin.delete_rule(del).await), Code::NotFound);
    let gone = admin
        .get_rule(pb::GetRuleRequest { tenant: A.into(), namespace: "team".into(), group_name: "team-alerts".into() })
        .await;
    assert_eq!(code(gone), Code::NotFound);

    // Cortex itself
    let status = admin.get_cortex_status(()).await.unwrap().into_inner();
    let names: Vec<&str> = status.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["cortex", "distributor", "ingester", "ruler", "memberlist"],
        "compactor and store-gateway do not run"
    );
    assert!(status.components.iter().all(|c| c.ready), "{status:?}");
    let config = admin
        .get_cortex_config(pb::ConfigRequest { config_modes: vec!["diff".into(), "defaults".into()] })
        .await
        .unwrap();
    assert_eq!(config.get_ref().config_yaml.len(), 2);
    assert!(config.get_ref().config_yaml[1].contains("http_listen_port: 80"));
    assert_eq!(
        code(admin.get_cortex_config(pb::ConfigRequest { config_modes: vec!["all".into()] }).await),
        Code::InvalidArgument
    );
    admin.flush_blocks(()).await.unwrap();
    assert_eq!(cortex.flushes(), 1, "the one active ingester was flushed");

    // upstream failures map to codes a client can act on
    cortex.fail_with(Some(503));
    assert_eq!(
        code(admin.query(pb::QueryRequest { tenants: vec![], query: "up".into(), time: None }).await),
        Code::Unavailable
    );
    cortex.fail_with(Some(400));
    assert_eq!(
        code(admin.query(pb::QueryRequest { tenants: vec![], query: "up".into(), time: None }).await),
        Code::InvalidArgument
    );
    cortex.fail_with(None);

    // a reader bound to A: its tenants only, never cluster-wide calls
    let mut rb = RbacClient::with_interceptor(
        tonic::transport::Endpoint::from_shared(format!("http://{}", gw.management_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
        Auth(Some(gw.admin_token.clone())),
    );
    rb.create_role(rbac::Role { name: "a".into(), cluster_ids: vec![A.into()], selector: None }).await.unwrap();
    rb.create_role_binding(rbac::RoleBinding {
        name: "r".into(),
        role: "a".into(),
        subjects: vec!["user:reader".into()],
    })
    .await
    .unwrap();
    let key = rb
        .create_api_key(rbac::CreateApiKeyRequest { name: "reader".into(), subject: "reader".into(), groups: vec![] })
        .await
        .unwrap()
        .into_inner()
        .key;
    let mut reader = client(gw.management_addr, Some(&key)).await;
    let before = cortex.seen_at("/prometheus/api/v1/query").len();
    reader.query(pb::QueryRequest { tenants: vec![], query: "up".into(), time: None }).await.unwrap();
    let seen = cortex.seen_at("/prometheus/api/v1/query");
    assert_eq!(seen[before..].iter().map(|s| s.org_ids.clone()).collect::<Vec<_>>(), vec![vec![A.to_owned()]]);
    assert_eq!(
        code(reader.query(pb::QueryRequest { tenants: vec![B.into()], query: "up".into(), time: None }).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader.query(pb::QueryRequest { tenants: vec![format!("{A}|{B}")], query: "up".into(), time: None }).await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            reader
                .get_rule(pb::GetRuleRequest { tenant: B.into(), namespace: "x".into(), group_name: "y".into() })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(code(reader.get_cortex_status(()).await), Code::PermissionDenied);
    assert_eq!(code(reader.flush_blocks(()).await), Code::PermissionDenied);
    assert_eq!(
        code(reader.write_metrics(pb::WriteRequest { tenant: A.into(), timeseries: vec![series("x")] }).await),
        Code::PermissionDenied
    );
    let stats = reader.all_user_stats(()).await.unwrap();
    assert!(stats.get_ref().items.iter().all(|u| u.user_id == A));
    // no credential at all
    let mut anonymous = client(gw.management_addr, None).await;
    assert_eq!(
        code(anonymous.query(pb::QueryRequest { tenants: vec![], query: "up".into(), time: None }).await),
        Code::Unauthenticated
    );
    assert_eq!(cortex.flushes(), 1, "refused calls reached nothing");

    gw.shutdown().await;
}
