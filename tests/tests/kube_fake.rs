//! Tests of the fake Kubernetes API server with the real kube client and kube-runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    Preconditions, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use opni_metrics_tests::kube_fake::{FakeApiServer, Fault, ResourceType};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
        ..Default::default()
    }
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv(object: &impl Resource) -> u64 {
    object.resource_version().expect("resourceVersion").parse().expect("integer resourceVersion")
}

#[tokio::test]
async fn create_get_replace_conflicts_and_not_found() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");

    let created = api.create(&PostParams::default(), &cm("a", &[("k", "v")])).await.unwrap();
    assert_eq!(created.namespace().as_deref(), Some("ns"));
    assert!(created.uid().is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));

    let again = api_error(api.create(&PostParams::default(), &cm("a", &[])).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let missing = api_error(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    // Replace with the current resourceVersion works and bumps it.
    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let replaced = api.replace("a", &PostParams::default(), &fresh).await.unwrap();
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced.uid(), created.uid());

    // Replace with the stale one: 409 Conflict.
    let stale = api_error(api.replace("a", &PostParams::default(), &fresh).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(stale.message.contains("the object has been modified"), "{}", stale.message);

    // Without a resourceVersion: unconditional.
    let mut blind = cm("a", &[("k", "v3")]);
    blind.metadata.resource_version = None;
    api.replace("a", &PostParams::default(), &blind).await.unwrap();
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "v3");

    // A merge patch carrying a stale resourceVersion conflicts too.
    let patch = json!({"metadata": {"resourceVersion": created.resource_version()}, "data": {"k": "x"}});
    let stale = api_error(api.patch("a", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert_eq!(stale.code, 409);

    assert_eq!(server.writes_by("test"), 6);

    // dryRun answers without storing.
    let before = server.resource_version();
    let dry = PostParams { dry_run: true, ..Default::default() };
    let answered = api.create(&dry, &cm("dry", &[])).await.unwrap();
    assert_eq!(answered.name_any(), "dry");
    assert!(api.get_opt("dry").await.unwrap().is_none());
    assert_eq!(server.resource_version(), before);
}

#[tokio::test]
async fn a_write_that_changes_nothing_is_a_no_op() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    let pp = PatchParams::apply("ctl").force();
    let first = api.patch("a", &pp, &Patch::Apply(&cm("a", &[("k", "v")]))).await.unwrap();
    let second = api.patch("a", &pp, &Patch::Apply(&cm("a", &[("k", "v")]))).await.unwrap();
    assert_eq!(first.resource_version(), second.resource_version());
    let merged = api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    assert_eq!(first.resource_version(), merged.resource_version());
}

fn managers(object: &impl Resource) -> Vec<(String, String)> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn server_side_apply_takes_fields_back_and_removes_dropped_ones() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    let ctl = PatchParams::apply("ctl").force();

    let created = api.patch("a", &ctl, &Patch::Apply(&cm("a", &[("a", "1"), ("b", "2")]))).await.unwrap();
    assert_eq!(managers(&created), vec![("ctl".to_owned(), "Apply".to_owned())]);
    let fields = serde_json::to_value(&created.metadata.managed_fields.as_ref().unwrap()[0].fields_v1).unwrap();
    assert_eq!(fields, json!({"f:data": {"f:a": {}, "f:b": {}}}));

    // A hand edit by another manager takes .data.a and adds .data.extra.
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let edited = api.patch("a", &edit, &Patch::Merge(json!({"data": {"a": "hand", "extra": "e"}}))).await.unwrap();
    assert_eq!(
        managers(&edited),
        vec![("ctl".to_owned(), "Apply".to_owned()), ("kubectl-edit".to_owned(), "Update".to_owned())]
    );

    // Without force, re-applying the old value conflicts with the editor.
    let polite = PatchParams::apply("ctl");
    let conflict = api_error(api.patch("a", &polite, &Patch::Apply(&cm("a", &[("a", "1"), ("b", "2")]))).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.starts_with("Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1"),
        "{}",
        conflict.message
    );
    assert!(conflict.message.ends_with(": .data.a"), "{}", conflict.message);

    // With force the value comes back; .data.b, no longer applied, goes; the editor's own field stays.
    let reapplied = api.patch("a", &ctl, &Patch::Apply(&cm("a", &[("a", "1")]))).await.unwrap();
    let data = reapplied.data.clone().unwrap();
    assert_eq!(data, BTreeMap::from([("a".into(), "1".into()), ("extra".into(), "e".into())]));
    let owned: Value = serde_json::to_value(&reapplied.metadata.managed_fields).unwrap();
    assert_eq!(owned[0]["manager"], "ctl");
    assert_eq!(owned[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
    assert_eq!(owned[1]["manager"], "kubectl-edit");
    assert_eq!(owned[1]["fieldsV1"], json!({"f:data": {"f:extra": {}}}));

    // Applying a value equal to someone else's shares it without conflict.
    api.patch("a", &PatchParams::apply("other"), &Patch::Apply(&cm("a", &[("a", "1")]))).await.unwrap();

    // Apply needs a field manager (422 like the real server) and apiVersion/kind.
    let no_kind = json!({"metadata": {"name": "a"}, "data": {"x": "y"}});
    let bad = api_error(api.patch("a", &PatchParams::apply("ctl"), &Patch::Apply(&no_kind)).await);
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn finalizers_defer_deletion_and_json_patch_tests_work() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    let mut object = cm("a", &[]);
    object.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&PostParams::default(), &object).await.unwrap();

    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left(), "a deferred deletion answers the object");
    let pending = api.get("a").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.generation, Some(2));

    // No new finalizers on an object being deleted.
    let add = json!({"metadata": {"finalizers": ["example.com/cleanup", "example.com/other"]}});
    let refused = api_error(api.patch("a", &PatchParams::default(), &Patch::Merge(&add)).await);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));

    // kube-runtime's finalizer helper removes its finalizer with a JSON patch guarded by a `test`.
    let wrong = json_patch::Patch(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "someone-else"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ]))
        .unwrap(),
    );
    let failed = api_error(api.patch("a", &PatchParams::default(), &Patch::Json::<()>(wrong)).await);
    assert_eq!((failed.code, failed.reason.as_str()), (422, "Invalid"));
    assert!(api.get_opt("a").await.unwrap().is_some());

    let remove = json_patch::Patch(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ]))
        .unwrap(),
    );
    api.patch("a", &PatchParams::default(), &Patch::Json::<()>(remove)).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none(), "the last finalizer's removal deletes the object");

    // `test` of a missing path against null passes (the helper adds its first finalizer that way).
    api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    let add_first = json_patch::Patch(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]},
        ]))
        .unwrap(),
    );
    let patched = api.patch("b", &PatchParams::default(), &Patch::Json::<()>(add_first)).await.unwrap();
    assert_eq!(patched.finalizers(), ["example.com/cleanup"]);

    // Delete preconditions.
    let precondition = DeleteParams {
        preconditions: Some(Preconditions { uid: Some("not-the-uid".into()), resource_version: None }),
        ..Default::default()
    };
    assert_eq!(api_error(api.delete("b", &precondition).await).code, 409);
}

