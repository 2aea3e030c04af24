//! The `PrometheusRule` watch (prometheus-operator, `monitoring.coreos.com/v1`): every object
//! in the configured namespaces (all when none), kept in memory; a missing CRD is reported, not
//! fatal, and the watch keeps retrying with back-off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use opni_metrics_core::rules::{MAX_SOURCE_BYTES, RuleGroup};
use tokio::sync::Notify;

use super::KubeFound;

/// Objects by namespace and name, with their groups or why they are unusable.
type Objects = BTreeMap<(String, String), Result<Vec<RuleGroup>, String>>;

/// Watches `PrometheusRule` objects for the rule syncer.
pub(crate) struct Watcher {
    client: kube::Client,
    found: Arc<Mutex<Option<KubeFound>>>,
    changed: Arc<Notify>,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// The groups of one object's `spec.groups`.
fn groups_of(obj: &DynamicObject) -> Result<Vec<RuleGroup>, String> {
    let groups = obj.data.pointer("/spec/groups").cloned().unwrap_or(serde_json::Value::Array(Vec::new()));
    let size = serde_json::to_vec(&groups).map_or(0, |b| b.len());
    if size > MAX_SOURCE_BYTES {
        return Err(format!("{size} bytes of rule groups; at most {MAX_SOURCE_BYTES}"));
    }
    serde_json::from_value(groups).map_err(|e| format!("spec.groups is not a list of rule groups: {e}"))
}

fn key(obj: &DynamicObject) -> (String, String) {
    (obj.metadata.namespace.clone().unwrap_or_default(), obj.metadata.name.clone().unwrap_or_default())
}

impl Watcher {
    pub(crate) fn new(client: kube::Client, found: Arc<Mutex<Option<KubeFound>>>, changed: Arc<Notify>) -> Self {
        Self { client, found, changed }
    }

    /// Starts watching `namespaces` (all when empty); the task runs until aborted.
    pub(crate) fn spawn(&self, namespaces: Vec<String>) -> tokio::task::JoinHandle<()> {
        let (client, found, changed) = (self.client.clone(), Arc::clone(&self.found), Arc::clone(&self.changed));
        tokio::spawn(async move {
            let ar = resource();
            let apis: Vec<(Option<String>, Api<DynamicObject>)> = if namespaces.is_empty() {
                vec![(None, Api::all_with(client, &ar))]
            } else {
                namespaces.iter().map(|ns| (Some(ns.clone()), Api::namespaced_with(client.clone(), ns, &ar))).collect()
            };
            let streams = apis.len();
            *found.lock().unwrap_or_else(PoisonError::into_inner) = Some(KubeFound::default());
            let tagged = apis.into_iter().enumerate().map(|(i, (ns, api))| {
                watcher::watcher(api, watcher::Config::default())
                    .default_backoff()
                    .map(move |e| (i, ns.clone(), e))
                    .boxed()
            });
            let mut all = futures::stream::select_all(tagged);
            let mut initial: Vec<Objects> = vec![BTreeMap::new(); streams];
            let mut listed = vec![false; streams];
            while let Some((i, ns, event)) = all.next().await {
                {
                    let mut guard = found.lock().unwrap_or_else(PoisonError::into_inner);
                    let f = guard.get_or_insert_with(KubeFound::default);
                    match event {
                        Ok(ev) => {
                            f.error = None;
                            f.crd_missing = false;
                            match ev {
                                Event::Init => initial[i].clear(),
                                Event::InitApply(o) => {
                                    initial[i].insert(key(&o), groups_of(&o));
                                }
                                Event::InitDone => {
                                    f.objects.retain(|(n, _), _| ns.as_ref().is_some_and(|x| x != n));
                                    f.objects.append(&mut initial[i]);
                                    listed[i] = true;
                                    f.ready = listed.iter().all(|l| *l);
                                }
                                Event::Apply(o) => {
                                    f.objects.insert(key(&o), groups_of(&o));
                                }
                                Event::Delete(o) => {
                                    f.objects.remove(&key(&o));
                                }
                            }
                        }
                        Err(e) => {
                            let missing = matches!(&e,
                                watcher::Error::InitialListFailed(kube::Error::Api(s))
                                | watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.is_not_found());
                            tracing::warn!(error = %e, crd_missing = missing, "watching PrometheusRule objects failed");
                            f.crd_missing = missing;
                            f.error = Some(if missing {
                                "the PrometheusRule CRD (monitoring.coreos.com/v1) is not installed".to_owned()
                            } else {
                                format!("watching PrometheusRule objects failed: {e}")
                            });
                            if missing {
                                f.objects.clear();
                            }
                        }
                    }
                }
                changed.notify_one();
            }
        })
    }
}
