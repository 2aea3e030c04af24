//! `CortexAdmin`: typed clients of the upstream Cortex's HTTP APIs, behind reader
//! authorisation.
//!
//! Every call first resolves the caller ([`Readers::principal`]) and the tenants it may read;
//! tenants named in a request must all be among them (`PERMISSION_DENIED` otherwise, with the
//! same words whether the tenant exists or not), and an empty list means all of them. Calls
//! that act on the whole Cortex (status, configuration, flush) or write (`WriteMetrics`) need
//! an admin. Upstream answers map to codes a client can act on: 400/422 `INVALID_ARGUMENT`,
//! 404 `NOT_FOUND`, 429 `RESOURCE_EXHAUSTED`, 401/403 `FAILED_PRECONDITION` (the gateway's own
//! upstream credentials are wrong), 501 `UNIMPLEMENTED`, other 5xx and connection failures
//! `UNAVAILABLE`, a timeout `DEADLINE_EXCEEDED`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::Method;
use opni_metrics_core::ClusterId;
use opni_metrics_core::promql::string_literal as quote;
use opni_metrics_core::remote_write::ForwardRequest;
use opni_metrics_proto::cortexadmin::v1 as pb;
use opni_metrics_proto::cortexadmin::v1::cortex_admin_server::CortexAdmin;
use prost::Message;
use serde_json::Value;
use tonic::{Request as GrpcRequest, Response, Status};
use tower::ServiceExt;

use crate::cortex_api::{CortexApi, upstream_status};
use crate::forward::ForwardService;
use crate::readers::{Principal, Readers};

/// The ruler namespace that holds rules synced from agents; `LoadRules` and `DeleteRule`
/// refuse it, so users never overwrite what agents own (nor the reverse).
pub const SYNCED_RULES_NAMESPACE: &str = opni_metrics_core::rules::SYNCED_NAMESPACE;
/// The most series one `WriteMetrics` carries.
const MAX_WRITE_SERIES: usize = 10_000;
/// The largest rule group accepted by `LoadRules`.
const MAX_RULE_GROUP: usize = 1 << 20;
/// Components whose ring `GetCortexStatus` reads.
const RING_COMPONENTS: &[&str] = &["distributor", "ingester", "ruler", "compactor", "store-gateway"];

/// The `CortexAdmin` service.
#[derive(Clone)]
pub(crate) struct CortexAdminService {
    readers: Readers,
    api: CortexApi,
    forward: ForwardService,
}

impl CortexAdminService {
    pub(crate) fn new(readers: Readers, api: CortexApi, forward: ForwardService) -> Self {
        Self { readers, api, forward }
    }

    async fn principal<T>(&self, req: &GrpcRequest<T>) -> Result<(Principal, BTreeSet<ClusterId>), Status> {
        let p = self.readers.principal(req).await.map_err(|e| {
            if e.is_unauthenticated() {
                Status::unauthenticated(e.to_string())
            } else {
                Status::unavailable(opni_metrics_core::error_chain(&e))
            }
        })?;
        let tenants =
            self.readers.tenants(&p).await.map_err(|e| Status::unavailable(opni_metrics_core::error_chain(&e)))?;
        Ok((p, tenants))
    }

    async fn admin<T>(&self, req: &GrpcRequest<T>, what: &str) -> Result<(), Status> {
        match self.principal(req).await?.0 {
            Principal::Admin => Ok(()),
            Principal::Reader(c) => Err(Status::permission_denied(format!(
                "{what} acts on the whole Cortex and needs an admin; {} is a reader",
                c.subject
            ))),
        }
    }

    /// The tenants of a call: all named ones must be allowed; none named means every allowed.
    async fn tenants<T>(&self, req: &GrpcRequest<T>, named: &[String]) -> Result<Vec<ClusterId>, Status> {
        let (_, allowed) = self.principal(req).await?;
        pick(&allowed, named)
    }

    async fn tenant<T>(&self, req: &GrpcRequest<T>, named: &str) -> Result<ClusterId, Status> {
        if named.is_empty() {
            return Err(Status::invalid_argument("tenant: missing"));
        }
        let mut t = self.tenants(req, &[named.to_owned()]).await?;
        t.pop().ok_or_else(|| Status::invalid_argument("tenant: missing"))
    }