fn owner_ref(owner: &ConfigMap) -> OwnerReference {
    owner.controller_owner_ref(&()).expect("owner has a name and uid")
}

fn secret(name: &str, owners: Vec<OwnerReference>) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), owner_references: Some(owners), ..Default::default() },
        data: Some(BTreeMap::from([("k".into(), ByteString(b"v".to_vec()))])),
        ..Default::default()
    }
}

#[tokio::test]
async fn owner_references_cascade() {
    let server = FakeApiServer::new();
    let client = server.client("test");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let secrets: Api<Secret> = Api::namespaced(client, "ns");
    let owner = cms.create(&PostParams::default(), &cm("owner", &[])).await.unwrap();
    let other = cms.create(&PostParams::default(), &cm("other", &[])).await.unwrap();
    secrets.create(&PostParams::default(), &secret("only-child", vec![owner_ref(&owner)])).await.unwrap();
    secrets
        .create(&PostParams::default(), &secret("shared", vec![owner_ref(&owner), owner_ref(&other)]))
        .await
        .unwrap();
    let mut held = secret("held", vec![owner_ref(&owner)]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    secrets.create(&PostParams::default(), &held).await.unwrap();
    // A grandchild of the owner, through `only-child`.
    let child = secrets.get("only-child").await.unwrap();
    let grandchild_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: "only-child".into(),
        uid: child.uid().unwrap(),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &{
        let mut c = cm("grandchild", &[]);
        c.metadata.owner_references = Some(vec![grandchild_ref]);
        c
    })
    .await
    .unwrap();

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("only-child").await.unwrap().is_none());
    assert!(cms.get_opt("grandchild").await.unwrap().is_none());
    let shared = secrets.get("shared").await.unwrap();
    assert_eq!(shared.owner_references().len(), 1);
    assert_eq!(shared.owner_references()[0].name, "other");
    let held = secrets.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some(), "finalizers hold a collected dependent");

    // Orphan: the dependent stays and loses its reference.
    secrets.create(&PostParams::default(), &secret("orphan", vec![owner_ref(&other)])).await.unwrap();
    cms.delete("other", &DeleteParams::orphan()).await.unwrap();
    let orphan = secrets.get("orphan").await.unwrap();
    assert!(orphan.owner_references().is_empty());
    assert!(secrets.get_opt("shared").await.unwrap().is_some());

    // A dependent written after its owner was deleted (a controller's stale cache) is collected;
    // one naming an owner this server never saw is not.
    let late = secrets.create(&PostParams::default(), &secret("late", vec![owner_ref(&owner)])).await.unwrap();
    assert_eq!(late.name_any(), "late", "the create itself succeeds");
    assert!(secrets.get_opt("late").await.unwrap().is_none());
    let mut unknown = owner_ref(&owner);
    unknown.uid = "never-seen".into();
    secrets.create(&PostParams::default(), &secret("unknown-owner", vec![unknown])).await.unwrap();
    assert!(secrets.get_opt("unknown-owner").await.unwrap().is_some());
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(DeploymentSpec { replicas: Some(replicas), ..Default::default() }),
        status: Some(DeploymentStatus { replicas: Some(99), ..Default::default() }),
    }
}

