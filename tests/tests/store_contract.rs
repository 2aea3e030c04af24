//! The shared Store contract suite against the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use opni_metrics_core::store::{MemoryStore, contract};

#[test]
fn memory_store_passes_the_contract() {
    futures::executor::block_on(contract::run_all(&MemoryStore::default(), "contract/"));
}

#[test]
fn memory_store_with_tiny_history_still_passes() {
    // history must cover the longest replay the suite asks for
    futures::executor::block_on(contract::run_all(&MemoryStore::with_history(16), "contract/"));
}