    /// A POST of a form to the query frontend's `/api/v1/<endpoint>`: the answer unchanged.
    async fn post_form(&self, endpoint: &str, tenants: &[ClusterId], pairs: &[(&str, &str)]) -> Result<Bytes, Status> {
        let url = format!("{}/api/v1/{endpoint}", self.api.apis.query);
        let body = Bytes::from(form(pairs));
        self.api.call(Method::POST, &url, tenants, Some(("application/x-www-form-urlencoded", body))).await
    }

    /// `data` of a Prometheus API answer.
    async fn prom_data(&self, path_and_query: &str, tenants: &[ClusterId]) -> Result<Value, Status> {
        let url = format!("{}/api/v1/{path_and_query}", self.api.apis.query);
        let mut v = self.api.get_json(&url, tenants).await?;
        Ok(v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    }
}

/// The allowed tenants among `named` (all of `allowed` when empty).
fn pick(allowed: &BTreeSet<ClusterId>, named: &[String]) -> Result<Vec<ClusterId>, Status> {
    if named.is_empty() {
        if allowed.is_empty() {
            return Err(Status::permission_denied(
                "no tenant to read: no role binding grants the caller a registered cluster, or none is registered",
            ));
        }
        return Ok(allowed.iter().cloned().collect());
    }
    let mut out = Vec::with_capacity(named.len());
    for (i, t) in named.iter().enumerate() {
        let id = ClusterId::new(t.clone()).map_err(|e| Status::invalid_argument(format!("tenants[{i}]: {e}")))?;
        if !allowed.contains(&id) {
            return Err(Status::permission_denied(format!("the caller may not read tenant {id}")));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn seconds(t: &prost_types::Timestamp) -> String {
    format!("{}.{:03}", t.seconds, t.nanos.clamp(0, 999_999_999) / 1_000_000)
}

fn namespace(ns: &str, write: bool) -> Result<(), Status> {
    if ns.is_empty() || ns.len() > 256 || ns.chars().any(char::is_control) {
        return Err(Status::invalid_argument("namespace: must be 1 to 256 printable characters"));
    }
    if write && ns == SYNCED_RULES_NAMESPACE {
        return Err(Status::invalid_argument(format!(
            "namespace {SYNCED_RULES_NAMESPACE} is reserved for rules synced from agents"
        )));
    }
    Ok(())
}

fn group_name(g: &str) -> Result<(), Status> {
    if g.is_empty() || g.len() > 1024 || g.chars().any(char::is_control) {
        return Err(Status::invalid_argument("group_name: must be 1 to 1024 printable characters"));
    }
    Ok(())
}

/// Checks that `yaml` is one Prometheus rule group: a `name` and a non-empty `rules` list
/// whose entries each have `expr` and one of `record` / `alert`.
fn check_rule_group(yaml: &[u8]) -> Result<String, Status> {
    let bad = |m: String| Status::invalid_argument(format!("yaml_content: {m}"));
    if yaml.len() > MAX_RULE_GROUP {
        return Err(bad(format!("larger than {MAX_RULE_GROUP} bytes")));
    }
    let text = std::str::from_utf8(yaml).map_err(|_| bad("not UTF-8".into()))?;
    let v: Value = serde_saphyr::from_str(text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let name = v.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| bad("one rule group with a name is expected (not a file with `groups:`)".into()))?;
    let rules = v.get("rules").and_then(Value::as_array).filter(|r| !r.is_empty());
    let rules = rules.ok_or_else(|| bad(format!("group {name:?} has no rules")))?;
    for (i, r) in rules.iter().enumerate() {
        let has = |k: &str| r.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        if !has("expr") || has("record") == has("alert") {
            return Err(bad(format!("rules[{i}] needs expr and exactly one of record or alert")));
        }
    }
    Ok(name.to_owned())
}

/// Minimal remote-write 1.0 messages for `WriteMetrics`.
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub(super) labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub(super) samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Label {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sample {
        #[prost(double, tag = "1")]
        pub(super) value: f64,
        #[prost(int64, tag = "2")]
        pub(super) timestamp: i64,
    }
}

fn write_body(series: Vec<pb::TimeSeries>) -> Result<Bytes, Status> {
    if series.is_empty() || series.len() > MAX_WRITE_SERIES {
        return Err(Status::invalid_argument(format!("timeseries: 1 to {MAX_WRITE_SERIES} series expected")));
    }
    let mut out = Vec::with_capacity(series.len());
    for (i, s) in series.into_iter().enumerate() {
        let mut labels: Vec<prompb::Label> =
            s.labels.into_iter().map(|l| prompb::Label { name: l.name, value: l.value }).collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        if !labels.iter().any(|l| l.name == "__name__" && !l.value.is_empty()) {
            return Err(Status::invalid_argument(format!("timeseries[{i}]: no __name__ label")));
        }
        if let Some(l) = labels.iter().find(|l| !opni_metrics_core::promql::is_label_name(&l.name)) {
            return Err(Status::invalid_argument(format!("timeseries[{i}]: invalid label name {:?}", l.name)));
        }
        if labels.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(Status::invalid_argument(format!("timeseries[{i}]: duplicate label name")));
        }
        if s.samples.is_empty() {
            return Err(Status::invalid_argument(format!("timeseries[{i}]: no samples")));
        }
        let samples =
            s.samples.into_iter().map(|p| prompb::Sample { value: p.value, timestamp: p.timestamp_ms }).collect();
        out.push(prompb::TimeSeries { labels, samples });
    }
    let raw = prompb::WriteRequest { timeseries: out }.encode_to_vec();
    let compressed =
        snap::raw::Encoder::new().compress_vec(&raw).map_err(|e| Status::internal(format!("snappy: {e}")))?;
    Ok(Bytes::from(compressed))
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn metadata_of(name: &str, entries: Option<&Value>) -> pb::MetricMetadata {
    let first = entries.and_then(Value::as_array).and_then(|a| a.first());
    pb::MetricMetadata {
        metric_family_name: name.to_owned(),
        r#type: first.map(|f| str_of(f, "type").to_owned()).unwrap_or_default(),
        help: first.map(|f| str_of(f, "help").to_owned()).unwrap_or_default(),
        unit: first.map(|f| str_of(f, "unit").to_owned()).unwrap_or_default(),
    }
}

fn regex(field: &str, r: &str) -> Result<Option<regex::Regex>, Status> {
    if r.is_empty() {
        return Ok(None);
    }
    regex::RegexBuilder::new(&format!("^(?:{r})$"))
        .size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Host and port of a ring member's address (`host:port`, `[v6]:port`).
fn host_of(addr: &str) -> Option<&str> {
    let (host, _port) = addr.rsplit_once(':')?;
    (!host.is_empty()).then_some(host)
}

#[tonic::async_trait]
impl CortexAdmin for CortexAdminService {
    async fn all_user_stats(&self, req: GrpcRequest<()>) -> Result<Response<pb::UserStatsList>, Status> {
        let (_, allowed) = self.principal(&req).await?;
        let url = format!("{}/distributor/all_user_stats", self.api.apis.admin);
        let v = self.api.get_json(&url, &[]).await?;
        let items = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| {
                let id = ClusterId::new(str_of(u, "userID").to_owned()).ok()?;
                allowed.contains(&id).then(|| pb::UserStats {
                    user_id: id.to_string(),
                    ingestion_rate: u.get("ingestionRate").and_then(Value::as_f64).unwrap_or_default(),
                    num_series: u.get("numSeries").and_then(Value::as_u64).unwrap_or_default(),
                    api_ingestion_rate: u.get("APIIngestionRate").and_then(Value::as_f64).unwrap_or_default(),
                    rule_ingestion_rate: u.get("RuleIngestionRate").and_then(Value::as_f64).unwrap_or_default(),
                })
            })
            .collect();
        Ok(Response::new(pb::UserStatsList { items }))
    }

    async fn write_metrics(&self, req: GrpcRequest<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        self.admin(&req, "WriteMetrics").await?;
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let body = write_body(req.into_inner().timeseries)?;
        let fr = ForwardRequest {
            tenant,
            body,
            content_type: "application/x-protobuf".into(),
            version: Some("0.1.0".into()),
        };
        let resp = self.forward.clone().oneshot(fr).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if (200..300).contains(&resp.status) {
            Ok(Response::new(pb::WriteResponse {}))
        } else {
            Err(upstream_status(resp.status, "remote write", &resp.body))
        }
    }

    async fn query(&self, req: GrpcRequest<pb::QueryRequest>) -> Result<Response<pb::QueryResponse>, Status> {
        let tenants = self.tenants(&req, &req.get_ref().tenants).await?;
        let r = req.get_ref();
        if r.query.is_empty() {
            return Err(Status::invalid_argument("query: missing"));
        }
        let time = r.time.as_ref().map(seconds);
        let mut pairs = vec![("query", r.query.as_str())];
        if let Some(t) = &time {
            pairs.push(("time", t));
        }
        let data = self.post_form("query", &tenants, &pairs).await?;
        Ok(Response::new(pb::QueryResponse { data }))
    }

    async fn query_range(
        &self,
        req: GrpcRequest<pb::QueryRangeRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let tenants = self.tenants(&req, &req.get_ref().tenants).await?;
        let r = req.get_ref();
        if r.query.is_empty() {
            return Err(Status::invalid_argument("query: missing"));
        }
        let (Some(start), Some(end)) = (&r.start, &r.end) else {
            return Err(Status::invalid_argument("start and end: required"));
        };
        let step = r.step.as_ref().filter(|s| s.seconds > 0 || (s.seconds == 0 && s.nanos > 0));
        let step = step.ok_or_else(|| Status::invalid_argument("step: required and above zero"))?;
        if (end.seconds, end.nanos) < (start.seconds, start.nanos) {
            return Err(Status::invalid_argument("end: before start"));
        }
        let step = format!("{}.{:03}", step.seconds, step.nanos / 1_000_000);
        let (start, end) = (seconds(start), seconds(end));
        let pairs = [("query", r.query.as_str()), ("start", &start), ("end", &end), ("step", &step)];
        let data = self.post_form("query_range", &tenants, &pairs).await?;
        Ok(Response::new(pb::QueryResponse { data }))
    }

    async fn get_series_metrics(
        &self,
        req: GrpcRequest<pb::SeriesRequest>,
    ) -> Result<Response<pb::SeriesInfoList>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let job = &req.get_ref().job;
        if job.is_empty() {
            return Err(Status::invalid_argument("job: missing"));
        }
        let t = [tenant];
        let series =
            self.prom_data(&format!("series?{}", form(&[("match[]", &format!("{{job={}}}", quote(job)))])), &t).await?;
        let names: BTreeSet<String> = series
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| str_of(s, "__name__").to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        let meta = self.prom_data("metadata", &t).await?;
        let items = names
            .into_iter()
            .map(|n| pb::SeriesInfo { metadata: Some(metadata_of(&n, meta.get(&n))), series_name: n })
            .collect();
        Ok(Response::new(pb::SeriesInfoList { items }))
    }

    async fn get_metric_label_sets(
        &self,
        req: GrpcRequest<pb::LabelRequest>,
    ) -> Result<Response<pb::MetricLabels>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let r = req.get_ref();
        if r.metric_name.is_empty() {
            return Err(Status::invalid_argument("metric_name: missing"));
        }
        let mut sel = format!("__name__={}", quote(&r.metric_name));
        if !r.job.is_empty() {
            sel.push_str(&format!(",job={}", quote(&r.job)));
        }
        let series =
            self.prom_data(&format!("series?{}", form(&[("match[]", &format!("{{{sel}}}"))])), &[tenant]).await?;
        let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in series.as_array().into_iter().flatten() {
            for (k, v) in s.as_object().into_iter().flatten() {
                if k != "__name__"
                    && let Some(v) = v.as_str()
                {
                    sets.entry(k.clone()).or_default().insert(v.to_owned());
                }
            }
        }
        let items = sets
            .into_iter()
            .map(|(name, values)| pb::LabelSet { name, values: values.into_iter().collect() })
            .collect();
        Ok(Response::new(pb::MetricLabels { items }))
    }

    async fn get_metric_metadata(
        &self,
        req: GrpcRequest<pb::MetricMetadataRequest>,
    ) -> Result<Response<pb::MetricMetadata>, Status> {
        let tenants = self.tenants(&req, &req.get_ref().tenants).await?;
        let name = &req.get_ref().metric_name;
        if name.is_empty() {
            return Err(Status::invalid_argument("metric_name: missing"));
        }
        let meta = self.prom_data(&format!("metadata?{}", form(&[("metric", name)])), &tenants).await?;
        match meta.get(name) {
            Some(e) if e.as_array().is_some_and(|a| !a.is_empty()) => Ok(Response::new(metadata_of(name, Some(e)))),
            _ => Err(Status::not_found(format!("no metadata for metric {name}"))),
        }
    }

    async fn list_rules(&self, req: GrpcRequest<pb::ListRulesRequest>) -> Result<Response<pb::RawResponse>, Status> {
        let tenants = self.tenants(&req, &req.get_ref().tenants).await?;
        let r = req.get_ref();
        let kind = match r.rule_type.as_str() {
            "" => None,
            "alert" | "record" => Some(r.rule_type.as_str()),
            other => return Err(Status::invalid_argument(format!("rule_type: {other:?}; use alert or record"))),
        };
        let (rule_re, group_re, ns_re) = (
            regex("rule_name_regexp", &r.rule_name_regexp)?,
            regex("group_name_regexp", &r.group_name_regexp)?,
            regex("namespace_regexp", &r.namespace_regexp)?,
        );
        let mut groups = Vec::new();
        for t in tenants {
            let q = kind.map(|k| format!("?{}", form(&[("type", k)]))).unwrap_or_default();
            let url = format!("{}/prometheus/api/v1/rules{q}", self.api.apis.ruler);
            let v = self.api.get_json(&url, std::slice::from_ref(&t)).await?;
            let list = v.pointer("/data/groups").and_then(Value::as_array).cloned().unwrap_or_default();
            for mut g in list {
                if !group_re.as_ref().is_none_or(|re| re.is_match(str_of(&g, "name")))
                    || !ns_re.as_ref().is_none_or(|re| re.is_match(str_of(&g, "file")))
                {
                    continue;
                }
                let rules: Vec<Value> = g
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|rule| {
                        rule_re.as_ref().is_none_or(|re| re.is_match(str_of(rule, "name")))
                            && (r.health.is_empty() || r.health.iter().any(|h| h == str_of(rule, "health")))
                            && (r.state.is_empty() || r.state.iter().any(|s| s == str_of(rule, "state")))
                    })
                    .cloned()
                    .collect();
                if rules.is_empty() && (rule_re.is_some() || !r.health.is_empty() || !r.state.is_empty()) {
                    continue;
                }
                if let Some(o) = g.as_object_mut() {
                    o.insert("rules".into(), Value::Array(rules));
                    o.insert("tenant".into(), Value::String(t.to_string()));
                }
                groups.push(g);
            }
        }
        let out = serde_json::json!({ "status": "success", "data": { "groups": groups } });
        Ok(Response::new(pb::RawResponse { data: Bytes::from(out.to_string()) }))
    }

    async fn get_rule(&self, req: GrpcRequest<pb::GetRuleRequest>) -> Result<Response<pb::RawResponse>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let r = req.get_ref();
        namespace(&r.namespace, false)?;
        group_name(&r.group_name)?;
        let url = format!("{}/api/v1/rules/{}/{}", self.api.apis.ruler, segment(&r.namespace), segment(&r.group_name));
        let data = self.api.call(Method::GET, &url, &[tenant], None).await?;
        Ok(Response::new(pb::RawResponse { data }))
    }

