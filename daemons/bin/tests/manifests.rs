//! The shipped manifests, as `kubectl kustomize` builds them, hold together: the agent's
//! remote-write URL reaches its Service on a push path, probes hit the ops endpoints, the
//! gateway's shared CA comes from the Secret cert-manager writes and is mounted where its config
//! reads it with the mode it checks, every pod runs with a restricted security context, the
//! termination grace outlasts the drain, and the PodDisruptionBudget, NetworkPolicies and
//! ServiceMonitors select what they are meant to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use opni_metrics_daemons::config::agent::AgentConfig;
use opni_metrics_daemons::config::gateway::GatewayConfig;
use serde_json::Value;

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
        .join("../../deploy")
}

/// The objects `kubectl kustomize deploy/<dir>` builds; `None` without kubectl.
fn build(dir: &str) -> Option<Vec<Value>> {
    kustomize(&deploy_dir().join(dir))
}

/// The objects `kubectl kustomize <path>` builds; `None` without kubectl.
fn kustomize(path: &std::path::Path) -> Option<Vec<Value>> {
    let out = match std::process::Command::new("kubectl").arg("kustomize").arg(path).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: kubectl is not installed ({e}); apt-get install kubernetes-client");
            return None;
        }
    };
    assert!(out.status.success(), "kubectl kustomize {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(serde_saphyr::from_str_multiple::<Value, _>(&text).unwrap())
}

/// The gateway base with its self-monitoring component, built the way an operator's overlay
/// builds it (a component cannot be built alone, and kustomize takes only relative paths).
fn build_gateway_with_self_monitoring() -> Option<Vec<Value>> {
    let deploy = deploy_dir().canonicalize().unwrap();
    let overlay = tempfile::tempdir().unwrap();
    let depth = overlay.path().canonicalize().unwrap().components().count() - 1;
    let rel = |p: &str| format!("{}{}", "../".repeat(depth), deploy.join(p).strip_prefix("/").unwrap().display());
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources:\n  - {}\ncomponents:\n  - {}\n", rel("gateway"), rel("gateway/self-monitoring")),
    )
    .unwrap();
    kustomize(overlay.path())
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn config_file(objs: &[Value], configmap_prefix: &str, file: &str) -> String {
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"].as_str().unwrap().starts_with(configmap_prefix))
        .unwrap();
    cm["data"][file].as_str().unwrap().to_owned()
}

/// Restricted security context, probes on the ops endpoints, grace longer than `drain_s`.
fn check_pod(deploy: &Value, drain_s: u64) {
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain_s, "grace shorter than the drain");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let port_names: Vec<&str> = c["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(port_names.contains(&c["readinessProbe"]["httpGet"]["port"].as_str().unwrap()));
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deploy["spec"]["selector"]["matchLabels"], labels);
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().unwrap().iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_gateway_manifests_hold_together() {
    let Some(objs) = build("gateway") else { return };
    let deploy = find(&objs, "Deployment", "opni-metrics-gateway");
    assert!(deploy["spec"]["replicas"].as_u64().unwrap() >= 2);
    let config: GatewayConfig =
        serde_saphyr::from_str(&config_file(&objs, "opni-metrics-gateway", "gateway.yaml")).unwrap();
    let plan = config.validate().unwrap();
    check_pod(deploy, plan.settings.drain_timeout.as_secs());
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(pod["topologySpreadConstraints"].as_array().is_some_and(|t| !t.is_empty()));

    // the shared CA: cert-manager's Certificate → its Secret → a 0440 volume → the config's paths
    let cert = find(&objs, "Certificate", "opni-metrics-gateway-ca");
    assert_eq!(cert["spec"]["isCA"], true);
    assert_eq!(cert["spec"]["privateKey"]["rotationPolicy"], "Never");
    let secret = cert["spec"]["secretName"].as_str().unwrap();
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["secret"]["secretName"] == secret).unwrap();
    assert_eq!(volume["secret"]["defaultMode"], 0o440, "the gateway refuses a CA key others can read");
    let mount =
        pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == volume["name"]).unwrap()
            ["mountPath"]
            .as_str()
            .unwrap()
            .to_owned();
    let ca = config.ca.expect("the shipped gateway uses the shared CA");
    assert_eq!(ca.cert, std::path::Path::new(&mount).join("tls.crt"));
    assert_eq!(ca.key, std::path::Path::new(&mount).join("tls.key"));
    assert!(
        config.bootstrap.server_names.iter().any(|n| n == "opni-metrics-gateway.opni-system.svc"),
        "the serving certificate names the Service"
    );

    // etcd over TLS, its client files mounted from a Secret where the config reads them
    let Some(opni_metrics_store::StoreConfig::Etcd(etcd)) = &config.store else {
        panic!("the shipped gateway uses etcd")
    };
    assert!(etcd.endpoints.iter().all(|e| e.starts_with("https://")), "{:?}", etcd.endpoints);
    let tls = etcd.tls.as_ref().expect("etcd TLS");
    for file in [&tls.ca, &tls.cert, &tls.key] {
        let file = file.as_ref().expect("ca, cert and key");
        let mounted = pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().any(|m| {
            file.starts_with(m["mountPath"].as_str().unwrap())
                && pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == m["name"] && v["secret"].is_object())
        });
        assert!(mounted, "{} is not in a mounted Secret", file.display());
    }

    // PDB, NetworkPolicy and Service select the gateway's pods and name its ports
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let pdb = find(&objs, "PodDisruptionBudget", "opni-metrics-gateway");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let np = find(&objs, "NetworkPolicy", "opni-metrics-gateway");
    assert!(selects(&np["spec"]["podSelector"]["matchLabels"], labels));
    let allowed: Vec<&str> =
        np["spec"]["ingress"][0]["ports"].as_array().unwrap().iter().map(|p| p["port"].as_str().unwrap()).collect();
    assert_eq!(allowed, ["grpc", "query", "http"]);
    let svc = find(&objs, "Service", "opni-metrics-gateway");
    assert!(selects(&svc["spec"]["selector"], labels));
    let ports: Vec<&Value> = pod["containers"][0]["ports"].as_array().unwrap().iter().collect();
    for p in svc["spec"]["ports"].as_array().unwrap() {
        let target = p["targetPort"].as_str().unwrap();
        let port = ports.iter().find(|c| c["name"] == target).expect("a Service port targets no container port");
        let listen = match target {
            "grpc" => &config.grpc.listen,
            "http" => &config.http.listen,
            "query" => &config.query.listen,
            other => panic!("unexpected port {other}"),
        };
        assert!(listen.ends_with(&format!(":{}", port["containerPort"])), "{target}: {listen}");
    }
    assert!(objs.iter().all(|o| o["metadata"]["namespace"].is_null() || o["metadata"]["namespace"] == "opni-system"));
}

