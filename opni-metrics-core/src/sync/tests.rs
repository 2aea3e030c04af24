use super::*;
use crate::node::sync_decision;
use crate::spec::MetricsCapabilitySpec;

fn cfg(shards: u32) -> NodeConfig {
    let mut s = MetricsCapabilitySpec::default();
    s.prometheus.queue.max_shards = shards;
    NodeConfig::enabled(s)
}

fn sends(fx: &[Effect]) -> Vec<(u64, Option<Digest>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SendSync { seq, current_digest, .. } => Some((*seq, *current_digest)),
            _ => None,
        })
        .collect()
}

fn machine() -> AgentSync {
    AgentSync::new(None, Backoff::default(), 1)
}

#[test]
fn connect_sync_apply_report() {
    let mut m = machine();
    let t = Timestamp(0);
    let fx = m.handle(t, Input::Connected);
    assert_eq!(sends(&fx), vec![(1, None)]);
    let desired = cfg(10);
    let fx = m.handle(t, Input::SyncReplied { seq: 1, result: Ok(sync_decision(None, &desired)) });
    assert!(matches!(&fx[0], Effect::Apply { config, .. } if *config == desired));
    let fx = m.handle(t, Input::Applied { result: Ok(NodeStatus::default()) });
    assert_eq!(sends(&fx), vec![(2, Some(desired.digest()))], "reports the applied digest");
    assert_eq!(m.status().get(ConditionKind::Applied).unwrap().status, ConditionStatus::True);
    let fx = m.handle(t, Input::SyncReplied { seq: 2, result: Ok(SyncReply::UpToDate) });
    assert!(sends(&fx).is_empty());
    assert!(m.is_idle());
    assert_eq!(m.applied(), Some(&desired.digest()));
}

#[test]
fn sync_now_while_syncing_is_coalesced_into_one_more_sync() {
    let mut m = machine();
    let t = Timestamp(0);
    m.handle(t, Input::Connected);
    for _ in 0..5 {
        assert!(sends(&m.handle(t, Input::SyncNow)).is_empty());
    }
    let fx = m.handle(t, Input::SyncReplied { seq: 1, result: Ok(SyncReply::UpToDate) });
    assert_eq!(sends(&fx).len(), 1);
    let fx = m.handle(t, Input::SyncReplied { seq: 2, result: Ok(SyncReply::UpToDate) });
    assert!(sends(&fx).is_empty());
}

#[test]
fn stale_replies_after_reconnect_are_ignored() {
    let mut m = machine();
    let t = Timestamp(0);
    m.handle(t, Input::Connected);
    m.handle(t, Input::Disconnected);
    let fx = m.handle(t, Input::Connected);
    assert_eq!(sends(&fx), vec![(2, None)]);
    let fx = m.handle(t, Input::SyncReplied { seq: 1, result: Ok(sync_decision(None, &cfg(3))) });
    assert!(fx.iter().all(|e| !matches!(e, Effect::Apply { .. })), "reply to seq 1 ignored");
}

#[test]
fn apply_failure_backs_off_then_retries() {
    let mut m = machine();
    m.handle(Timestamp(0), Input::Connected);
    let desired = cfg(4);
    m.handle(Timestamp(0), Input::SyncReplied { seq: 1, result: Ok(sync_decision(None, &desired)) });
    let fx = m.handle(Timestamp(0), Input::Applied { result: Err("prometheus failed to start".into()) });
    let Some(Effect::WakeAt(at)) = fx.iter().find(|e| matches!(e, Effect::WakeAt(_))) else {
        panic!("no wake-up in {fx:?}")
    };
    assert!(*at > Timestamp(0));
    assert_eq!(m.status().get(ConditionKind::Applied).unwrap().message, "prometheus failed to start");
    assert!(sends(&m.handle(Timestamp(0), Input::SyncNow)).is_empty(), "no sync during back-off");
    assert_eq!(m.handle(Timestamp(at.0 - 1), Input::Tick), vec![Effect::WakeAt(*at)], "early tick keeps the wake-up");
    let fx = m.handle(*at, Input::Tick);
    assert_eq!(sends(&fx), vec![(2, None)], "retries with the old applied digest");
    assert_eq!(m.applied(), None);
}

