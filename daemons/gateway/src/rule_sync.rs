//! `RemoteWrite.SyncRules`: an agent's complete set of rule groups written to the upstream ruler
//! under the agent's tenant, in [`SYNCED_NAMESPACE`] only.
//!
//! The ruler is the record of what was written earlier: each sync lists the tenant's synced
//! namespace, writes the groups that are new or changed, leaves identical ones alone, and
//! deletes the ones the agent no longer sends. Nothing in the request chooses the tenant (the
//! caller's certificate does) or the namespace (always [`SYNCED_NAMESPACE`]); a group whose
//! name differs from its YAML's, that is not one rule group, or that breaks the limits is
//! refused on its own while the others sync. Upstream 5xx answers are retried with back-off;
//! a 4xx refuses that group only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use opni_metrics_core::rules::{MAX_GROUP_BYTES, MAX_GROUPS, MAX_SYNC_BYTES, RuleGroup, SYNCED_NAMESPACE, set_digest};
use opni_metrics_core::{ClusterId, Timestamp};
use opni_metrics_proto::remote::v1::{RuleGroupError, SyncRulesRequest, SyncRulesResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::{Code, Status};

use crate::cortex_api::CortexApi;
use crate::metrics::GatewayMetrics;
use crate::state::State;

/// Problems kept in a cluster's rule status.
const MAX_PROBLEMS: usize = 50;
/// Attempts of one upstream call that answers 5xx.
const ATTEMPTS: u32 = 3;

/// A group that is not synced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleProblem {
    /// The group's name.
    pub name: String,
    /// Where the agent found it.
    pub source: String,
    /// Why.
    pub message: String,
    /// `refused` (gateway or ruler) or `invalid` (agent).
    pub kind: String,
}

/// A cluster's last rule sync, as stored (any replica answers `capability status` from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSyncStatus {
    /// Groups the ruler holds as sent.
    pub synced: u32,
    /// Groups refused by the gateway or the ruler.
    pub refused: u32,
    /// Groups the agent found invalid.
    pub invalid: u32,
    /// When the sync finished.
    pub last_sync: Timestamp,
    /// The agent's digest of its set.
    pub digest: String,
    /// Refused and invalid groups.
    pub problems: Vec<RuleProblem>,
}

/// Runs rule syncs, one at a time per tenant on this replica.
#[derive(Clone)]
pub(crate) struct RuleSync {
    api: CortexApi,
    state: State,
    metrics: Arc<GatewayMetrics>,
    locks: Arc<Mutex<HashMap<ClusterId, Arc<tokio::sync::Mutex<()>>>>>,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn problem(name: &str, source: &str, message: impl Into<String>) -> RuleGroupError {
    RuleGroupError {
        name: truncate(name, 512),
        source: truncate(source, 512),
        message: truncate(&message.into(), 1024),
    }
}

/// The fields of a group the ruler keeps, for comparing what it holds with what is sent.
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| matches!(k.as_str(), "name" | "interval" | "limit" | "query_offset" | "rules"));
    }
    v
}

impl RuleSync {
    pub(crate) fn new(api: CortexApi, state: State, metrics: Arc<GatewayMetrics>) -> Self {
        Self { api, state, metrics, locks: Arc::default() }
    }

