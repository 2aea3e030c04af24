//! Rule sync end to end with rule files: an agent with the process driver (a real Prometheus in
//! agent mode) discovers the files the node spec's globs match and syncs them through the
//! gateway into the Cortex-semantics test upstream's ruler, under the certificate's tenant, in
//! the synced namespace. Files are added, edited and removed; bad files are reported and the
//! rest syncs; every synced group passes `promtool check rules`; a group users loaded into
//! another namespace survives every sync; no field of a `SyncRulesRequest` reaches another
//! tenant or namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CLUSTER, WAIT, agent_config, certs, files, gateway_config, start_agent, start_gateway};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::rules::SYNCED_NAMESPACE;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_core::{CapabilityName, ClusterId};
use opni_metrics_daemons::config::agent::DriverKind;
use opni_metrics_gateway::state::now;
use opni_metrics_proto::cortexadmin::v1 as admin_pb;
use opni_metrics_proto::cortexadmin::v1::cortex_admin_client::CortexAdminClient;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_proto::remote::v1::{RuleGroup as WireGroup, SyncRulesRequest};
use opni_metrics_tests::cortex::CortexUpstream;
use opni_metrics_tests::http::eventually;
use opni_metrics_tests::prometheus::Prometheus;

const NODE: &str = "groups:\n- name: node\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: InstanceDown\n    expr: up == 0\n    for: 5m\n    labels:\n      severity: page\n    annotations:\n      summary: '{{ $labels.instance }} is down'\n- name: disk\n  interval: 30s\n  rules:\n  - record: instance:disk_free:ratio\n    expr: node_filesystem_avail_bytes / node_filesystem_size_bytes\n";

/// The synced namespace's groups of `tenant` at the upstream: name → YAML.
fn synced(cortex: &CortexUpstream, tenant: &str) -> std::collections::BTreeMap<String, String> {
    cortex.rules(tenant).get(SYNCED_NAMESPACE).cloned().unwrap_or_default()
}

async fn until_synced(
    cortex: &CortexUpstream,
    what: &str,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) {
    eventually(WAIT, what, || async {
        let s = synced(cortex, CLUSTER);
        if check(&s) { Ok(()) } else { Err(format!("{:?}", s.keys().collect::<Vec<_>>())) }
    })
    .await
    .unwrap();
}

