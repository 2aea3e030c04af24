//! Waiting for a condition on a [`Store`]'s state without polling: the condition is checked,
//! then again after every change the store's watch reports.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use opni_metrics_core::store::Store;

/// Checks `check` now and after every change of `store`, until it holds.
///
/// # Errors
/// `what`, when `limit` passes first, or the store's watch fails.
pub async fn store_until<F, Fut>(store: &dyn Store, limit: Duration, what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waiting = async {
        // a prefix no key has: the listing is empty but carries the current revision
        let from = store.list("\u{10FFFF}").await.map_err(|e| e.to_string())?.revision;
        let mut changes = store.watch("", from).await.map_err(|e| e.to_string())?;
        loop {
            if check().await {
                return Ok(());
            }
            match changes.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the store watch failed: {e}")),
                None => return Err("the store watch ended".to_owned()),
            }
        }
    };
    tokio::time::timeout(limit, waiting).await.map_err(|_| format!("{what} did not happen within {limit:?}"))?
}