    async fn load_rules(&self, req: GrpcRequest<pb::LoadRulesRequest>) -> Result<Response<()>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let r = req.into_inner();
        namespace(&r.namespace, true)?;
        check_rule_group(&r.yaml_content)?;
        let url = format!("{}/api/v1/rules/{}", self.api.apis.ruler, segment(&r.namespace));
        self.api.call(Method::POST, &url, &[tenant], Some(("application/yaml", r.yaml_content))).await?;
        Ok(Response::new(()))
    }

    async fn delete_rule(&self, req: GrpcRequest<pb::DeleteRuleRequest>) -> Result<Response<()>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let r = req.get_ref();
        namespace(&r.namespace, true)?;
        group_name(&r.group_name)?;
        let url = format!("{}/api/v1/rules/{}/{}", self.api.apis.ruler, segment(&r.namespace), segment(&r.group_name));
        self.api.call(Method::DELETE, &url, &[tenant], None).await?;
        Ok(Response::new(()))
    }

    async fn get_cortex_status(&self, req: GrpcRequest<()>) -> Result<Response<pb::CortexStatus>, Status> {
        self.admin(&req, "GetCortexStatus").await?;
        let mut components = Vec::new();
        let ready_url = format!("{}/ready", self.api.apis.admin);
        components.push(match self.api.call(Method::GET, &ready_url, &[], None).await {
            Ok(_) => {
                pb::ComponentStatus { name: "cortex".into(), ready: true, message: String::new(), ring: Bytes::new() }
            }
            Err(e) => pb::ComponentStatus {
                name: "cortex".into(),
                ready: false,
                message: e.message().to_owned(),
                ring: Bytes::new(),
            },
        });
        for c in RING_COMPONENTS {
            let url = format!("{}/{c}/ring", self.api.apis.admin);
            match self.api.call(Method::GET, &url, &[], None).await {
                Ok(body) => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let shards = v.get("shards").and_then(Value::as_array).cloned().unwrap_or_default();
                    let inactive: Vec<String> = shards
                        .iter()
                        .filter(|s| str_of(s, "state") != "ACTIVE")
                        .map(|s| format!("{} is {}", str_of(s, "id"), str_of(s, "state")))
                        .collect();
                    let ready = !shards.is_empty() && inactive.is_empty();
                    let message =
                        if shards.is_empty() { "the ring has no members".into() } else { inactive.join("; ") };
                    components.push(pb::ComponentStatus { name: (*c).into(), ready, message, ring: body });
                }
                // a component that does not run here (or has no ring in this deployment)
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => components.push(pb::ComponentStatus {
                    name: (*c).into(),
                    ready: false,
                    message: e.message().to_owned(),
                    ring: Bytes::new(),
                }),
            }
        }
        let url = format!("{}/memberlist", self.api.apis.admin);
        match self.api.call(Method::GET, &url, &[], None).await {
            Ok(body) => components.push(pb::ComponentStatus {
                name: "memberlist".into(),
                ready: true,
                message: String::new(),
                ring: body,
            }),
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => components.push(pb::ComponentStatus {
                name: "memberlist".into(),
                ready: false,
                message: e.message().to_owned(),
                ring: Bytes::new(),
            }),
        }
        let now = opni_metrics_proto::convert::wire_timestamp(crate::state::now());
        Ok(Response::new(pb::CortexStatus { timestamp: Some(now), components }))
    }

    async fn get_cortex_config(
        &self,
        req: GrpcRequest<pb::ConfigRequest>,
    ) -> Result<Response<pb::ConfigResponse>, Status> {
        self.admin(&req, "GetCortexConfig").await?;
        let modes = if req.get_ref().config_modes.is_empty() {
            vec![String::new()]
        } else {
            req.get_ref().config_modes.clone()
        };
        let mut config_yaml = Vec::with_capacity(modes.len());
        for m in modes {
            let q = match m.as_str() {
                "" | "values" => String::new(),
                "diff" | "defaults" => format!("?mode={m}"),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "config_modes: {other:?}; use values, diff or defaults"
                    )));
                }
            };
            let url = format!("{}/config{q}", self.api.apis.admin);
            let b = self.api.call(Method::GET, &url, &[], None).await?;
            config_yaml.push(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(Response::new(pb::ConfigResponse { config_yaml }))
    }

    async fn flush_blocks(&self, req: GrpcRequest<()>) -> Result<Response<()>, Status> {
        self.admin(&req, "FlushBlocks").await?;
        let ring = self.api.get_json(&format!("{}/ingester/ring", self.api.apis.admin), &[]).await?;
        let admin: http::Uri = self.api.apis.admin.parse().map_err(|_| Status::internal("admin URL"))?;
        let scheme = admin.scheme_str().unwrap_or("http");
        let port = self.api.apis.ingester_http_port.or_else(|| admin.port_u16()).unwrap_or(if scheme == "https" {
            443
        } else {
            80
        });
        let active: Vec<String> = ring
            .get("shards")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| str_of(s, "state") == "ACTIVE")
            .filter_map(|s| host_of(str_of(s, "address")).map(str::to_owned))
            .collect();
        if active.is_empty() {
            return Err(Status::failed_precondition("the ingester ring has no ACTIVE ingester to flush"));
        }
        let mut failed = Vec::new();
        for host in &active {
            let url = format!("{scheme}://{host}:{port}/ingester/flush");
            if let Err(e) = self.api.call(Method::POST, &url, &[], None).await {
                failed.push(format!("{host}: {}", e.message()));
            }
        }
        if failed.is_empty() {
            Ok(Response::new(()))
        } else {
            Err(Status::unavailable(format!(
                "flush failed on {} of {} ingesters: {}",
                failed.len(),
                active.len(),
                failed.join("; ")
            )))
        }
    }

    async fn extract_raw_series(
        &self,
        req: GrpcRequest<pb::MatcherRequest>,
    ) -> Result<Response<pb::RawResponse>, Status> {
        let tenant = self.tenant(&req, &req.get_ref().tenant).await?;
        let m = &req.get_ref().match_expr;
        if m.is_empty() {
            return Err(Status::invalid_argument("match_expr: missing"));
        }
        let url = format!("{}/api/v1/series?{}", self.api.apis.query, form(&[("match[]", m)]));
        let data = self.api.call(Method::GET, &url, &[tenant], None).await?;
        Ok(Response::new(pb::RawResponse { data }))
    }
}

