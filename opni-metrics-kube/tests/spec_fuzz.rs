//! `MonitoringCluster` specs are input (anyone with write access to the object writes one):
//! arbitrary JSON, or a valid spec with values replaced, deserialises and validates to a value or
//! an error, never a panic.
#![allow(clippy::unwrap_used)]

use opni_metrics_kube::crd::MonitoringClusterSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: &[&str] = &[
    "cortex",
    "grafana",
    "gateway",
    "enabled",
    "deploymentMode",
    "config",
    "storage",
    "retention",
    "workloads",
    "backend",
    "s3",
    "replicas",
    "hostname",
    "queryPort",
];

fn check(v: Value) {
    if let Ok(spec) = serde_json::from_value::<MonitoringClusterSpec>(v) {
        let _ = opni_metrics_kube::render::validate(&spec);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_specs_never_panic(v in value()) {
        check(v);
    }

    #[test]
    fn specs_with_a_value_replaced_never_panic(key in proptest::sample::select(KEYS), v in value()) {
        let base = || json!({"cortex": {"enabled": true, "deploymentMode": "AllInOne", "config": {"retention": "30d"}}, "grafana": {"enabled": true}});
        let mut a = base();
        a["cortex"][key] = v.clone();
        check(a);
        let mut b = base();
        b["cortex"]["config"][key] = v.clone();
        check(b);
        let mut c = base();
        c[key] = v;
        check(c);
    }
}