#[test]
fn never_reapplies_the_applied_digest() {
    let desired = cfg(9);
    let mut m = AgentSync::new(Some(desired.digest()), Backoff::default(), 1);
    m.handle(Timestamp(0), Input::Connected);
    let reply = SyncReply::NeedsUpdate { config: desired.clone(), digest: desired.digest() };
    let fx = m.handle(Timestamp(0), Input::SyncReplied { seq: 1, result: Ok(reply) });
    assert!(fx.iter().all(|e| !matches!(e, Effect::Apply { .. })));
    assert!(m.is_idle());
}

#[test]
fn refuses_config_whose_digest_does_not_match() {
    let mut m = machine();
    m.handle(Timestamp(0), Input::Connected);
    let reply = SyncReply::NeedsUpdate { config: cfg(1), digest: cfg(2).digest() };
    let fx = m.handle(Timestamp(0), Input::SyncReplied { seq: 1, result: Ok(reply) });
    assert!(fx.iter().all(|e| !matches!(e, Effect::Apply { .. })));
    assert!(fx.iter().any(|e| matches!(e, Effect::WakeAt(_))));
}

#[test]
fn apply_finishing_while_disconnected_syncs_on_reconnect() {
    let mut m = machine();
    m.handle(Timestamp(0), Input::Connected);
    let desired = cfg(5);
    m.handle(Timestamp(0), Input::SyncReplied { seq: 1, result: Ok(sync_decision(None, &desired)) });
    m.handle(Timestamp(0), Input::Disconnected);
    let fx = m.handle(Timestamp(0), Input::Applied { result: Ok(NodeStatus::default()) });
    assert!(sends(&fx).is_empty());
    assert_eq!(m.applied(), Some(&desired.digest()));
    let fx = m.handle(Timestamp(0), Input::Connected);
    assert_eq!(sends(&fx), vec![(2, Some(desired.digest()))]);
}

#[test]
fn an_offer_saves_the_sync_that_would_ask_for_it() {
    let mut m = machine();
    let t = Timestamp(0);
    m.handle(t, Input::Connected);
    m.handle(t, Input::SyncReplied { seq: 1, result: Ok(SyncReply::UpToDate) });
    assert!(m.is_idle());

    // a change offered with the notification: applied at once, then one report Sync
    let desired = cfg(12);
    let fx = m.handle(t, Input::Offered { config: desired.clone(), digest: desired.digest() });
    assert!(sends(&fx).is_empty(), "no Sync asks for what was offered");
    assert!(matches!(&fx[0], Effect::Apply { config, digest } if *config == desired && *digest == desired.digest()));
    let fx = m.handle(t, Input::Applied { result: Ok(NodeStatus::default()) });
    assert_eq!(sends(&fx), vec![(2, Some(desired.digest()))], "reports the applied digest");
    m.handle(t, Input::SyncReplied { seq: 2, result: Ok(SyncReply::UpToDate) });
    assert!(m.is_idle());
    assert_eq!(m.applied(), Some(&desired.digest()));

    // the same offer again (the digest already applied) is a plain SyncNow: no second apply
    let fx = m.handle(t, Input::Offered { config: desired.clone(), digest: desired.digest() });
    assert_eq!(sends(&fx), vec![(3, Some(desired.digest()))]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Apply { .. })));
}

#[test]
fn an_offer_while_busy_or_not_matching_its_digest_is_a_sync_now() {
    let mut m = machine();
    let t = Timestamp(0);
    m.handle(t, Input::Connected);
    // a Sync in flight: the offer is remembered as one more Sync, not applied beside it
    let desired = cfg(13);
    let fx = m.handle(t, Input::Offered { config: desired.clone(), digest: desired.digest() });
    assert!(fx.is_empty(), "{fx:?}");
    let fx = m.handle(t, Input::SyncReplied { seq: 1, result: Ok(SyncReply::UpToDate) });
    assert_eq!(sends(&fx).len(), 1, "the coalesced SyncNow");
    m.handle(t, Input::SyncReplied { seq: 2, result: Ok(SyncReply::UpToDate) });

    // a digest that does not describe the config: never applied, the gateway is asked instead
    let fx = m.handle(t, Input::Offered { config: desired, digest: cfg(14).digest() });
    assert_eq!(sends(&fx).len(), 1);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Apply { .. })));

    // disconnected: nothing is applied; the reconnect syncs
    let mut m = machine();
    let d = cfg(15);
    let fx = m.handle(t, Input::Offered { config: d.clone(), digest: d.digest() });
    assert!(fx.is_empty());
}