#[tokio::test]
async fn status_subresource_is_separate_and_generation_follows_spec() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client("test"), "ns");
    let created = api.create(&PostParams::default(), &deployment("d", 1)).await.unwrap();
    assert!(created.status.is_none(), "create drops the status of a type with /status");
    assert_eq!(created.metadata.generation, Some(1));

    // The status subresource changes only the status.
    let status = json!({"status": {"replicas": 1, "readyReplicas": 1}, "spec": {"replicas": 7}});
    let patched = api.patch_status("d", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(patched.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(patched.metadata.generation, Some(1));

    // The main resource ignores the status; a spec change bumps the generation.
    let mut changed = api.get("d").await.unwrap();
    changed.spec.as_mut().unwrap().replicas = Some(3);
    changed.status = Some(DeploymentStatus { replicas: Some(42), ..Default::default() });
    let replaced = api.replace("d", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().replicas, Some(1));
    assert_eq!(replaced.metadata.generation, Some(2));

    // A metadata-only change does not.
    let labelled = api
        .patch("d", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(rv(&labelled) > rv(&replaced));

    // Apply on /status.
    let status_apply = json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"replicas": 5}});
    let conflict =
        api_error(api.patch_status("d", &PatchParams::apply("status-mgr"), &Patch::Apply(&status_apply)).await);
    assert!(conflict.message.contains("with subresource \"status\""), "{}", conflict.message);
    let applied =
        api.patch_status("d", &PatchParams::apply("status-mgr").force(), &Patch::Apply(&status_apply)).await.unwrap();
    assert_eq!(applied.status.as_ref().unwrap().replicas, Some(5));
    let entry =
        applied.metadata.managed_fields.as_ref().unwrap().iter().find(|m| m.manager.as_deref() == Some("status-mgr"));
    assert_eq!(entry.unwrap().subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn list_with_selectors_and_pages() {
    let server = FakeApiServer::new();
    let client = server.client("test");
    for (ns, name, app) in [("a", "one", "web"), ("a", "two", "db"), ("b", "three", "web"), ("b", "four", "cache")] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let mut object = cm(name, &[]);
        object.metadata.labels = Some(BTreeMap::from([("app".into(), app.into())]));
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names =
        |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
    assert_eq!(names(all.list(&ListParams::default()).await.unwrap()), ["one", "two", "four", "three"]);
    assert_eq!(names(all.list(&ListParams::default().labels("app=web")).await.unwrap()), ["one", "three"]);
    assert_eq!(names(all.list(&ListParams::default().labels("app in (db,cache)")).await.unwrap()), ["two", "four"]);
    assert_eq!(names(all.list(&ListParams::default().labels("app!=web,app notin (db)")).await.unwrap()), ["four"]);
    assert_eq!(names(all.list(&ListParams::default().fields("metadata.name=three")).await.unwrap()), ["three"]);
    let in_a: Api<ConfigMap> = Api::namespaced(client, "a");
    let list = in_a.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(list.clone()), ["one", "two"]);
    assert_eq!(list.metadata.resource_version, Some(server.resource_version().to_string()));

    // Pagination.
    let first = all.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let rest = all.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    assert_eq!(names(first), ["one", "two", "four"]);
    assert_eq!(rest.metadata.continue_, None);
    assert_eq!(names(rest), ["three"]);

    let bad = api_error(all.list(&ListParams::default().fields("data.x=y")).await);
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn watcher_observes_create_modify_delete() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    api.create(&PostParams::default(), &cm("before", &[])).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["before"]);

    api.create(&PostParams::default(), &cm("a", &[("k", "1")])).await.unwrap();
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::Apply(o) => seen.push(format!("apply {} {}", o.name_any(), o.data.unwrap()["k"])),
            watcher::Event::Delete(o) => seen.push(format!("delete {}", o.name_any())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["apply a 1", "apply a 2", "delete a"]);

    // applied_objects() over the same kind of stream.
    let mut applied = watcher(api.clone(), watcher::Config::default().labels("pick=me")).applied_objects().boxed();
    let mut picked = cm("picked", &[]);
    picked.metadata.labels = Some(BTreeMap::from([("pick".into(), "me".into())]));
    api.create(&PostParams::default(), &cm("ignored", &[])).await.unwrap();
    api.create(&PostParams::default(), &picked).await.unwrap();
    assert_eq!(applied.try_next().await.unwrap().unwrap().name_any(), "picked");
}

