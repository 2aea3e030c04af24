//! A lost `SyncNow` heals at the periodic resync: the gateway's store watch is made deaf, so
//! the only way a config change reaches the agent is the periodic `SyncNow`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use opni_metrics_agent::sync_loop::SyncState;
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::node::{ConditionKind, ConditionStatus};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::store::{KeyValue, Listing, MemoryStore, Precondition, Store, StoreError, WatchEvent};
use opni_metrics_core::{CapabilityName, ClusterId, Revision};
use opni_metrics_gateway::state;
use opni_metrics_tests::upstream::{Behaviour, Upstream};

/// A store whose watch never delivers anything: every notification is lost.
struct DeafStore(MemoryStore);

impl Store for DeafStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.0.get(key)
    }
    fn put<'a>(&'a self, key: &'a str, value: Bytes, pre: Precondition) -> BoxFuture<'a, Result<Revision, StoreError>> {
        self.0.put(key, value, pre)
    }
    fn delete<'a>(&'a self, key: &'a str, pre: Precondition) -> BoxFuture<'a, Result<Option<Revision>, StoreError>> {
        self.0.delete(key, pre)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        self.0.list(prefix)
    }
    fn watch<'a>(
        &'a self,
        _: &'a str,
        _: Revision,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>> {
        Box::pin(async { Ok(Box::pin(futures::stream::pending()) as BoxStream<'static, _>) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sync_now_heals_at_the_periodic_resync() {
    let certs = common::certs();
    let upstream = Upstream::start(Behaviour::status(204)).await;
    let store: Arc<dyn Store> = Arc::new(DeafStore(MemoryStore::default()));
    let st = state::State::new(Arc::clone(&store), opni_metrics_core::node::UpstreamState::Installed);
    let id = ClusterId::new(common::CLUSTER).unwrap();
    st.create_cluster(&Cluster::new(id.clone())).await.unwrap();
    st.update_cluster(&id, |c| c.install(CapabilityName::metrics(), state::now())).await.unwrap();

    let mut gc = common::gateway_config(&certs, &upstream.url());
    gc.sync.resync_interval = PromDuration::from_secs(1);
    let gw = common::start_gateway(gc.validate().unwrap().settings, Arc::clone(&store)).await;
    let ac = common::agent_config(&certs.agent, &gw.grpc_addr.to_string());
    let agent = common::start_agent(&ac).await;

    // the agent publishes its state on a watch channel: await the change, no polling
    let applied = |want: opni_metrics_core::digest::Digest| {
        let mut rx = agent.sync.clone();
        async move {
            // applied, and the report Sync answered UpToDate: the agent is idle
            let idle = |s: &SyncState| {
                s.status.applied_digest == Some(want)
                    && s.status.get(ConditionKind::Synced).is_some_and(|c| c.status == ConditionStatus::True)
            };
            tokio::time::timeout(common::WAIT, rx.wait_for(idle))
                .await
                .expect("agent applied the desired digest in time")
                .expect("agent running");
        }
    };
    let before = st.desired(&id).await.unwrap().digest();
    applied(before).await;

    // change the default config: the watch is deaf, so no SyncNow is sent for it
    let mut spec = MetricsCapabilitySpec::default();
    spec.prometheus.queue.max_shards = 3;
    st.put_default_spec(&spec, None).await.unwrap();
    let want = st.desired(&id).await.unwrap().digest();
    assert_ne!(want, before, "the change is one the agent has yet to apply");
    applied(want).await;
    agent.shutdown().await;
    gw.shutdown().await;
}
