#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const GOOD: &str = "groups:\n- name: node\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    labels:\n      severity: page\n";

fn write(dir: &std::path::Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn names(b: &Built) -> Vec<String> {
    b.groups.iter().map(|g| g.name.clone()).collect()
}

#[test]
fn bad_sources_and_groups_are_reported_and_the_rest_synced() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yml", GOOD.as_bytes());
    let promql = write(
        dir.path(),
        "promql.yml",
        b"groups:\n- name: broken\n  rules:\n  - record: a\n    expr: sum(up\n- name: fine\n  rules:\n  - record: b\n    expr: up\n",
    );
    let dupes = write(
        dir.path(),
        "dupes.yml",
        b"groups:\n- name: same\n  rules:\n  - record: a\n    expr: up\n- name: same\n  rules:\n  - record: b\n    expr: up\n",
    );
    write(dir.path(), "not-rules.yml", b"scrape_configs:\n- job_name: x\n");
    write(dir.path(), "latin1.yml", b"groups:\n- name: caf\xe9\n  rules: []\n");
    let mut big = GOOD.as_bytes().to_vec();
    big.resize(10 << 20, b'\n');
    write(dir.path(), "big.yml", &big);
    let found = scan_files(&[format!("{}/*.yml", dir.path().display())]);
    assert_eq!(found.len(), 6);
    let b = build(&found);
    assert_eq!(
        names(&b),
        [
            synced_name(&RuleSource::File { path: good.clone() }, "node"),
            synced_name(&RuleSource::File { path: promql.clone() }, "fine"),
        ]
    );
    let why = |needle: &str| b.invalid.iter().find(|e| e.source.contains(needle)).map(|e| e.message.clone()).unwrap();
    assert!(why("promql.yml").contains("invalid PromQL"), "{b:?}");
    assert!(why("dupes.yml").contains("used twice"));
    assert_eq!(b.invalid.iter().filter(|e| e.source.contains("dupes.yml")).count(), 2);
    assert!(why("not-rules.yml").contains("not a Prometheus rule file"));
    assert!(why("latin1.yml").contains("not UTF-8"));
    assert!(why("big.yml").contains("at most"));
    // what is sent is renamed, re-parsable, and carries its source
    let g = &b.groups[0];
    let parsed: RuleGroup = serde_saphyr::from_str(std::str::from_utf8(&g.yaml).unwrap()).unwrap();
    assert_eq!(parsed.name, g.name);
    assert_eq!(g.source, format!("file {good}"));
    assert_eq!(parsed.rules.len(), 2);
    let _ = dupes;
}

#[test]
fn the_digest_follows_content_not_discovery_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yml", GOOD.as_bytes());
    write(dir.path(), "b.yml", GOOD.as_bytes());
    let globs = [format!("{}/*.yml", dir.path().display())];
    let first = build(&scan_files(&globs));
    let mut reversed = scan_files(&globs);
    reversed.reverse();
    assert_eq!(build(&reversed).digest, first.digest);
    assert_eq!(first.groups.len(), 2, "the same group in two files stays two groups");
    write(dir.path(), "b.yml", GOOD.replace("5m", "10m").as_bytes());
    assert_ne!(build(&scan_files(&globs)).digest, first.digest);
}

#[test]
fn kubernetes_sources_get_their_own_names() {
    let group: RuleGroup =
        serde_json::from_value(serde_json::json!({"name": "g", "rules": [{"record": "a", "expr": "up"}]})).unwrap();
    let k = |ns: &str, n: &str| RuleSource::Kubernetes { namespace: ns.into(), name: n.into() };
    let b = build(&[(k("a", "x"), Ok(vec![group.clone()])), (k("b", "x"), Ok(vec![group]))]);
    assert_eq!(names(&b), ["k8s:a:x:g", "k8s:b:x:g"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Whatever a rule file holds, reading and checking it answers without panicking (the
    /// `rules` fuzz target in `fuzz/` runs the same for longer).
    #[test]
    fn arbitrary_rule_files_never_panic(text in "\\PC{0,200}", expr in "\\PC{0,40}") {
        if let Ok(file) = serde_saphyr::from_str::<RuleFile>(&text) {
            for g in &file.groups {
                let _ = g.validate(&check_promql);
            }
        }
        let _ = check_promql(&expr);
    }
}
