//! What each page shows and what each action does, through the management services.

use opni_metrics_core::cluster::ClusterConfig;
use opni_metrics_proto::bootstrap::v1::CreateTokenRequest;
use opni_metrics_proto::bootstrap::v1::bootstrap_server::Bootstrap as _;
use opni_metrics_proto::capability::v1::capability_server::Capability as _;
use opni_metrics_proto::capability::v1::{
    CancelUninstallRequest, InstallRequest, NodeCapabilityStatus, StatusRequest, TaskStatus, UninstallRequest,
    UninstallStatusRequest,
};
use opni_metrics_proto::cortexops::v1 as ops;
use opni_metrics_proto::cortexops::v1::cortex_ops_server::CortexOps as _;
use serde_json::Value;
use tonic::Request as Rpc;

use super::*;

/// One cluster as the pages show it.
pub(crate) struct Row {
    pub(crate) id: ClusterId,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) status: Result<NodeCapabilityStatus, String>,
    pub(crate) task: Option<TaskStatus>,
}

/// A rule group the ruler holds.
pub(crate) struct Group {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) rules: usize,
    pub(crate) health: String,
}

/// Why a page could not show something, in words.
fn words(s: &tonic::Status) -> String {
    s.message().to_owned()
}

impl Inner {
    pub(super) fn error_page(&self, ctx: &Ctx<'_>, status: StatusCode, message: &str) -> Reply {
        html(status, pages::error(ctx, message))
    }

