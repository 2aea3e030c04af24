//! Registering clusters directly in a gateway's store, as `opni-metrics clusters create` and
//! `capability install` would, for tests whose agents use certificate files.

use std::sync::Arc;

use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::{MemoryStore, Precondition, Store};
use opni_metrics_core::{CapabilityName, ClusterId, Timestamp};

/// Registers `id` in `store` with the `metrics` capability installed.
///
/// # Panics
/// On an invalid id or a store error (test code).
pub async fn install(store: &dyn Store, id: &str) {
    let mut c = Cluster::new(ClusterId::new(id).expect("cluster id"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    c.install(CapabilityName::metrics(), Timestamp(u64::try_from(now).unwrap_or(0))).expect("install");
    let value = serde_json::to_vec(&c).expect("encode cluster");
    store.put(&format!("clusters/{id}"), value.into(), Precondition::None).await.expect("register cluster");
}

/// A memory store in which each of `ids` is registered with the `metrics` capability installed.
pub async fn store_with(ids: &[&str]) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    for id in ids {
        install(store.as_ref(), id).await;
    }
    store
}

/// Registers `id` with the `metrics` capability installed through a running gateway's
/// management listener at `address`, with the `opni-metrics` CLI in `bin_dir` (as an operator
/// would for an agent given certificate files). Already registered or installed is fine.
///
/// # Errors
/// The CLI's output when it fails.
pub async fn install_with_cli(
    bin_dir: &std::path::Path,
    address: &str,
    token_file: &std::path::Path,
    id: &str,
) -> Result<(), String> {
    let cli = bin_dir.join("opni-metrics");
    for args in [vec!["clusters", "create", id], vec!["capability", "install", id, "--ignore-warnings"]] {
        let out = tokio::process::Command::new(&cli)
            .arg(format!("--address={address}"))
            .arg(format!("--token-file={}", token_file.display()))
            .args(&args)
            .output()
            .await
            .map_err(|e| format!("{}: {e}", cli.display()))?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // registered (or installed) before, by an earlier start on the same store: done
        if !out.status.success() && !said.contains("already") {
            return Err(format!(
                "opni-metrics {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}