/// `promtool check rules` on one group.
async fn promtool_accepts(dir: &std::path::Path, name: &str, yaml: &str) {
    let file = dir.join("check.yml");
    let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(&file, format!("groups:\n- {}", indented.trim_start())).unwrap();
    let o = tokio::process::Command::new("promtool").arg("check").arg("rules").arg(&file).output().await.unwrap();
    assert!(
        o.status.success(),
        "promtool refused {name}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_reach_the_ruler_under_the_agents_tenant() {
    let certs = certs();
    let cortex = CortexUpstream::start().await;
    let recv = Prometheus::receiver().await.unwrap();
    cortex.backend(CLUSTER, &recv.url());
    let gw = start_gateway(
        gateway_config(&certs, &format!("{}/api/v1/push", cortex.url())).validate().unwrap().settings,
        Arc::new(MemoryStore::default()),
    )
    .await;
    let state = gw.gateway.state().clone();
    let id = ClusterId::new(CLUSTER).unwrap();
    let mut c = Cluster::new(id.clone());
    c.install(CapabilityName::metrics(), now()).unwrap();
    state.create_cluster(&c).await.unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    let (spec, rev) = state.default_spec().await.unwrap();
    let mut spec = spec;
    spec.rules.file_globs = vec![format!("{}/*.yml", rules_dir.path().display())];
    state.put_default_spec(&spec, Some(rev)).await.unwrap();

    // a user's own group, loaded through CortexAdmin into another namespace
    let mut admin = CortexAdminClient::with_interceptor(
        common::management_channel(gw.management_addr).await,
        common::BearerAuth(gw.admin_token.clone()),
    );
    let user_group = "name: mine\nrules:\n- record: my:up\n  expr: up\n";
    admin
        .load_rules(admin_pb::LoadRulesRequest {
            tenant: CLUSTER.into(),
            namespace: "team".into(),
            yaml_content: user_group.as_bytes().to_vec().into(),
        })
        .await
        .unwrap();

    std::fs::write(rules_dir.path().join("node.yml"), NODE).unwrap();
    let mut ac = agent_config(&certs.agent, &gw.grpc_addr.to_string());
    ac.driver.kind = DriverKind::Process;
    ac.driver.prometheus_binary = opni_metrics_tests::prometheus::binary().unwrap();
    ac.data_dir = certs.dir.path().join("agent");
    ac.rules.poll_interval = opni_metrics_core::duration::PromDuration::from_millis(200);
    let agent = start_agent(&ac).await;

    let node = rules_dir.path().join("node.yml").display().to_string();
    let name = |file: &str, group: &str| {
        opni_metrics_core::rules::synced_name(&opni_metrics_core::rules::RuleSource::File { path: file.into() }, group)
    };
    until_synced(&cortex, "both groups synced", |s| s.len() == 2 && s.contains_key(&name(&node, "node"))).await;
    for (n, yaml) in synced(&cortex, CLUSTER) {
        promtool_accepts(certs.dir.path(), &n, &yaml).await;
    }

    // edited: the change arrives
    std::fs::write(rules_dir.path().join("node.yml"), NODE.replace("for: 5m", "for: 10m")).unwrap();
    until_synced(&cortex, "the edit arrives", |s| s.get(&name(&node, "node")).is_some_and(|y| y.contains("10m"))).await;

    // bad files next to good ones: reported, nothing sent for them, the rest still synced
    let bad = [
        ("promql.yml", b"groups:\n- name: broken\n  rules:\n  - record: a\n    expr: sum(up\n- name: fine\n  rules:\n  - record: b\n    expr: up\n".to_vec()),
        ("dupes.yml", b"groups:\n- name: same\n  rules:\n  - record: a\n    expr: up\n- name: same\n  rules:\n  - record: b\n    expr: up\n".to_vec()),
        ("scrape.yml", b"scrape_configs:\n- job_name: x\n".to_vec()),
        ("latin1.yml", b"groups:\n- name: caf\xe9\n  rules: []\n".to_vec()),
        ("huge.yml", { let mut v = NODE.as_bytes().to_vec(); v.resize(10 << 20, b'\n'); v }),
    ];
    for (f, content) in &bad {
        std::fs::write(rules_dir.path().join(f), content).unwrap();
    }
    agent.agent.reload_rules();
    let promql = rules_dir.path().join("promql.yml").display().to_string();
    until_synced(&cortex, "the good group of a bad file synced", |s| {
        s.len() == 3 && s.contains_key(&name(&promql, "fine"))
    })
    .await;
    let status = eventually(WAIT, "the gateway records the invalid groups", || async {
        match state.rule_status(&id).await.map_err(|e| e.to_string())? {
            Some(s) if s.invalid == 6 => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert_eq!((status.synced, status.refused), (3, 0));
    let message_of =
        |needle: &str| status.problems.iter().find(|p| p.source.contains(needle)).map(|p| p.message.clone()).unwrap();
    assert!(message_of("promql.yml").contains("invalid PromQL"));
    assert!(message_of("dupes.yml").contains("twice"));
    assert!(message_of("scrape.yml").contains("not a Prometheus rule file"));
    assert!(message_of("latin1.yml").contains("not UTF-8"));
    assert!(message_of("huge.yml").contains("at most"));
    // capability status shows it as a condition
    let mut cap = opni_metrics_proto::capability::v1::capability_client::CapabilityClient::with_interceptor(
        common::management_channel(gw.management_addr).await,
        common::BearerAuth(gw.admin_token.clone()),
    );
    let s = cap
        .status(opni_metrics_proto::capability::v1::StatusRequest { cluster: CLUSTER.into() })
        .await
        .unwrap()
        .into_inner();
    let rules = s.rules.unwrap();
    assert_eq!((rules.synced, rules.invalid), (3, 6));
    assert!(s.conditions.iter().any(|c| c.message.contains("3 synced, 0 refused, 6 invalid")), "{:?}", s.conditions);
    // the gateway's metrics
    let m = opni_metrics_tests::http::get(&format!("http://{}/metrics", gw.http_addr)).await.unwrap().text();
    assert!(m.contains(&format!("opni_gateway_rule_groups{{cluster=\"{CLUSTER}\",state=\"invalid\"}} 6")), "{m}");

    // the CLI shows what the ruler holds for the cluster, synced and user groups apart
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics"))
        .arg(format!("--address={}", gw.management_addr))
        .arg(format!("--token-file={}", certs.dir.path().join("gateway/admin.token").display()))
        .args(["rules", "list", "--cluster", CLUSTER])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[..3].iter().all(|r| r.contains(" synced ") && r.contains(SYNCED_NAMESPACE)), "{table}");
    assert!(rows[3].contains(" user ") && rows[3].contains("team") && rows[3].contains("mine"), "{table}");

    // removed: its groups disappear; the user's group stays
    std::fs::remove_file(rules_dir.path().join("node.yml")).unwrap();
    until_synced(&cortex, "the removed file's groups are deleted", |s| s.len() == 1).await;
    assert!(cortex.rules(CLUSTER)["team"].contains_key("mine"), "a user-loaded group survives every sync");
    for (n, yaml) in synced(&cortex, CLUSTER) {
        promtool_accepts(certs.dir.path(), &n, &yaml).await;
    }

    // nothing in a request chooses the tenant or the namespace: a second cluster's agent
    // certificate sends crafted groups straight to the agent-facing service
    let other = "cluster-b";
    state.create_cluster(&Cluster::new(ClusterId::new(other).unwrap())).await.unwrap();
    let b_cert = files(&certs.pki.agent("agent-b", other));
    let tasks = opni_metrics_transport::Tasks::new();
    let tls =
        b_cert.watch(Duration::from_secs(5), opni_metrics_transport::tls::TlsFiles::client_config, &tasks).unwrap();
    let channel = opni_metrics_transport::grpc::tls_channel(
        &gw.grpc_addr.to_string(),
        "localhost",
        tls,
        &opni_metrics_transport::grpc::ChannelOptions::default(),
    )
    .unwrap();
    let before = cortex.seen().len();
    let group = |name: &str, yaml: &str| WireGroup {
        name: name.into(),
        source: "crafted".into(),
        yaml: yaml.as_bytes().to_vec().into(),
    };
    let channel2 = channel.clone();
    let resp = RemoteWriteClient::new(channel)
        .sync_rules(SyncRulesRequest {
            groups: vec![
                group("ok", "name: ok\nrules:\n- record: x:y\n  expr: up\n"),
                group("team/mine", "name: team/mine\nrules:\n- record: x:y\n  expr: up\n"),
                group("renamed", "name: mine\nrules:\n- record: x:y\n  expr: up\n"),
                group("escape", "name: escape\nnamespace: team\nrules:\n- record: x:y\n  expr: up\n"),
            ],
            invalid: vec![],
            digest: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.applied, 1);
    assert_eq!(resp.errors.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["team/mine", "renamed", "escape"]);
    // what reached the ruler meanwhile (the first agent's Prometheus may be pushing)
    let seen: Vec<_> = cortex.seen()[before..].iter().filter(|s| s.uri != "/api/v1/push").cloned().collect();
    assert!(!seen.is_empty());
    for s in seen {
        assert_eq!(s.org_ids, [other.to_owned()], "{s:?}");
        assert!(s.uri.starts_with(&format!("/api/v1/rules/{SYNCED_NAMESPACE}")), "{s:?}");
    }
    assert_eq!(cortex.rules(other).keys().collect::<Vec<_>>(), [SYNCED_NAMESPACE]);
    assert!(cortex.rules(CLUSTER)["team"].contains_key("mine"));
    assert_eq!(synced(&cortex, CLUSTER).len(), 1, "the first cluster's groups are untouched");

    // a ruler answering 503 twice: the gateway retries with back-off and the group arrives;
    // a 400 for one group refuses that group only
    cortex.fail_next(&[503, 503]);
    let mut rw = RemoteWriteClient::new(channel2);
    let ok = |n: &str| group(n, &format!("name: {n}\nrules:\n- record: x:y\n  expr: up\n"));
    let resp = rw
        .sync_rules(SyncRulesRequest { groups: vec![ok("ok"), ok("second")], invalid: vec![], digest: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.applied, resp.unchanged, resp.errors.len()), (1, 1, 0), "{resp:?}");
    // the listing answers normally, then the one POST (of "third", the others are unchanged) gets 400
    cortex.fail_next(&[0, 400]);
    let resp = rw
        .sync_rules(SyncRulesRequest {
            groups: vec![ok("ok"), ok("second"), ok("third")],
            invalid: vec![],
            digest: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.errors.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["third"], "{resp:?}");
    assert!(resp.errors[0].message.contains("refused"), "{resp:?}");
    assert_eq!(resp.applied, 0);
    assert!(cortex.rules(other)[SYNCED_NAMESPACE].contains_key("second"));

    tasks.shutdown(Duration::from_secs(1)).await;
    agent.shutdown().await;
    gw.shutdown().await;
}