/// Tests of the pure parts; the RPCs run against the Cortex-semantics test upstream in
/// `tests/cortexadmin.rs` of the daemons.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(v: &[&str]) -> BTreeSet<ClusterId> {
        v.iter().map(|s| ClusterId::new(*s).unwrap()).collect()
    }

    #[test]
    fn named_tenants_must_all_be_allowed() {
        let allowed = ids(&["a", "b"]);
        assert_eq!(pick(&allowed, &[]).unwrap().len(), 2);
        assert_eq!(pick(&allowed, &["b".into(), "b".into()]).unwrap(), vec![ClusterId::new("b").unwrap()]);
        let denied = pick(&allowed, &["a".into(), "c".into()]).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(pick(&allowed, &["a|c".into()]).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(pick(&BTreeSet::new(), &[]).unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn upstream_codes_map_to_actionable_statuses() {
        let code = |c| upstream_status(c, "u", b"x").code();
        assert_eq!(code(400), tonic::Code::InvalidArgument);
        assert_eq!(code(404), tonic::Code::NotFound);
        assert_eq!(code(429), tonic::Code::ResourceExhausted);
        assert_eq!(code(403), tonic::Code::FailedPrecondition);
        assert_eq!(code(500), tonic::Code::Unavailable);
        assert_eq!(code(503), tonic::Code::Unavailable);
        assert_eq!(code(501), tonic::Code::Unimplemented);
    }

    #[test]
    fn rule_groups_are_checked_before_sending() {
        assert_eq!(check_rule_group(b"name: g\nrules:\n- record: a:b\n  expr: up\n").unwrap(), "g");
        for bad in [
            &b"groups:\n- name: g\n  rules: []\n"[..],
            b"name: g\nrules: []\n",
            b"name: g\nrules:\n- expr: up\n",
            b"name: g\nrules:\n- record: a\n  alert: b\n  expr: up\n",
            b"\xff\xfe",
            b"[unclosed",
        ] {
            assert_eq!(check_rule_group(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        assert!(namespace(SYNCED_RULES_NAMESPACE, true).is_err());
        assert!(namespace(SYNCED_RULES_NAMESPACE, false).is_ok());
    }

    #[test]
    fn promql_strings_and_writes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        let s = |labels: &[(&str, &str)]| pb::TimeSeries {
            labels: labels.iter().map(|(n, v)| pb::Label { name: (*n).into(), value: (*v).into() }).collect(),
            samples: vec![pb::Sample { timestamp_ms: 1, value: 1.0 }],
        };
        assert!(write_body(vec![s(&[("__name__", "m"), ("a", "1")])]).is_ok());
        assert!(write_body(vec![s(&[("a", "1")])]).is_err());
        assert!(write_body(vec![s(&[("__name__", "m"), ("1a", "1")])]).is_err());
        assert!(write_body(vec![s(&[("__name__", "m"), ("a", "1"), ("a", "2")])]).is_err());
        assert!(write_body(vec![]).is_err());
        assert_eq!(host_of("10.0.0.1:9095"), Some("10.0.0.1"));
        assert_eq!(host_of("[::1]:9095"), Some("[::1]"));
    }
}