#[tokio::test]
async fn watch_from_a_too_old_resource_version_gets_410_and_the_watcher_relists() {
    let server = FakeApiServer::new();
    server.set_history_limit(3);
    let client = server.client("watcher");
    let api: Api<ConfigMap> = Api::namespaced(client, "ns");
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }

    // A raw watch from resourceVersion 1: one ERROR event with 410 Expired, then the end.
    let raw = api.watch(&WatchParams::default(), "1").await.unwrap();
    let events: Vec<_> = raw.try_collect().await.unwrap();
    match events.as_slice() {
        [WatchEvent::Error(status)] => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.starts_with("too old resource version"), "{}", status.message);
        }
        other => panic!("expected one 410 error, got {other:?}"),
    }

    // A watch from a recent one replays what happened after it.
    let recent = (server.resource_version() - 2).to_string();
    let replay = api.watch(&WatchParams::default(), &recent).await.unwrap().boxed();
    let replayed: Vec<String> = replay
        .take(2)
        .map(|event| match event.unwrap() {
            WatchEvent::Added(o) => o.name_any(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
        .await;
    assert_eq!(replayed, ["c4", "c5"]);

    // kube-runtime's watcher: list, watch, lose the stream, fall out of the history, get 410, relist.
    let config = watcher::Config::default().labels("watched=yes").disable_bookmarks();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let forward = tokio::spawn(watcher(api.clone(), config).for_each(move |event| {
        let _ = tx.send(event);
        async {}
    }));
    let mut inits = 0;
    loop {
        match events.recv().await.unwrap().unwrap() {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    server.wait_until(|s| s.requests().iter().any(|r| r.is_watch() && r.query.contains("watched")), WAIT).await;
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("unwatched{i}"), &[])).await.unwrap();
    }
    server.disconnect_watches();
    let mut saw_410 = false;
    loop {
        match events.recv().await.unwrap() {
            Err(watcher::Error::WatchError(status)) if status.code == 410 => saw_410 = true,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    assert!(saw_410);
    assert_eq!(inits, 2);
    let mut watched = cm("watched", &[]);
    watched.metadata.labels = Some(BTreeMap::from([("watched".into(), "yes".into())]));
    api.create(&PostParams::default(), &watched).await.unwrap();
    match events.recv().await.unwrap().unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "watched"),
        other => panic!("unexpected {other:?}"),
    }
    let lists = server.requests().iter().filter(|r| r.method == Method::GET && !r.is_watch()).count();
    assert!(lists >= 2, "the watcher relisted");
    forward.abort();
}

fn prometheus_agent() -> ApiResource {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1alpha1", "PrometheusAgent");
    ApiResource::from_gvk_with_plural(&gvk, "prometheusagents")
}

#[tokio::test]
async fn unregistered_types_answer_404_until_registered() {
    let server = FakeApiServer::new();
    let client = server.client("test");
    let resource = prometheus_agent();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "ns", &resource);
    let missing = api_error(api.list(&ListParams::default()).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "the server could not find the requested resource");

    server.register(
        ResourceType::namespaced("monitoring.coreos.com", "v1alpha1", "PrometheusAgent", "prometheusagents")
            .with_status(),
    );
    let mut agent = DynamicObject::new("agent", &resource).within("ns");
    agent.data = json!({"spec": {"replicas": 1}});
    let created = api.patch("agent", &PatchParams::apply("op").force(), &Patch::Apply(&agent)).await.unwrap();
    assert_eq!(created.data["spec"]["replicas"], 1);
    let resources = client.list_api_group_resources("monitoring.coreos.com/v1alpha1").await.unwrap();
    assert!(resources.resources.iter().any(|r| r.name == "prometheusagents/status"));

    server.unregister("prometheusagents", "monitoring.coreos.com");
    assert_eq!(api_error(api.get("agent").await).code, 404);
    assert!(server.list("monitoring.coreos.com", "prometheusagents").is_empty());
}

