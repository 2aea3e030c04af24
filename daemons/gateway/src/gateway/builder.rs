//! [`GatewayBuilder`]: settings plus replaceable parts, turned into a [`Gateway`].

use super::*;

type LayerFn = Box<dyn FnOnce(ForwardService) -> ForwardService + Send>;

/// Builds a [`Gateway`]. Only the store is required; every other part has a default.
#[must_use = "a builder does nothing until built"]
pub struct GatewayBuilder {
    settings: GatewaySettings,
    store: Option<Arc<dyn Store>>,
    cluster_driver: Option<Arc<dyn ClusterDriver>>,
    upstream: Option<ForwardService>,
    layers: Vec<LayerFn>,
    authenticator: Option<Arc<dyn Authenticator>>,
    metrics: Option<Arc<GatewayMetrics>>,
    #[cfg(feature = "kubernetes")]
    kubernetes: Option<crate::kubernetes::KubernetesSettings>,
    election: Option<(tokio::sync::watch::Receiver<bool>, Campaign)>,
    presence: Option<(Arc<dyn crate::sync::Presence>, Campaign)>,
}

/// A leader election's campaign, given the future that resolves at the gateway's shutdown.
pub type Campaign =
    Box<dyn FnOnce(futures::future::BoxFuture<'static, ()>) -> futures::future::BoxFuture<'static, ()> + Send>;

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    pub(super) fn new(settings: GatewaySettings) -> Self {
        Self {
            settings,
            store: None,
            cluster_driver: None,
            upstream: None,
            layers: Vec::new(),
            authenticator: None,
            metrics: None,
            #[cfg(feature = "kubernetes")]
            kubernetes: None,
            election: None,
            presence: None,
        }
    }

    /// Shares which replica holds each agent's connection through `presence`, and runs `keep`
    /// (given the future that resolves at shutdown) in the gateway's tasks: `Install` and
    /// `capability status` then answer "connected" the same through every replica. With etcd:
    /// [`SessionPresence`](crate::sync::SessionPresence).
    pub fn presence(mut self, presence: Arc<dyn crate::sync::Presence>, keep: Campaign) -> Self {
        self.presence = Some((presence, keep));
        self
    }

    /// Runs the single-writer work (the uninstall runner) only while `leading` is true, and
    /// runs `campaign` in the gateway's tasks until shutdown (when it should give the lead up).
    /// Without this, the gateway assumes it is the only replica and always leads. Several
    /// replicas on one store need it: with etcd, an `opni_metrics_store::etcd::Election`.
    pub fn leader_election(mut self, leading: tokio::sync::watch::Receiver<bool>, campaign: Campaign) -> Self {
        self.election = Some((leading, campaign));
        self
    }

    /// Where the gateway keeps its state (required): an embedded or etcd store from
    /// `opni-metrics-store`, core's `MemoryStore`, or the embedder's own [`Store`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The upstream's cluster driver (install, status, tenant deletion). Default: the external
    /// driver for the upstream URL (Cortex purger API), or the `MonitoringCluster` driver when
    /// [`GatewayBuilder::kubernetes`] is set.
    pub fn cluster_driver(mut self, driver: Arc<dyn ClusterDriver>) -> Self {
        self.cluster_driver = Some(driver);
        self
    }

    /// Replaces the upstream forwarder (default: HTTP(S) POST to `upstream.url` with the
    /// concurrency limit, deadline and metrics layers).
    pub fn upstream_service(mut self, service: ForwardService) -> Self {
        self.upstream = Some(service);
        self
    }

    /// Wraps the forwarding stack in `layer` (budgets, auditing, sharding…). Layers apply in
    /// the order added, the last added outermost.
    pub fn forward_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ForwardService> + Send + 'static,
        L::Service:
            Service<ForwardRequest, Response = ForwardResponse, Error = ForwardError> + Clone + Send + Sync + 'static,
        <L::Service as Service<ForwardRequest>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |svc| BoxCloneSyncService::new(layer.layer(svc))));
        self
    }

    /// Who may call the management services. Default: [`AdminToken`] with the token in
    /// `admin_token_file` (created when missing).
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(auth);
        self
    }

    /// Registers the gateway's metrics in the embedder's `registry` (default: a registry of
    /// the gateway's own, served by [`Gateway::serve`] on `/metrics`).
    pub fn metrics(mut self, registry: &mut Registry) -> Self {
        self.metrics = Some(GatewayMetrics::register(registry));
        self
    }

    /// Runs on Kubernetes: the `MonitoringCluster` cluster driver and, with a Lease, its
    /// controller on the leading replica.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(mut self, k: crate::kubernetes::KubernetesSettings) -> Self {
        self.kubernetes = Some(k);
        self
    }

    /// Builds the gateway: opens the CA, starts the sync hub, the store watcher, the status
    /// writer and unfinished uninstall tasks. Binds nothing; see [`Gateway::serve`] and
    /// [`Gateway::agent_services`]. Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`StartError`]; nothing is left running.
    pub async fn build(self) -> Result<Gateway, StartError> {
        let settings = self.settings;
        settings.validate()?;
        let store = self.store.ok_or(StartError::NoStore)?;
        let tasks = Tasks::new();
        let own_registry = self.metrics.is_none();
        let mut registry = Registry::default();
        let metrics = self.metrics.unwrap_or_else(|| GatewayMetrics::register(&mut registry));
        let ops = Ops::new(if own_registry { registry } else { Registry::default() });
        // a store that cannot write (an embedded file on a full disk) makes the replica unready
        // until it has recovered
        let health_of = Arc::clone(&store);
        ops.add_readiness_check("store", move || match health_of.health() {
            opni_metrics_core::store::StoreHealth::Writable => Ok(()),
            opni_metrics_core::store::StoreHealth::Unwritable(why) => Err(why),
            _ => Err("unknown store state".to_owned()),
        });
        // one pooled client (one TLS configuration, one root store) for every upstream call
        let client = crate::forward::upstream_client(&settings.upstream)?;
        let mut forward = match self.upstream {
            Some(s) => s,
            None => {
                stack(Forwarder::with_client(settings.upstream.clone(), client.clone()), Arc::clone(&metrics.upstream))
            }
        };
        // the in-flight budgets hold whatever forwards (the default stack or the embedder's)
        let budget = crate::budget::Budget::new(
            settings.budget,
            metrics.budget_in_flight_bytes.clone(),
            metrics.budget_refusals.clone(),
        );
        forward = BoxCloneSyncService::new(crate::budget::BudgetLayer::new(budget).layer(forward));
        for layer in self.layers {
            forward = layer(forward);
        }
        let pki = settings.data_dir.join("pki");
        let ca = Arc::new(match &settings.ca {
            Some(files) => Ca::load(&files.cert, &files.key, &pki)?,
            None => Ca::load_or_create(&pki)?,
        });
        let (admin_token, authenticator) = match self.authenticator {
            Some(a) => (None, a),
            None => {
                let t = admin_token(&settings.admin_token_path())?;
                let a: Arc<dyn Authenticator> = Arc::new(AdminToken::new(&t));
                (Some(t), a)
            }
        };
        let external: Arc<dyn ClusterDriver> =
            Arc::new(ExternalCluster::with_client(&settings.upstream, client.clone()));
        #[cfg(feature = "kubernetes")]
        let default_driver = match self.kubernetes {
            Some(k) => crate::kubernetes::start(k, Arc::clone(&external), &tasks)?,
            None => external,
        };
        #[cfg(not(feature = "kubernetes"))]
        let default_driver = external;
        let driver = self.cluster_driver.unwrap_or(default_driver);

        let state = State::new(store, UpstreamState::Installed);
        let readers = Readers::new(state.clone(), settings.readers.oidc.clone(), Arc::clone(&authenticator))?;
        let presence = self.presence.map(|(p, keep)| {
            let stop = tasks.token();
            tasks.spawn_graceful("presence", keep(Box::pin(async move { stop.cancelled().await })));
            p
        });
        let hub = Hub::start(settings.sync, os_seed(), &tasks, presence);
        // one view of the registry and desired state, for Sync and admission, kept by the watcher
        let view = Arc::new(crate::sync::StateView::default());
        let connections = opni_metrics_transport::grpc::Connections::default();
        watch_store(
            state.clone(),
            hub.clone(),
            Arc::clone(&view),
            connections.clone(),
            settings.sync.resync_interval,
            &tasks,
        );
        let loaded = Arc::clone(&view);
        ops.add_readiness_check("registry", move || {
            if loaded.is_loaded() { Ok(()) } else { Err("the registry is not loaded yet".to_owned()) }
        });
        let admission = Arc::new(crate::admission::Admission::new(Arc::clone(&view)));
        let statuses = Arc::new(StatusCache::default());
        statuses.start_writer(state.clone(), &tasks);
        let upstream = UpstreamWatch::start(
            state.clone(),
            Arc::clone(&driver),
            settings.upstream.status_interval,
            settings.upstream.failing_grace,
            &tasks,
        );
        let leading = match self.election {
            Some((leading, campaign)) => {
                let stop = tasks.token();
                tasks.spawn_graceful("leader-election", campaign(Box::pin(async move { stop.cancelled().await })));
                leading
            }
            None => tokio::sync::watch::channel(true).1,
        };
        {
            let gauge = metrics.leader.clone();
            let mut rx = leading.clone();
            tasks.spawn("leader-gauge", async move {
                loop {
                    gauge.set(i64::from(*rx.borrow_and_update()));
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        let uninstaller = Uninstaller::new(state.clone(), hub.clone(), Arc::clone(&driver), tasks.clone(), leading);
        uninstaller.run();
        Ok(Gateway {
            settings,
            state,
            hub,
            view,
            admission,
            connections,
            statuses,
            uninstaller,
            driver,
            upstream,
            ca,
            metrics,
            ops,
            forward,
            authenticator,
            admin_token,
            readers,
            client,
            tasks,
            serving: None,
            ingest: crate::console::IngestHistory::default(),
        })
    }
}
