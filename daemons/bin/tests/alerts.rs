//! The alerts shipped with the gateway (`deploy/gateway/self-monitoring/prometheusrule.yaml`)
//! hold together: the `PrometheusRule` fits prometheus-operator's real CRD schema, a real
//! `promtool check rules` accepts its groups, and every alert says how severe it is and what it
//! means. (That they read only metrics the gateway exports is a test of the gateway crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{Value, json};

fn deploy() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
        .join("../../deploy")
}

fn rule() -> Value {
    let text = std::fs::read_to_string(deploy().join("gateway/self-monitoring/prometheusrule.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn alerts(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().iter()).collect()
}

#[test]
fn the_rule_fits_the_crd_and_every_alert_says_what_it_means() {
    let rule = rule();
    if let Some(schemas) = opni_metrics_tests::crd_schema::Schemas::upstream() {
        assert_eq!(schemas.check(&rule), Ok(()));
    }
    let all = alerts(&rule);
    assert!(all.len() >= 5, "{all:?}");
    for a in all {
        let name = a["alert"].as_str().expect("every rule is an alert");
        assert!(name.starts_with("OpniMetrics"), "{name}");
        assert!(
            ["critical", "warning", "info"].contains(&a["labels"]["severity"].as_str().unwrap_or_default()),
            "{name}"
        );
        for key in ["summary", "description"] {
            assert!(a["annotations"][key].as_str().is_some_and(|s| !s.trim().is_empty()), "{name}: no {key}");
        }
    }
    // the job the Prometheus gives the ServiceMonitor's targets is the Service's name
    let service: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(deploy().join("gateway/service.yaml")).unwrap()).unwrap();
    let job = format!("job=\"{}\"", service["metadata"]["name"].as_str().unwrap());
    let down = alerts(&rule).into_iter().find(|a| a["alert"] == "OpniMetricsGatewayDown").unwrap();
    assert!(down["expr"].as_str().unwrap().contains(&job), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_rules() {
    let rule = rule();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, serde_saphyr::to_string(&json!({ "groups": rule["spec"]["groups"] })).unwrap()).unwrap();
    let o = tokio::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .await
        .expect("promtool (Debian's prometheus package)");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "promtool refused the shipped rules: {out}");
    assert!(out.contains(&format!("{} rules found", alerts(&rule).len())), "{out}");

    // that they read only metrics the gateway exports is checked next to where the gateway
    // registers them (`daemons/gateway/src/metrics.rs`)
}