#[tokio::test]
async fn third_party_objects_must_fit_the_real_crd_schema() {
    if opni_metrics_tests::crd_schema::Schemas::upstream().is_none() {
        return; // no ../shared beside the project: nothing to check against
    }
    let server = FakeApiServer::new();
    server.register(
        ResourceType::namespaced("monitoring.coreos.com", "v1alpha1", "PrometheusAgent", "prometheusagents")
            .with_status(),
    );
    let api: Api<DynamicObject> = Api::namespaced_with(server.client("test"), "ns", &prometheus_agent());
    let write = |spec: Value| {
        let mut agent = DynamicObject::new("agent", &prometheus_agent()).within("ns");
        agent.data = json!({ "spec": spec });
        agent
    };
    // a field the real server would prune, and a value it would refuse: 422 naming each, nothing
    // stored, by apply, create and merge patch alike
    let bad = write(json!({"replicas": "two", "scrapeIntervall": "30s"}));
    for e in [
        api_error(api.patch("agent", &PatchParams::apply("op").force(), &Patch::Apply(&bad)).await),
        api_error(api.create(&PostParams::default(), &bad).await),
    ] {
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
        assert!(e.message.contains("spec.replicas: must be integer"), "{}", e.message);
        assert!(e.message.contains("spec.scrapeIntervall: unknown field"), "{}", e.message);
    }
    assert!(server.list("monitoring.coreos.com", "prometheusagents").is_empty());
    api.create(&PostParams::default(), &write(json!({"replicas": 1, "scrapeInterval": "30s"}))).await.unwrap();
    let patch = Patch::Merge(json!({"spec": {"scrapeInterval": "thirty seconds"}}));
    let e = api_error(api.patch("agent", &PatchParams::default(), &patch).await);
    assert!(e.message.contains("spec.scrapeInterval: \"thirty seconds\" does not match"), "{}", e.message);
    assert_eq!(api.get("agent").await.unwrap().data["spec"]["scrapeInterval"], "30s");
}

#[tokio::test]
async fn fail_next_injects_exactly_n_failures_without_side_effects() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let before = server.resource_version();
    server.fail_next(Fault::new(409).method(Method::PATCH).plural("configmaps").times(2));
    server.fail_next(Fault::new(503).method(Method::GET).name("other"));
    let patch = Patch::Merge(json!({"data": {"k": "v"}}));
    for _ in 0..2 {
        let failed = api_error(api.patch("a", &PatchParams::default(), &patch).await);
        assert_eq!((failed.code, failed.reason.as_str()), (409, "Conflict"));
    }
    assert_eq!(server.resource_version(), before, "failures have no side effects");
    api.get("a").await.unwrap();
    api.patch("a", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(api_error(api.get("other").await).code, 503);
    assert_eq!(api_error(api.get("other").await).code, 404);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 409, 409, 200, 200, 503, 404]);
}