    /// The visible clusters matching `selector` (`key=value,...`), with their state.
    async fn rows(&self, user: &User, selector: &str) -> Result<Vec<Row>, String> {
        let visible = self.visible(user).await?;
        let wanted: Vec<(String, String)> = selector
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
                None => Err(format!("{kv:?}: write the filter as key=value, separated by commas")),
            })
            .collect::<Result<_, _>>()?;
        let clusters = self.backend.state.clusters().await.map_err(|e| opni_metrics_core::error_chain(&e))?;
        let mut rows = Vec::new();
        for c in clusters.into_iter().filter(|c| visible.contains(&c.id)) {
            if !wanted.iter().all(|(k, v)| c.labels.get(k) == Some(v)) {
                continue;
            }
            rows.push(self.row(c.id, c.labels).await);
        }
        Ok(rows)
    }

    async fn row(&self, id: ClusterId, labels: BTreeMap<String, String>) -> Row {
        let status = self
            .backend
            .capability
            .status(Rpc::new(StatusRequest { cluster: id.to_string() }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| words(&s));
        let task = self
            .backend
            .capability
            .uninstall_status(Rpc::new(UninstallStatusRequest { cluster: id.to_string() }))
            .await
            .ok()
            .map(tonic::Response::into_inner);
        Row { id, labels, status, task }
    }

    pub(super) async fn clusters_page(&self, ctx: &Ctx<'_>, user: &User) -> Reply {
        let selector = ctx.query("selector").unwrap_or_default();
        let rows = self.rows(user, &selector).await;
        html(StatusCode::OK, pages::clusters(ctx, user, &selector, &rows, None))
    }

    pub(super) async fn clusters_fragment(&self, ctx: &Ctx<'_>, user: &User) -> Reply {
        let selector = ctx.query("selector").unwrap_or_default();
        let rows = self.rows(user, &selector).await;
        html(StatusCode::OK, pages::cluster_rows(&rows))
    }

    /// The cluster `id` if `user` may see it.
    async fn visible_cluster(&self, user: &User, id: &str) -> Option<opni_metrics_core::registry::Cluster> {
        let id = ClusterId::new(id).ok()?;
        let visible = self.visible(user).await.ok()?;
        if !visible.contains(&id) {
            return None;
        }
        self.backend.state.cluster(&id).await.ok().flatten().map(|(c, _)| c)
    }

    pub(super) async fn cluster_page(&self, ctx: &Ctx<'_>, user: &User, id: &str) -> Reply {
        // a cluster the user may not see is answered like one that does not exist
        let Some(cluster) = self.visible_cluster(user, id).await else {
            return self.error_page(ctx, StatusCode::NOT_FOUND, "There is no such cluster, or you may not see it.");
        };
        let desired = async {
            let config = self.backend.state.desired(&cluster.id).await?;
            let source = match self.backend.state.node_override(&cluster.id).await? {
                Some((_, r)) => format!("This cluster's own spec, revision {}", r.0),
                None => format!("The default spec, revision {}", self.backend.state.default_spec().await?.1.0),
            };
            Ok::<_, crate::state::StateError>((config, source))
        }
        .await
        .map_err(|e| opni_metrics_core::error_chain(&e));
        let row = self.row(cluster.id.clone(), cluster.labels.clone()).await;
        html(StatusCode::OK, pages::cluster(ctx, user, &row, &desired))
    }

    pub(super) async fn cluster_fragment(&self, user: &User, id: &str) -> Reply {
        let Some(cluster) = self.visible_cluster(user, id).await else {
            return text(StatusCode::NOT_FOUND, "no such cluster");
        };
        let row = self.row(cluster.id, cluster.labels).await;
        html(StatusCode::OK, pages::cluster_state(&row))
    }

    pub(super) async fn cluster_action(&self, ctx: &Ctx<'_>, id: &str, action: &str, form: &[u8]) -> Reply {
        let Ok(cluster) = ClusterId::new(id) else {
            return self.error_page(ctx, StatusCode::NOT_FOUND, "There is no such cluster.");
        };
        let c = cluster.to_string();
        let svc = &self.backend.capability;
        let outcome = match action {
            "install" => svc
                .install(Rpc::new(InstallRequest {
                    cluster: c.clone(),
                    ignore_warnings: form_value(form, "ignore") == Some("on".into()),
                }))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    let warned = r.status == opni_metrics_proto::capability::v1::InstallStatus::Warning as i32;
                    if warned { format!("Installed, with a warning: {}", r.message) } else { "Installed.".to_owned() }
                }),
            "uninstall" => svc
                .uninstall(Rpc::new(UninstallRequest {
                    cluster: c.clone(),
                    delete_stored_data: form_value(form, "delete_data") == Some("on".into()),
                    initial_delay: form_value(form, "delay_seconds")
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|s| *s > 0)
                        .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
                }))
                .await
                .map(|_| "Uninstall started.".to_owned()),
            "cancel" => svc
                .cancel_uninstall(Rpc::new(CancelUninstallRequest { cluster: c.clone() }))
                .await
                .map(|_| "Uninstall cancelled.".to_owned()),
            _ => return self.error_page(ctx, StatusCode::NOT_FOUND, "There is no such action."),
        };
        let (level, message) = match outcome {
            Ok(m) => ("ok", m),
            Err(s) => ("bad", format!("{} failed: {}", action_name(action), words(&s))),
        };
        let sig = flash_sig(ctx.csrf(), level, &message);
        redirect(&format!(
            "/console/clusters/{cluster}?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair(level, &message)
                .append_pair("sig", &sig)
                .finish()
        ))
    }

    pub(super) async fn bootstrap(&self, ctx: &Ctx<'_>, user: &User, form: &[u8]) -> Reply {
        let cluster = form_value(form, "cluster").unwrap_or_default();
        let rows = self.rows(user, "").await;
        let id = match ClusterId::new(cluster.trim()) {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("The cluster id is not valid: {e}");
                return html(StatusCode::BAD_REQUEST, pages::clusters(ctx, user, "", &rows, Some(Err(msg))));
            }
        };
        let ttl = form_value(form, "ttl_minutes").and_then(|m| m.parse::<i64>().ok()).unwrap_or(60).clamp(1, 24 * 60);
        let made = self
            .backend
            .bootstrap
            .create_token(Rpc::new(CreateTokenRequest {
                ttl: Some(prost_types::Duration { seconds: ttl * 60, nanos: 0 }),
                max_uses: 1,
                labels: Default::default(),
            }))
            .await;
        let join = made.map(|t| {
            let t = t.into_inner();
            pages::JoinCommand {
                cluster: id.to_string(),
                // the CA pin works on any machine (the CA file's path is this gateway's)
                command: if t.ca_pin.is_empty() {
                    format!(
                        "opni-metrics-agent --gateway {} --gateway-ca {} --bootstrap-token {} --cluster-id {id}",
                        self.backend.join_address,
                        self.backend.ca_path.display(),
                        t.token
                    )
                } else {
                    format!(
                        "opni-metrics-agent --gateway {} --gateway-ca-pin {} --bootstrap-token {} --cluster-id {id}",
                        self.backend.join_address, t.ca_pin, t.token
                    )
                },
                minutes: ttl,
            }
        });
        let join = join.map_err(|s| format!("Creating a bootstrap token failed: {}", words(&s)));
        html(StatusCode::OK, pages::clusters(ctx, user, "", &rows, Some(join)))
    }

    pub(super) async fn cortex_page(&self, ctx: &Ctx<'_>, user: &User, dry_run: Option<&[u8]>) -> Reply {
        if !user.admin {
            return self.error_page(ctx, StatusCode::FORBIDDEN, "The Cortex page is for admins.");
        }
        let svc = &self.backend.cortexops;
        let status = svc.status(Rpc::new(())).await.map(tonic::Response::into_inner).map_err(|s| words(&s));
        let active = svc
            .get_configuration(Rpc::new(ops::GetRequest { revision: None }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| words(&s));
        let presets = svc.list_presets(Rpc::new(())).await.map(|r| r.into_inner().items).unwrap_or_default();
        let history = svc
            .configuration_history(Rpc::new(ops::ConfigurationHistoryRequest {
                target: ops::Target::Active as i32,
                include_values: true,
            }))
            .await
            .map(|r| r.into_inner().entries)
            .map_err(|s| words(&s));
        let current_yaml = active.as_ref().ok().map(spec_yaml).unwrap_or_default();
        let mut edited = current_yaml.clone();
        let mut outcome = None;
        if let Some(form) = dry_run {
            edited = form_value(form, "config").unwrap_or_default();
            outcome = Some(self.dry_run(&edited, active.as_ref().ok().and_then(|a| a.revision)).await);
        }
        let status_code = match &outcome {
            Some(Err(_)) => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        html(status_code, pages::cortex(ctx, user, &status, &active, &presets, &history, &edited, outcome.as_ref()))
    }

    /// Dry-runs `yaml` as the active configuration.
    async fn dry_run(&self, yaml: &str, revision: Option<u64>) -> Result<pages::DryRun, String> {
        let config: ClusterConfig = serde_saphyr::from_str(yaml)
            .map_err(|e| format!("The configuration is not valid YAML for a Cortex configuration: {e}"))?;
        let mut spec = ops::CapabilityBackendConfigSpec::from(config);
        spec.revision = revision;
        let answer = self
            .backend
            .cortexops
            .dry_run(Rpc::new(ops::DryRunRequest {
                target: ops::Target::Active as i32,
                action: ops::Action::Set as i32,
                spec: Some(spec),
                revision,
            }))
            .await
            .map_err(|s| format!("The dry run failed: {}", words(&s)))?
            .into_inner();
        let current = answer.current.as_ref().map(spec_yaml).unwrap_or_default();
        let modified = answer.modified.as_ref().map(spec_yaml).unwrap_or_default();
        Ok(pages::DryRun { findings: answer.validation_errors, diff: line_diff(&current, &modified) })
    }

    pub(super) async fn ingestion_page(&self, ctx: &Ctx<'_>, user: &User) -> Reply {
        let tenants = self.visible(user).await;
        html(StatusCode::OK, pages::ingestion(ctx, user, &self.ingestion(tenants)))
    }

    pub(super) async fn ingestion_fragment(&self, user: &User) -> Reply {
        let tenants = self.visible(user).await;
        html(StatusCode::OK, pages::ingestion_charts(&self.ingestion(tenants)))
    }

    fn ingestion(&self, tenants: Result<BTreeSet<ClusterId>, String>) -> pages::Ingestion {
        match tenants {
            Ok(t) => pages::Ingestion {
                tenants: t.into_iter().map(|id| (self.history.points(&id), id)).map(|(p, id)| (id, p)).collect(),
                error: self.history.last_error(),
            },
            Err(e) => pages::Ingestion { tenants: Vec::new(), error: Some(e) },
        }
    }

    pub(super) async fn rules_page(&self, ctx: &Ctx<'_>, user: &User) -> Reply {
        let tenants = match self.visible(user).await {
            Ok(t) => t,
            Err(e) => return self.error_page(ctx, StatusCode::SERVICE_UNAVAILABLE, &e),
        };
        let mut per = Vec::new();
        for id in tenants {
            let url = format!("{}/prometheus/api/v1/rules", self.backend.api.apis.ruler);
            let groups = self
                .backend
                .api
                .get_json(&url, std::slice::from_ref(&id))
                .await
                .map(|v| groups(&v))
                .map_err(|s| words(&s));
            let sync = self.backend.state.rule_status(&id).await.ok().flatten();
            per.push((id, groups, sync));
        }
        html(StatusCode::OK, pages::rules(ctx, user, &per))
    }
}

fn action_name(action: &str) -> &'static str {
    match action {
        "install" => "Installing",
        "uninstall" => "Uninstalling",
        _ => "Cancelling",
    }
}