#[test]
fn the_agent_manifests_hold_together() {
    let Some(objs) = build("agent") else { return };
    let deploy = find(&objs, "Deployment", "opni-metrics-agent");
    let config: AgentConfig = serde_saphyr::from_str(&config_file(&objs, "opni-metrics-agent", "agent.yaml")).unwrap();
    config.validate().unwrap();
    check_pod(deploy, 30);
    let svc = find(&objs, "Service", "opni-metrics-agent");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&svc["spec"]["selector"], labels));

    // Prometheus writes to the agent's own Service, on a path the agent serves
    let url: http::Uri = config.driver.kubernetes.remote_write_url.clone().unwrap().parse().unwrap();
    let ns = svc["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(url.host(), Some(format!("opni-metrics-agent.{ns}.svc").as_str()));
    assert_eq!(Some(u64::from(url.port_u16().unwrap())), svc["spec"]["ports"][0]["port"].as_u64());
    assert!(opni_metrics_agent::PUSH_PATHS.contains(&url.path()), "{url}");
    let container_port = deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64();
    assert!(config.http.listen.ends_with(&format!(":{}", container_port.unwrap())));

    // the gateway's CA for the first join is mounted where the config reads it
    let ca_file = config.bootstrap.ca_file.clone().expect("the agent verifies the gateway at join");
    let pod = &deploy["spec"]["template"]["spec"];
    let ca_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "opni-metrics-gateway-ca")
        .expect("no volume with the gateway's CA");
    let mounted = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == ca_volume["name"] && ca_file.starts_with(m["mountPath"].as_str().unwrap()));
    assert!(mounted, "{} is not where the CA is mounted", ca_file.display());

    // the joined identity survives the emptyDir in a Secret the agent may write
    let plan = config.validate().unwrap();
    assert_eq!(plan.identity_secret.as_deref(), Some("opni-metrics-agent-identity"));
    let role = find(&objs, "Role", "opni-metrics-agent");
    let may_write_secrets = role["rules"].as_array().unwrap().iter().any(|r| {
        let has = |k: &str, v: &str| r[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
        has("resources", "secrets") && has("verbs", "get") && has("verbs", "patch") && has("verbs", "create")
    });
    assert!(may_write_secrets, "{role}");

    let np = find(&objs, "NetworkPolicy", "opni-metrics-agent");
    assert!(selects(&np["spec"]["podSelector"]["matchLabels"], labels));
    let sm = find(&objs, "ServiceMonitor", "opni-metrics-agent");
    assert!(selects(&sm["spec"]["selector"]["matchLabels"], &svc["metadata"]["labels"]));
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
}

/// Every shipped object of a third-party kind (cert-manager's CA, the ServiceMonitors, the
/// alerts) fits the real operator's CRD schema: nothing a real API server would prune or refuse.
#[test]
fn shipped_third_party_objects_fit_the_real_crd_schemas() {
    let Some(schemas) = opni_metrics_tests::crd_schema::Schemas::upstream() else { return };
    let (Some(mut objs), Some(agent)) = (build_gateway_with_self_monitoring(), build("agent")) else { return };
    // the component's objects land beside the gateway (a ServiceMonitor elsewhere finds no Service)
    for kind in ["PrometheusRule", "ServiceMonitor"] {
        assert_eq!(find(&objs, kind, "opni-metrics-gateway")["metadata"]["namespace"], "opni-system", "{kind}");
    }
    objs.extend(agent);
    let mut checked = Vec::new();
    for o in &objs {
        let (api_version, kind) =
            (o["apiVersion"].as_str().unwrap_or_default(), o["kind"].as_str().unwrap_or_default());
        if schemas.knows(api_version, kind) {
            assert_eq!(schemas.check(o), Ok(()), "{kind} {}", o["metadata"]["name"]);
            checked.push(format!("{kind} {}", o["metadata"]["name"].as_str().unwrap_or_default()));
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "Certificate opni-metrics-gateway-ca",
            "Issuer opni-metrics-selfsigned",
            "PrometheusRule opni-metrics-gateway",
            "ServiceMonitor opni-metrics-agent",
            "ServiceMonitor opni-metrics-gateway",
        ]
    );
}