async fn reconcile(owner: Arc<ConfigMap>, client: Arc<Client>) -> Result<Action, kube::Error> {
    let namespace = owner.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced((*client).clone(), &namespace);
    let mut desired = secret(&owner.name_any(), vec![owner.controller_owner_ref(&()).unwrap_or_default()]);
    desired.data =
        Some(owner.data.iter().flatten().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect());
    secrets.patch(&owner.name_any(), &PatchParams::apply("cm-controller").force(), &Patch::Apply(&desired)).await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Client>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn controller_recreates_a_deleted_child() {
    let server = FakeApiServer::new();
    let client = server.client("controller");
    let controller = Controller::new(Api::<ConfigMap>::namespaced(client.clone(), "ns"), watcher::Config::default())
        .owns(Api::<Secret>::namespaced(client.clone(), "ns"), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let user = server.client("kubectl");
    let cms: Api<ConfigMap> = Api::namespaced(user.clone(), "ns");
    let secrets: Api<Secret> = Api::namespaced(user, "ns");
    cms.create(&PostParams::default(), &cm("app", &[("token", "t1")])).await.unwrap();
    let first = server.wait_for_object("", "secrets", Some("ns"), "app", |_| true, WAIT).await;
    assert_eq!(first["data"]["token"], "dDE=");

    secrets.delete("app", &DeleteParams::default()).await.unwrap();
    let old_uid = first["metadata"]["uid"].clone();
    let second =
        server.wait_for_object("", "secrets", Some("ns"), "app", |s| s["metadata"]["uid"] != old_uid, WAIT).await;
    assert_eq!(second["metadata"]["ownerReferences"][0]["name"], "app");

    // A change of the owner flows to the child; deleting the owner collects the child.
    cms.patch("app", &PatchParams::default(), &Patch::Merge(json!({"data": {"token": "t2"}}))).await.unwrap();
    server.wait_for_object("", "secrets", Some("ns"), "app", |s| s["data"]["token"] == "dDI=", WAIT).await;
    cms.delete("app", &DeleteParams::default()).await.unwrap();
    server.wait_for_absence("", "secrets", Some("ns"), "app", WAIT).await;
    running.abort();
}

#[tokio::test]
async fn served_over_http_with_a_kubeconfig() {
    let server = FakeApiServer::new();
    let served = server.serve().await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&served.kubeconfig_yaml("team")).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    assert!(server.get("", "configmaps", Some("team"), "a").is_some());
    assert_eq!(server.writes_by("http"), 1);
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.minor, "33");

    // Metadata-only requests.
    let meta = api.get_metadata("a").await.unwrap();
    assert_eq!(meta.metadata.namespace.as_deref(), Some("team"));

    drop(served);
    assert!(api.list(&ListParams::default()).await.is_err(), "a dropped ServedApi stops serving");
}

#[tokio::test]
async fn a_custom_resource_definition_serves_its_type() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};

    let server = FakeApiServer::new();
    let client = server.client("installer");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "prometheusagents.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "PrometheusAgent", "plural": "prometheusagents", "singular": "prometheusagent"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            }],
        },
    }))
    .unwrap();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("installer").force(), &Patch::Apply(&crd)).await.unwrap();
    let established =
        tokio::time::timeout(WAIT, await_condition(crds.clone(), &name, conditions::is_crd_established()));
    assert!(established.await.unwrap().unwrap().is_some());

    let resource = prometheus_agent();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "ns", &resource);
    let mut agent = DynamicObject::new("agent", &resource).within("ns");
    agent.data = json!({"spec": {"replicas": 1}, "status": {"ignored": true}});
    let created = api.patch("agent", &PatchParams::apply("op").force(), &Patch::Apply(&agent)).await.unwrap();
    assert_eq!(created.data.get("status"), None, "the CRD's version has a status subresource");

    crds.delete(&name, &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(api.get("agent").await).code, 404);
    assert!(server.list("monitoring.coreos.com", "prometheusagents").is_empty());
}