    fn lock_of(&self, tenant: &ClusterId) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(m.entry(tenant.clone()).or_default())
    }

    /// One upstream call, retried with back-off while the upstream answers 5xx (or cannot be
    /// reached).
    async fn call(&self, method: Method, url: &str, tenant: &ClusterId, body: Option<Bytes>) -> Result<Bytes, Status> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let b = body.clone().map(|b| ("application/yaml", b));
            match self.api.call(method.clone(), url, std::slice::from_ref(tenant), b).await {
                Err(e) if attempt < ATTEMPTS && matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                    tracing::debug!(%url, attempt, error = %e.message(), "ruler call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// What the ruler holds in the tenant's synced namespace: name → group.
    async fn existing(&self, tenant: &ClusterId) -> Result<BTreeMap<String, Value>, Status> {
        let url = format!("{}/api/v1/rules/{SYNCED_NAMESPACE}", self.api.apis.ruler);
        let body = match self.call(Method::GET, &url, tenant, None).await {
            Ok(b) => b,
            // Cortex answers 404 when the tenant has no group in the namespace
            Err(e) if e.code() == Code::NotFound => return Ok(BTreeMap::new()),
            Err(e) if matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded) => return Err(e),
            // anything else: this upstream has no usable ruler API (not Cortex or Mimir, or the
            // ruler API is disabled); retrying soon would not help
            Err(e) => {
                return Err(Status::failed_precondition(format!(
                    "the upstream's ruler API cannot list rule groups: {}",
                    e.message()
                )));
            }
        };
        let text = std::str::from_utf8(&body).map_err(|_| Status::unavailable("the ruler's listing is not UTF-8"))?;
        let listing: BTreeMap<String, Vec<Value>> = serde_saphyr::from_str(text)
            .map_err(|e| Status::unavailable(format!("the ruler's listing is not a rule namespace map: {e}")))?;
        Ok(listing
            .into_iter()
            .filter(|(ns, _)| ns == SYNCED_NAMESPACE)
            .flat_map(|(_, groups)| groups)
            .filter_map(|g| Some((g.get("name")?.as_str()?.to_owned(), comparable(g))))
            .collect())
    }

    /// Syncs `req` for `tenant`.
    pub(crate) async fn sync(&self, tenant: &ClusterId, req: SyncRulesRequest) -> Result<SyncRulesResponse, Status> {
        if req.groups.len() > MAX_GROUPS || req.invalid.len() > MAX_GROUPS {
            return Err(Status::invalid_argument(format!("at most {MAX_GROUPS} groups per sync")));
        }
        let total: usize = req.groups.iter().map(|g| g.yaml.len() + g.name.len() + g.source.len()).sum();
        if total > MAX_SYNC_BYTES {
            return Err(Status::invalid_argument(format!("{total} bytes of rule groups; at most {MAX_SYNC_BYTES}")));
        }
        let mut errors = Vec::new();
        let mut desired: BTreeMap<String, (Value, Bytes)> = BTreeMap::new();
        for g in &req.groups {
            let refuse = |m: String| problem(&g.name, &g.source, m);
            if g.name.is_empty() || g.name.contains('/') || g.name.chars().any(char::is_control) {
                errors.push(refuse("the name must be non-empty, without / or control characters".into()));
                continue;
            }
            if g.yaml.len() > MAX_GROUP_BYTES {
                errors.push(refuse(format!("{} bytes of YAML; at most {MAX_GROUP_BYTES}", g.yaml.len())));
                continue;
            }
            if desired.contains_key(&g.name) || errors.iter().any(|e| e.name == g.name) {
                errors.push(refuse("the name is sent twice".into()));
                desired.remove(&g.name);
                continue;
            }
            let Ok(text) = std::str::from_utf8(&g.yaml) else {
                errors.push(refuse("the YAML is not UTF-8".into()));
                continue;
            };
            let group: RuleGroup = match serde_saphyr::from_str(text) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(refuse(format!("not one rule group: {e}")));
                    continue;
                }
            };
            if group.name != g.name {
                errors.push(refuse(format!("the YAML names the group {:?}", group.name)));
                continue;
            }
            if let Err(e) = group.validate(&|_| Ok(())) {
                errors.push(refuse(e.to_string()));
                continue;
            }
            let value = comparable(serde_json::to_value(&group).unwrap_or(Value::Null));
            desired.insert(g.name.clone(), (value, g.yaml.clone()));
        }

        let lock = self.lock_of(tenant);
        let _one = lock.lock().await;
        let existing = self.existing(tenant).await?;
        let (mut applied, mut unchanged, mut deleted) = (0u32, 0u32, 0u32);
        let source_of =
            |name: &str| req.groups.iter().find(|g| g.name == name).map(|g| g.source.clone()).unwrap_or_default();
        let write_url = format!("{}/api/v1/rules/{SYNCED_NAMESPACE}", self.api.apis.ruler);
        for (name, (value, yaml)) in &desired {
            if existing.get(name) == Some(value) {
                unchanged += 1;
                continue;
            }
            match self.call(Method::POST, &write_url, tenant, Some(yaml.clone())).await {
                Ok(_) => applied += 1,
                Err(e) => {
                    errors.push(problem(name, &source_of(name), format!("the ruler refused it: {}", e.message())))
                }
            }
        }
        for name in existing.keys().filter(|n| !desired.contains_key(*n)) {
            let seg = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            let url = format!("{write_url}/{seg}");
            match self.call(Method::DELETE, &url, tenant, None).await {
                Ok(_) => deleted += 1,
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => errors.push(problem(name, "", format!("deleting it failed: {}", e.message()))),
            }
        }

        let refused_names: Vec<&str> = errors.iter().map(|e| e.name.as_str()).collect();
        let synced = desired.keys().filter(|n| !refused_names.contains(&n.as_str())).count() as u32;
        let mut problems: Vec<RuleProblem> = errors
            .iter()
            .map(|e| RuleProblem {
                name: e.name.clone(),
                source: e.source.clone(),
                message: e.message.clone(),
                kind: "refused".into(),
            })
            .collect();
        problems.extend(req.invalid.iter().map(|e| RuleProblem {
            name: truncate(&e.name, 512),
            source: truncate(&e.source, 512),
            message: truncate(&e.message, 1024),
            kind: "invalid".into(),
        }));
        problems.truncate(MAX_PROBLEMS);
        let digest = if req.digest.len() <= 128 {
            req.digest.clone()
        } else {
            set_digest(req.groups.iter().map(|g| (g.name.as_str(), &g.yaml[..]))).to_string()
        };
        let status = RuleSyncStatus {
            synced,
            refused: errors.len() as u32,
            invalid: req.invalid.len() as u32,
            last_sync: crate::state::now(),
            digest,
            problems,
        };
        if let Err(e) = self.state.put_rule_status(tenant, &status).await {
            tracing::warn!(cluster = %tenant, error = %opni_metrics_core::error_chain(&e), "storing the rule sync status failed");
        }
        self.metrics.rule_sync(tenant, &status);
        tracing::info!(cluster = %tenant, applied, unchanged, deleted, refused = errors.len(), invalid = req.invalid.len(),
            "rules synced");
        Ok(SyncRulesResponse { applied, deleted, errors, unchanged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ignores_fields_the_ruler_adds() {
        let a = serde_json::json!({"name": "g", "rules": [], "source_tenants": ["x"]});
        assert_eq!(comparable(a), serde_json::json!({"name": "g", "rules": []}));
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
