//! The agent's sync loop: runs core's [`AgentSync`] state machine against the gateway's
//! `NodeSync` service and the node driver. One task owns the machine; RPCs and applies run in
//! their own tasks and report back through a channel.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opni_metrics_core::Timestamp;
use opni_metrics_core::backoff::{Backoff, Rng};
use opni_metrics_core::driver::NodeDriver;
use opni_metrics_core::node::{NodeStatus, SyncReply};
use opni_metrics_core::sync::{AgentSync, Effect, Input};
use opni_metrics_proto::node::v1::node_sync_client::NodeSyncClient;
use opni_metrics_proto::node::v1::{NotificationsRequest, SyncRequest, notification};
use opni_metrics_transport::channel::GatewayChannel;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What the loop publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Whether the notification stream is up.
    pub connected: bool,
    /// The machine's status (conditions, applied digest).
    pub status: NodeStatus,
}

#[allow(clippy::large_enum_variant)] // one short-lived message per reply
enum Event {
    Replied(u64, Result<SyncReply, String>),
    Applied(Result<NodeStatus, String>),
}

/// Runs the loop until `stop` is cancelled.
pub(crate) async fn run(
    channel: GatewayChannel,
    driver: Arc<dyn NodeDriver>,
    state: watch::Sender<SyncState>,
    stop: CancellationToken,
) {
    let origin = tokio::time::Instant::now();
    let clock = move || Timestamp(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX));
    let seed = u64::from(std::process::id()) ^ (origin.elapsed().as_nanos() as u64);
    let mut machine = AgentSync::new(None, Backoff::default(), seed);
    let reconnect = Backoff { base: Duration::from_millis(200), max: Duration::from_secs(30), jitter: 0.3 };
    let mut rng = Rng::new(seed ^ 0xabcdef);
    let client = NodeSyncClient::new(channel);
    let (tx, mut rx) = mpsc::channel::<Event>(8);
    let mut wake: Option<tokio::time::Instant> = None;
    let mut attempts: u32 = 0;
    let publish = |machine: &AgentSync, connected: bool| {
        state.send_if_modified(|s| {
            let next = SyncState { connected, status: machine.status().clone() };
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    };

    loop {
        if stop.is_cancelled() {
            return;
        }
        // connect the notification stream
        let mut c = client.clone();
        let stream = tokio::select! {
            r = c.notifications(NotificationsRequest {}) => r,
            () = stop.cancelled() => return,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                attempts = attempts.saturating_add(1);
                let delay = reconnect.delay(attempts, rng.next_u64());
                tracing::warn!(error = %e.message(), retry_in = ?delay, "cannot reach the gateway");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        attempts = 0;
        tracing::info!("connected to the gateway");
        let mut fx = machine.handle(clock(), Input::Connected);
        publish(&machine, true);
        loop {
            for e in fx.drain(..) {
                perform(e, &client, &driver, &tx, &mut wake, origin);
            }
            publish(&machine, true);
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(n)) => {
                        if let Some(notification::Kind::SyncNow(now)) = n.kind {
                            // a change sent with its config: applied without a Sync asking for it
                            let input = match now.offer() {
                                Ok(Some((config, digest))) => Input::Offered { config, digest },
                                Ok(None) => Input::SyncNow,
                                Err(e) => {
                                    tracing::warn!(error = %e, "ignoring an invalid config offer; syncing instead");
                                    Input::SyncNow
                                }
                            };
                            fx = machine.handle(clock(), input);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e.message(), "notification stream failed");
                        break;
                    }
                    None => {
                        // at the connection's maximum age, or a newer stream replaced it
                        tracing::info!("the gateway ended the notification stream; reconnecting");
                        break;
                    }
                },
                Some(ev) = rx.recv() => {
                    fx = match ev {
                        Event::Replied(seq, result) => machine.handle(clock(), Input::SyncReplied { seq, result }),
                        Event::Applied(result) => machine.handle(clock(), Input::Applied { result }),
                    };
                }
                () = sleep => {
                    wake = None;
                    fx = machine.handle(clock(), Input::Tick);
                }
                () = stop.cancelled() => return,
            }
        }
        let _ = machine.handle(clock(), Input::Disconnected);
        publish(&machine, false);
        // late results of the lost connection still arrive on `rx` and are matched by seq
    }
}

fn perform(
    e: Effect,
    client: &NodeSyncClient<GatewayChannel>,
    driver: &Arc<dyn NodeDriver>,
    tx: &mpsc::Sender<Event>,
    wake: &mut Option<tokio::time::Instant>,
    origin: tokio::time::Instant,
) {
    match e {
        Effect::SendSync { seq, current_digest, status } => {
            let mut client = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut req = tonic::Request::new(SyncRequest::new(current_digest.as_ref(), status));
                req.set_timeout(Duration::from_secs(30));
                let result = match client.sync(req).await {
                    Ok(r) => SyncReply::try_from(r.into_inner()).map_err(|e| e.to_string()),
                    Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                };
                let _ = tx.send(Event::Replied(seq, result)).await;
            });
        }
        Effect::Apply { config, digest } => {
            let driver = Arc::clone(driver);
            let tx = tx.clone();
            tracing::info!(%digest, enabled = config.enabled, "applying node config");
            tokio::spawn(async move {
                let result = driver.apply(&config).await.map_err(|e| opni_metrics_core::error_chain(&e));
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "apply failed");
                }
                let _ = tx.send(Event::Applied(result)).await;
            });
        }
        Effect::StatusChanged(_) => {}
        Effect::WakeAt(t) => {
            // `t` is milliseconds on the loop's clock, which starts at `origin`
            let at = origin + Duration::from_millis(t.as_millis());
            *wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
}