#[tokio::test]
async fn watches_follow_selectors_send_bookmarks_and_time_out() {
    let server = FakeApiServer::new();
    server.set_bookmark_interval(Duration::from_millis(100));
    let api: Api<ConfigMap> = Api::namespaced(server.client("test"), "ns");
    let mut labelled = cm("a", &[]);
    labelled.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    api.create(&PostParams::default(), &labelled).await.unwrap();
    let start = server.resource_version().to_string();
    let params = WatchParams::default().labels("app=web").timeout(1);
    let mut stream = api.watch(&params, &start).await.unwrap().boxed();

    // Leaving the selector is a DELETED, entering it again an ADDED.
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    api.patch("a", &PatchParams::default(), &relabel("db")).await.unwrap();
    api.patch("a", &PatchParams::default(), &relabel("web")).await.unwrap();
    api.create(&PostParams::default(), &cm("unlabelled", &[])).await.unwrap();
    let mut kinds = Vec::new();
    let mut bookmarks = 0;
    while let Some(event) = stream.try_next().await.unwrap() {
        match event {
            WatchEvent::Added(o) => kinds.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => kinds.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Deleted(o) => kinds.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(b) => {
                // the version current when it was sent: the last write's, unless the writes
                // above were slow enough to leave 100 ms of silence between them
                let rv: u64 = b.metadata.resource_version.parse().unwrap();
                assert!(rv >= start.parse::<u64>().unwrap(), "{rv}");
                assert!(rv <= server.resource_version(), "{rv}");
                bookmarks += 1;
            }
            WatchEvent::Error(e) => panic!("unexpected {e:?}"),
        }
    }
    // The stream ended by itself at timeoutSeconds=1.
    assert_eq!(kinds, ["DELETED a", "ADDED a"]);
    assert!(bookmarks >= 2, "bookmarks every 100 ms of silence, got {bookmarks}");
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_runs_cleanup_before_deletion() {
    use kube::runtime::finalizer::{Error as FinalizerError, Event as Finalizer, finalizer};

    const FINALIZER: &str = "example.com/cleanup";
    async fn reconcile(object: Arc<ConfigMap>, client: Arc<Client>) -> Result<Action, FinalizerError<kube::Error>> {
        let api: Api<ConfigMap> = Api::namespaced((*client).clone(), "ns");
        finalizer(&api, FINALIZER, object, |event| async {
            match event {
                Finalizer::Apply(_) => Ok(Action::await_change()),
                Finalizer::Cleanup(o) => {
                    let log: Api<ConfigMap> = Api::namespaced((*client).clone(), "ns");
                    log.create(&PostParams::default(), &cm(&format!("cleaned-{}", o.name_any()), &[])).await?;
                    Ok(Action::await_change())
                }
            }
        })
        .await
    }
    fn error_policy(_: Arc<ConfigMap>, _: &FinalizerError<kube::Error>, _: Arc<Client>) -> Action {
        Action::requeue(Duration::from_millis(50))
    }

    let server = FakeApiServer::new();
    let client = server.client("controller");
    let config = watcher::Config::default().labels("managed=yes");
    let controller = Controller::new(Api::<ConfigMap>::namespaced(client.clone(), "ns"), config)
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let api: Api<ConfigMap> = Api::namespaced(server.client("user"), "ns");
    let mut object = cm("x", &[]);
    object.metadata.labels = Some(BTreeMap::from([("managed".into(), "yes".into())]));
    api.create(&PostParams::default(), &object).await.unwrap();
    server
        .wait_for_object("", "configmaps", Some("ns"), "x", |o| o["metadata"]["finalizers"] == json!([FINALIZER]), WAIT)
        .await;
    api.delete("x", &DeleteParams::default()).await.unwrap();
    server.wait_for_absence("", "configmaps", Some("ns"), "x", WAIT).await;
    assert!(server.get("", "configmaps", Some("ns"), "cleaned-x").is_some(), "cleanup ran before the deletion");
    running.abort();
}

#[tokio::test]
async fn apply_accepts_yaml_and_requires_a_field_manager() {
    let server = FakeApiServer::new();
    let client = server.client("raw");
    let apply = |query: &str| {
        http::Request::patch(format!("/api/v1/namespaces/ns/configmaps/y{query}"))
            .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
            .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n".to_vec())
            .unwrap()
    };
    let missing = api_error(client.request::<ConfigMap>(apply("")).await);
    assert_eq!((missing.code, missing.reason.as_str()), (422, "Invalid"));
    let created = client.request::<ConfigMap>(apply("?fieldManager=yaml")).await.unwrap();
    assert_eq!(created.data.unwrap()["k"], "v");
    assert_eq!(managers(&server_object(&server)), vec![("yaml".to_owned(), "Apply".to_owned())]);
}

fn server_object(server: &FakeApiServer) -> ConfigMap {
    serde_json::from_value(server.get("", "configmaps", Some("ns"), "y").unwrap()).unwrap()
}
