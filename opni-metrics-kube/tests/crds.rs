//! The committed CRD YAML under `deploy/crds/` is what the Rust types generate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with the failure

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../deploy/crds");
    for (name, yaml) in opni_metrics_kube::crd::crd_files().unwrap() {
        let path = dir.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == yaml,
            "{} is stale: run `cargo run -p opni-metrics-daemons --bin opni-metrics-crdgen`",
            path.display()
        );
    }
}