/// The groups of a Prometheus-format rules listing.
fn groups(v: &Value) -> Vec<Group> {
    v.pointer("/data/groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| {
            let rules = g.get("rules").and_then(Value::as_array);
            let health = rules
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("health").and_then(Value::as_str))
                .find(|h| *h != "ok")
                .unwrap_or("ok")
                .to_owned();
            Group {
                namespace: g.get("file").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: g.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                rules: rules.map_or(0, Vec::len),
                health,
            }
        })
        .collect()
}

/// A configuration from the wire as YAML (secrets are already redacted by CortexOps).
pub(crate) fn spec_yaml(spec: &ops::CapabilityBackendConfigSpec) -> String {
    match opni_metrics_proto::convert::cluster_config_unvalidated(spec.clone()) {
        Ok(c) => serde_saphyr::to_string(&c).unwrap_or_else(|e| format!("# cannot show: {e}\n")),
        Err(e) => format!("# cannot show: {e}\n"),
    }
}

/// A line diff (longest common subsequence): `(' ' | '+' | '-', line)`.
pub(crate) fn line_diff(old: &str, new: &str) -> Vec<(char, String)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 4_000_000 {
        return vec![('!', "too large to compare line by line".to_owned())];
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i].to_owned()));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(('+', b[j].to_owned()));
            j += 1;
        } else {
            out.push(('-', a[i].to_owned()));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changes() {
        let d = line_diff("a\nb\nc\n", "a\nx\nc\nd\n");
        let marks: String = d.iter().map(|(m, _)| *m).collect();
        assert_eq!(marks, " +- +");
        assert!(d.contains(&('-', "b".to_owned())) && d.contains(&('+', "x".to_owned())));
        assert!(d.contains(&('+', "d".to_owned())));
    }
}
